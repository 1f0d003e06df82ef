#!/usr/bin/env bash
# Runs joulecap's built-in example: sets up a virtual environment with joulecap and PyTorch, then measures a
# small PyTorch training run (per-epoch windows and the asynchronous sampler) and writes the CSV files.
# On a machine with an NVIDIA GPU it measures the GPU; without one it says so and measures the CPU.
# The package is installed again only when its sources changed since the last install (a hash of them is kept
# in the virtual environment).  At the end it says how to run the `joulecap` command-line tool it installed.
# Usage: bash scripts/example.sh [--out DIR]
set -euo pipefail
here=$PWD
cd "$(dirname "$0")/.."
venv=${JOULECAP_VENV:-.venv}
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip >/dev/null
fi
"$venv/bin/python" -c 'import torch' 2>/dev/null || "$venv/bin/python" -m pip install -q torch==2.13.0

# What the package is built from: the files git tracks or would track (not ignored), by content, without the
# parts that do not go into it (tests but their scenarios, benchmarks, scripts).  Empty outside a git checkout.
sources_hash() {
    git rev-parse --is-inside-work-tree >/dev/null 2>&1 || return 0
    { git ls-files -z --cached --others --exclude-standard -- . ':!tests' ':!bench' ':!scripts'
      git ls-files -z --cached --others --exclude-standard -- tests/scenarios; } |
        sort -z -u | { xargs -0 sha256sum 2>/dev/null || true; } | sha256sum | cut -d' ' -f1
}
stamp="$venv/.joulecap-sources.sha256"
hash=$(sources_hash)
if [ -n "$hash" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$hash" ] &&
    "$venv/bin/python" -c 'import joulecap._joulecap' 2>/dev/null; then
    echo "joulecap in $venv is up to date with the sources: not reinstalling it (remove $stamp to force it)"
else
    if [ -n "$hash" ]; then
        echo "Installing joulecap into $venv (sources changed since the last install, or none yet; ~15 s) ..."
    else
        echo "Installing joulecap into $venv (not a git checkout: cannot tell whether the sources changed) ..."
    fi
    rm -f "$stamp"
    "$venv/bin/python" -m pip install -q .
    if [ -n "$hash" ]; then echo "$hash" >"$stamp"; fi
fi

status=0
"$venv/bin/python" -m joulecap.example "$@" || status=$?

# The command-line tool is the package's console script, in the virtual environment (not on PATH).
bin="$venv/bin"
case "$venv" in /*) ;; *) [ "$here" = "$PWD" ] || bin="$PWD/$venv/bin" ;; esac
cat <<EOF

The joulecap command-line tool is installed in $bin (not on PATH; 'source $bin/activate' puts it there):
  $bin/joulecap info                          # what can be measured here, and why not
  $bin/joulecap run -- python train.py        # energy of a whole command
  $bin/joulecap --fake h100 run -- sleep 1    # the same on a fake H100 (300 W): no GPU needed
  $bin/joulecap help                          # the reference docs (joulecap help cli, ...)
EOF
exit "$status"

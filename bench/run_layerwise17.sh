#!/usr/bin/env bash
# Issue 17's layer-wise benchmark (bench/bench_layerwise17.py) on the GPU machine: installs joulecap from this tree
# into one folder put first on PYTHONPATH (pip install --no-build-isolation --no-deps: the machine's
# scikit-build-core and CMake, build folder in /tmp; nothing else on the machine is changed), then runs the
# benchmark; the JSON lines, the table and the log go to $OUT (else bench/results).  Read-only NVML.
# About 8 minutes on an H100/H200 (the benchmark's --budget, 440 s, plus the build).
#
# Usage: bash bench/run_layerwise17.sh [bench_layerwise17.py arguments]
#        bash bench/run_layerwise17.sh --fake      # here, on the CPU against the fake NVML (tiny sizes)
#   PYTHON=python3 (default), JCB_SITE=/tmp/jcb-site17 (the install folder)
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
site=${JCB_SITE:-/tmp/jcb-site17}
out=${OUT:-bench/results}
mkdir -p "$out" "$site"
t0=$(date +%s)
if [[ " $* " == *" --fake "* ]]; then
  export JOULECAP_FAKE=${JOULECAP_FAKE:-h100}   # one fake H100 at 300 W, private state
fi
if [[ -z "${JCB_NO_INSTALL:-}" ]]; then
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
    --no-build-isolation --config-settings=build-dir=/tmp/jcb-build17 . >/dev/null
  export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH}
  echo "run_layerwise17.sh: joulecap installed into $site in $(($(date +%s) - t0)) s"
fi
export JCB_COMMAND="bash bench/run_layerwise17.sh${*:+ $*}"
JCB_GIT_COMMIT=$(git rev-parse --short HEAD 2>/dev/null || true)
export JCB_GIT_COMMIT
export PYTHONUNBUFFERED=1
suffix=""
[[ " $* " == *" --fake "* ]] && suffix="-fake"
"$py" bench/bench_layerwise17.py --out "$out" --budget "${JCB_BUDGET:-440}" "$@" 2>&1 | tee "$out/layerwise17${suffix}-log.txt"

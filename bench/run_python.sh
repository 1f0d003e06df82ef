#!/usr/bin/env bash
# Python benchmarks of issue 3 on the GPU machine (bench/bench_python.py).  Read-only NVML: never changes limits,
# clocks or modes.  Takes about 4 minutes on an H100 (the ResNet-50 part stops starting rounds at 200 s).
#
# It installs into one folder put first on PYTHONPATH (nothing else on the machine is changed):
#   * the wheels in .whl/ (Zeus, CodeCarbon and the few packages their imports need that the GPU machine lacks;
#     carried there, as the machine has no network);
#   * joulecap from this tree (pip install --no-build-isolation --no-deps: scikit-build-core and CMake of the
#     machine's Python, build folder in /tmp),
# then runs the benchmark; the JSON lines, the table and the log go to $OUT (else bench/results).
#
# Usage: bash bench/run_python.sh [bench_python.py arguments, e.g. --quick]
#   PYTHON=python3 (default), JCB_SITE=/tmp/jcb-site (the install folder), JCB_WHEELS=.whl
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
site=${JCB_SITE:-/tmp/jcb-site}
wheels=${JCB_WHEELS:-.whl}
out=${OUT:-bench/results}
mkdir -p "$out" "$site"
pipi() { "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$@"; }

t0=$(date +%s)
shopt -s nullglob
whls=("$wheels"/*.whl)
if ((${#whls[@]})); then
  # All at once; if that fails (a wheel for another Python, say), one by one, keeping those that install.
  pipi "${whls[@]}" 2>/dev/null || for w in "${whls[@]}"; do pipi "$w" || echo "run_python.sh: skipped $w" >&2; done
else
  echo "run_python.sh: no wheels in $wheels: Zeus and CodeCarbon will be left out unless already installed" >&2
fi
pipi --no-build-isolation --config-settings=build-dir=/tmp/jcb-build . >/dev/null
export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH}
echo "run_python.sh: installed into $site in $(($(date +%s) - t0)) s: $(ls "$site" | grep -v -e '-info$' -e '^bin$' -e '^__pycache__$' | tr '\n' ' ')"

export JCB_COMMAND="bash bench/run_python.sh${*:+ $*}"
JCB_GIT_COMMIT=$(git rev-parse --short HEAD 2>/dev/null || true)
export JCB_GIT_COMMIT
export PYTHONUNBUFFERED=1
set -o pipefail
"$py" bench/bench_python.py --out "$out" "$@" 2>&1 | tee "$out/python-log.txt"

#!/usr/bin/env bash
# Core benchmarks (issue 2) on the GPU machine.  Read-only NVML: never changes limits, clocks or modes.
# Usage: bash bench/run_core.sh [OUTDIR]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-bench/results}}
mkdir -p "$out"
cmake -S . -B build/bench -DJC_BUILD_BENCH=ON -DJC_BUILD_TESTS=OFF -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build/bench -j8 --target bench_core >/dev/null
b=build/bench/bench_core
{
  echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1)"
  $b overhead
  $b sampler 6
  for ci in 0 1; do
    sched=$(mktemp -u /tmp/jc-sched-XXXX)
    $b accuracy 120 "$sched" $ci &
    pid=$!
    sleep 1.5
    python3 bench/square_wave_load.py "$sched" --seconds 30
    wait $pid
  done
} | tee "$out/core.jsonl"

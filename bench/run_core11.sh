#!/usr/bin/env bash
# Core benchmark of issue 11 on the GPU machine: the code before it (8b83272) and the code under test, side by
# side on one card in one run.  Read-only NVML: never changes limits, clocks, persistence or modes.
#   1. sampler CPU (% of one core, process CPU time / wall) with default settings: no window (no CSV, and CSV
#      rows 1 s apart), a 100 ms window every 200 ms, and JC_EVERY_STEP;
#   2. window accuracy with real windows (jc_window_start / jc_window_stop while the square-wave load runs);
#   3. the calibration of uncertainty_j on the same windows (bench/analyze_core11.py);
#   4. the start-up cross-check of the counter against integrated instant power, idle and under load, and
#      `joulecap info --json` / `joulecap run --json -- sleep 2`.
# Usage: bash bench/prepare_core11.sh   (here: source of both codes into build/core11, carried)
#        bash build/core11/bench/run_core11.sh build/core11 "$OUT"   (on the GPU machine)
# On a machine without a GPU, JC_BENCH_FAKE=1 runs the same steps against the fake NVML (a test of the scripts;
# its figures mean nothing).  JC_BENCH_CPU_S and JC_BENCH_LOAD_S shorten the steps; JC_BENCH_STAGES picks them
# (default: xcheck cpu readcost accuracy xcheck-load; also cpu-idle, xcheck-square); JC_BENCH_SETTLE_S starts the CPU
# steps that many seconds after jc_open (default 3); JC_BENCH_REPEAT runs the accuracy step
# that many times per code (old, new, old, new, ...); JC_BENCH_LOAD_OPTS are square_wave_load.py's options for it:
# the default 250 ms on / 270 ms off drifts against the counter's 100 ms steps, so that the windows' accuracy is
# averaged over every phase of the load against the steps (250 / 250 keeps one phase for the whole run: the MAE of
# short windows then depends on that run's phase).
set -uo pipefail
src=$(cd "${1:-build/core11}" && pwd)
out=${2:-${OUT:-bench/results/core11}}
CPU_S=${JC_BENCH_CPU_S:-20}
LOAD_S=${JC_BENCH_LOAD_S:-40}
STAGES=" ${JC_BENCH_STAGES:-xcheck cpu readcost accuracy xcheck-load} "
REPEAT=${JC_BENCH_REPEAT:-1}
LOAD_OPTS=${JC_BENCH_LOAD_OPTS:---on 0.25 --off 0.27}
has() { [[ $STAGES == *" $1 "* ]]; }
b=$src/bench
data=$out/data
tmp=$(mktemp -d /tmp/jc-core11-XXXX)
mkdir -p "$data"
exec > >(tee -a "$out/log.txt") 2>&1
jsonl=$out/core11.jsonl
: >"$jsonl"
T0=$(date +%s)
stage() { echo "== $(($(date +%s) - T0)) s: $*"; }

stage "versions: $(cat "$src/VERSIONS")"
if [ -n "${JC_BENCH_FAKE:-}" ]; then
  card="fake NVML ($b/h100-square-wave.scn)"
else
  card=$(nvidia-smi --query-gpu=name,driver_version,power.limit,pstate,temperature.gpu,power.draw,persistence_mode \
    --format=csv,noheader | head -1)
  nvidia-smi -L
fi
echo "card: $card"
echo "{\"bench\":\"card\",\"card\":\"$card\",\"date\":\"$(date -u +%Y-%m-%dT%H:%MZ)\",\"cpus\":$(nproc)}" >>"$jsonl"

stage "build"
for t in old new; do
  flags=-O3
  [ $t = old ] && flags="-O3 -DJC_OLD_CORE"
  cmake -S "$src/$t" -B "$src/$t/build" -DJC_BUILD_BENCH=ON -DJC_BUILD_TESTS=OFF -DJC_BUILD_DAEMON=OFF -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_C_FLAGS="$flags" >"$tmp/cmake-$t.log" 2>&1 &&
    cmake --build "$src/$t/build" -j"$(nproc)" >>"$tmp/cmake-$t.log" 2>&1 ||
    { tail -30 "$tmp/cmake-$t.log"; echo "build of $t failed"; exit 1; }
done
declare -A bin=([old]=$src/old/build/bench_core [new]=$src/new/build/bench_core)
cli=$src/new/build/joulecap

if [ -n "${JC_BENCH_FAKE:-}" ]; then
  export JOULECAP_NVML_LIBRARY=$src/new/build/libjoulecap-fakenvml.so
  export JOULECAP_FAKE_NVML_SCENARIO=$b/h100-square-wave.scn
  export JOULECAP_FAKE_NVML_STATE=$tmp/fake-state
fi

# load SECONDS SCHEDULE READY [square_wave_load.py options]
load() {
  if [ -n "${JC_BENCH_FAKE:-}" ]; then
    timeout $(($1 + 120)) python3 "$b/fake_square_schedule.py" "$2" --ready "$3" --seconds "$1"
  else
    timeout $(($1 + 120)) python3 "$b/square_wave_load.py" "$2" --ready "$3" --seconds "$1" "${@:4}"
  fi
}
tagged() { sed -u "s/^{/{\"code\":\"$1\",\"phase\":\"$2\",/" | tee -a "$jsonl"; }
wait_file() { for _ in $(seq 600); do [ -e "$1" ] && return 0; sleep 0.05; done; return 1; }

if has xcheck; then
  stage "start-up cross-check, GPU idle"
  timeout 60 "${bin[new]}" xcheck 3 | tagged new idle
  timeout 30 "$cli" info --json >"$data/info-idle.json" 2>&1
  timeout 30 "$cli" run --json -q -- sleep 2 >"$data/run-idle.json" 2>&1
  echo "info: $(grep -o '"state":"[a-z]*"[^}]*' "$data/info-idle.json" | head -2)"
fi

if has cpu; then
  stage "sampler CPU, ${CPU_S} s each after ${JC_BENCH_SETTLE_S:-3} s"
  for m in idle short csv1 every; do
    for t in old new; do
      [ $t = old ] && [ $m != idle ] && [ $m != short ] && continue
      timeout $((CPU_S + 60)) "${bin[$t]}" cpu $m "$CPU_S" | tagged $t cpu
    done
  done
fi

if has cpu-idle; then
  stage "sampler CPU, no window, ${CPU_S} s each after ${JC_BENCH_SETTLE_S:-3} s"
  for t in old new; do timeout $((CPU_S + 60)) "${bin[$t]}" cpu idle "$CPU_S" | tagged $t cpu; done
fi

if has readcost; then
  stage "cost of a counter read"
  timeout 90 "${bin[new]}" readcost 10 | tagged new readcost
fi

if has accuracy; then
  stage "window accuracy, real windows, ${LOAD_S} s square wave ($LOAD_OPTS) each, $REPEAT x"
  for r in $(seq "$REPEAT"); do
    for c in old new; do
      t=$c
      [ "$REPEAT" -gt 1 ] && t=$c$r
      timeout $((LOAD_S + 150)) "${bin[$c]}" windows $((LOAD_S + 90)) "$tmp/ready.$t" "$tmp/sched.$t" "$data/$t" |
        tagged $t windows &
      p=$!
      sleep 1
      load "$LOAD_S" "$tmp/sched.$t" "$tmp/ready.$t" $LOAD_OPTS || echo "load for $t failed"
      wait $p
      cp "$tmp/sched.$t" "$data/$t.sched" 2>/dev/null
    done
  done
fi

shapes=""
has xcheck-load && shapes="constant square"
has xcheck-square && shapes="square"
[ -n "$shapes" ] && stage "start-up cross-check under load ($shapes)"
for shape in $shapes; do
  opts=""
  [ $shape = constant ] && opts="--on 1.0 --off 0"
  rm -f "$tmp/ready.x" "$tmp/sched.x"
  (load "${JC_BENCH_XLOAD_S:-14}" "$tmp/sched.x" "$tmp/ready.x" $opts) &
  lp=$!
  wait_file "$tmp/ready.x" && sleep 1.5
  timeout 60 "${bin[new]}" xcheck ${JC_BENCH_XCHECK_REPS:-3} | tagged new "load-$shape"
  if [ $shape = constant ]; then
    timeout 30 "$cli" info --json >"$data/info-load.json" 2>&1
    timeout 30 "$cli" run --json -q -- sleep 2 >"$data/run-load.json" 2>&1
  fi
  wait $lp
done

stage "analysis"
python3 "$b/analyze_core11.py" "$data" --json "$out/summary.json" --bench "$jsonl" >"$out/table.md"
tar -czf "$out/data.tgz" -C "$out" data && rm -rf "$data"
rm -rf "$tmp"
stage "done"
cat "$out/table.md"

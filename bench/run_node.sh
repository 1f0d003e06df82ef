#!/usr/bin/env bash
# One sampler per node (issue 14 part 2) on the GPU machine: the CPU that N processes measuring GPU 0 cost, each
# with a 100 ms window every 200 ms, with their GPU read in each process (JOULECAP_DAEMON=off) and through one
# joulecapd (a private daemon on a socket in a temporary folder; it only reads, never changes a limit).  Total
# CPU = the sum of the processes' CPU time (getrusage, every thread) + the daemon's (/proc/PID/stat), over the
# same SECONDS, as % of one core.  Then the data path alone (bench_node ipc): a SERIES round trip on the socket
# against reading a shared-memory ring.  Read-only NVML: never changes limits, clocks, persistence or modes.
# Usage: bash bench/prepare_node.sh                             (here: the source into build/node, carried)
#        bash build/node/bench/run_node.sh build/node "$OUT"     (on the GPU machine; ~3 minutes)
# JC_BENCH_FAKE=1 runs it on the fake NVML (a test of the script; its CPU figures mean nothing: the fake's
# counter reads sleep instead of spinning).  JC_BENCH_SECONDS (default 20), JC_BENCH_SETTLE_S (default 5: windows
# every 200 ms keep every reader on every counter step from the start), JC_BENCH_NPROCS (default "1 8"),
# JC_BENCH_IPC_N (default 20000).
set -uo pipefail
src=$(cd "${1:-build/node}" && pwd)
out=${2:-${OUT:-bench/results/node}}
SECONDS_RUN=${JC_BENCH_SECONDS:-20}
SETTLE=${JC_BENCH_SETTLE_S:-5}
NPROCS=${JC_BENCH_NPROCS:-1 8}
IPC_N=${JC_BENCH_IPC_N:-20000}
mkdir -p "$out"
out=$(cd "$out" && pwd)
tmp=$(mktemp -d /tmp/jc-node-XXXX)
exec > >(tee -a "$out/log.txt") 2>&1
jsonl=$out/node.jsonl
: >"$jsonl"
T0=$(date +%s)
stage() { echo "== $(($(date +%s) - T0)) s: $*"; }
dpid=
cleanup() { [ -n "$dpid" ] && kill "$dpid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT

stage "versions: $(cat "$src/VERSIONS")"
if [ -n "${JC_BENCH_FAKE:-}" ]; then
  card="fake NVML (h100-constant-300w.scn)"
else
  card=$(nvidia-smi --query-gpu=name,driver_version,power.limit,pstate,temperature.gpu,power.draw \
    --format=csv,noheader | head -1)
fi
echo "card: $card; $(nproc) CPUs"
echo "{\"bench\":\"card\",\"card\":\"$card\",\"date\":\"$(date -u +%Y-%m-%dT%H:%MZ)\",\"cpus\":$(nproc),\"versions\":\"$(cat "$src/VERSIONS")\"}" >>"$jsonl"

stage "build"
b=$src/src/build
cmake -S "$src/src" -B "$b" -DJC_BUILD_BENCH=ON -DJC_BUILD_TESTS=OFF -DJC_MICROHTTPD=OFF -DCMAKE_BUILD_TYPE=Release \
  >"$tmp/cmake.log" 2>&1 && cmake --build "$b" -j"$(nproc)" >>"$tmp/cmake.log" 2>&1 ||
  { tail -30 "$tmp/cmake.log"; echo "build failed"; exit 1; }
bench=$b/bench_node
if [ -n "${JC_BENCH_FAKE:-}" ]; then
  export JOULECAP_NVML_LIBRARY=$b/libjoulecap-fakenvml.so
  export JOULECAP_FAKE_NVML_SCENARIO=$src/bench/h100-constant-300w.scn
  export JOULECAP_FAKE_NVML_STATE=$tmp/fake-state
fi
unset CUDA_VISIBLE_DEVICES JOULECAP_FAKE
sock=$tmp/run/joulecapd.sock
export JOULECAP_DAEMON_SOCKET=$sock

cpu_of() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
tck=$(getconf CLK_TCK)

# run MODE N: N clients at once; with MODE daemon, the daemon's CPU over the clients' measured stretch too.
run() {
  local mode=$1 n=$2 pids=() f=$tmp/$1-$2.jsonl
  : >"$f"
  if [ "$mode" = daemon ]; then export JOULECAP_DAEMON=$sock; else export JOULECAP_DAEMON=off; fi
  for _ in $(seq "$n"); do "$bench" client "$SECONDS_RUN" "$SETTLE" >>"$f" & pids+=($!); done
  local d0=0 d1=0
  if [ "$mode" = daemon ]; then
    sleep "$SETTLE"
    d0=$(cpu_of "$dpid")
    sleep "$SECONDS_RUN"
    d1=$(cpu_of "$dpid")
  fi
  for p in "${pids[@]}"; do wait "$p"; done
  python3 - "$f" "$mode" "$n" "$(( d1 - d0 ))" "$tck" "$SECONDS_RUN" <<'PY' | tee -a "$jsonl"
import json, sys
f, mode, n, dticks, tck, secs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
rows = [json.loads(l) for l in open(f) if l.startswith("{")]
clients = sum(r["cpu_pct_of_one_core"] for r in rows)
daemon = 100.0 * dticks / tck / secs
print(json.dumps({"bench": "node", "mode": mode, "procs": n, "clients_ok": len(rows),
                  "routes": sorted({r["route"] for r in rows}),
                  "clients_cpu_pct": round(clients, 3), "daemon_cpu_pct": round(daemon, 3),
                  "total_cpu_pct": round(clients + daemon, 3),
                  "per_process_cpu_pct": round(clients / max(len(rows), 1), 3),
                  "results": sum(r["results"] for r in rows), "cut": sum(r["cut"] for r in rows),
                  "min_coverage": min((r["min_coverage"] for r in rows), default=None),
                  "mean_window_j": round(sum(r["mean_window_j"] for r in rows) / max(len(rows), 1), 3),
                  "mean_uncertainty_j": round(sum(r["mean_uncertainty_j"] for r in rows) / max(len(rows), 1), 3),
                  "health": sorted({r["health"] for r in rows})}))
PY
}

for n in $NPROCS; do
  stage "$n process(es), each reading the GPU itself (JOULECAP_DAEMON=off)"
  run in-process "$n"
done

stage "joulecapd on $sock"
mkdir -p "$tmp/state"
env JOULECAP_DAEMON=off "$b/joulecapd" --foreground --socket "$sock" --state-dir "$tmp/state" \
  --config "$tmp/none.conf" >"$out/joulecapd.log" 2>&1 &
dpid=$!
for _ in $(seq 200); do [ -S "$sock" ] && break; sleep 0.05; done
[ -S "$sock" ] || { cat "$out/joulecapd.log"; echo "joulecapd did not start"; exit 1; }
# Its sampler opens at the first client: warm it (fit of the counter's step clock) before anything is measured.
JOULECAP_DAEMON=$sock timeout 60 "$bench" client 2 "$SETTLE" >/dev/null
stage "joulecapd alone, no client, 10 s"
c0=$(cpu_of "$dpid"); sleep 10; c1=$(cpu_of "$dpid")
python3 -c "import json; print(json.dumps({'bench':'node','mode':'daemon-idle','procs':0,'daemon_cpu_pct':round(100.0*($c1-$c0)/$tck/10,3)}))" | tee -a "$jsonl"
for n in $NPROCS; do
  stage "$n process(es) through joulecapd"
  run daemon "$n"
done

stage "data path alone: $IPC_N SERIES round trips, then a shared-memory ring"
uuid=$(JOULECAP_DAEMON=off "$b/joulecap" info --json 2>/dev/null | python3 -c \
  "import json,sys; d=json.load(sys.stdin); print([x for x in d['devices'] if x.get('kind')=='gpu'][0]['uuid'])")
"$bench" ipc "$sock" "$dpid" "$uuid" "$IPC_N" | tee -a "$jsonl"

kill "$dpid"; wait "$dpid" 2>/dev/null; dpid=

stage "done"
python3 - "$jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
card = next(r for r in rows if r["bench"] == "card")
print(f"\ncard: {card['card']}; {card['cpus']} CPUs; {card['date']}; {card['versions']}")
print("\nCPU, % of one core, over the measured stretch (100 ms window every 200 ms per process):")
print(f"{'GPU read':<12} {'procs':>5} {'clients':>9} {'daemon':>8} {'total':>8} {'per proc':>9} {'windows':>8} {'cut':>4} {'mean J':>8} {'+-J':>6}")
for r in rows:
    if r["bench"] != "node":
        continue
    if r["mode"] == "daemon-idle":
        print(f"{'daemon idle':<12} {0:>5} {'-':>9} {r['daemon_cpu_pct']:>8.2f} {r['daemon_cpu_pct']:>8.2f}")
        continue
    print(f"{r['mode']:<12} {r['procs']:>5} {r['clients_cpu_pct']:>9.2f} {r['daemon_cpu_pct']:>8.2f} {r['total_cpu_pct']:>8.2f} "
          f"{r['per_process_cpu_pct']:>9.2f} {r['results']:>8} {r['cut']:>4} {r['mean_window_j']:>8.2f} {r['mean_uncertainty_j']:>6.2f}")
print("\ndata path, per request:")
for r in rows:
    if r["bench"] == "ipc":
        print(f"  {r['path']:<14} wall {r['wall_us_per_request']:8.2f} us  client CPU {r['client_cpu_us_per_request']:8.3f} us  "
              f"daemon CPU {r['daemon_cpu_us_per_request']:6.2f} us  -> {r['cpu_pct_of_one_core_at_20_per_s']:.4f}% of a core at 20/s")
PY

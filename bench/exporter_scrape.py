"""Cost of joulecapd --metrics scrapes (issue 14): latency of one scrape, and the daemon's CPU with no scrapes, at
1 Hz and at 100 Hz.

    python3 bench/exporter_scrape.py [--daemon build/joulecapd] [--fake] [--json OUT.json]

Starts its own joulecapd (a private socket, state directory and loopback port; it reads NVML and changes nothing),
waits past its 30 s warm-up (counter read at every step, then about once a second), then:
  - latency: --scrapes back-to-back GET /metrics on one keep-alive connection (and on a new connection each),
    client-side wall time per scrape, p50 / p90 / max, and the response size;
  - CPU: for each rate in --rates (scrapes per second, 0 = none) the daemon's CPU time (utime + stime of every
    thread, /proc/PID/task/*/stat) over --seconds, as % of one core, with the HTTP thread's share apart; the
    marginal CPU per scrape is (CPU at the highest rate - CPU at 0) / rate.
--fake runs on the fake NVML (build/libjoulecap-fakenvml.so, tests/scenarios/h100-constant-300w.scn): for the
script itself; numbers for BENCHMARKS.md come from the GPU machine (no --fake).  Standard library only.
"""

import argparse
import datetime
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WARMUP_S = 30 + 10  # the daemon's warm-up window, then the library keeps every-step reads 10 s more


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_ticks(pid):
    """utime + stime per thread name (clock ticks), summed over /proc/PID/task/*."""
    out = {}
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                stat = f.read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        out[name] = out.get(name, 0) + int(fields[11]) + int(fields[12])
    return out


def start_daemon(args, tmp, port):
    env = dict(os.environ)
    if args.fake:
        env["JOULECAP_NVML_LIBRARY"] = args.fake_lib
        env["JOULECAP_FAKE_NVML_SCENARIO"] = os.path.join(REPO, "tests/scenarios/h100-constant-300w.scn")
        env["JOULECAP_FAKE_NVML_STATE"] = os.path.join(tmp, "fake.state")
    os.makedirs(os.path.join(tmp, "run"), mode=0o755)
    conf = os.path.join(tmp, "joulecapd.conf")
    open(conf, "w").close()
    log = open(os.path.join(tmp, "joulecapd.log"), "w")
    p = subprocess.Popen([args.daemon, "--foreground", "--socket", os.path.join(tmp, "run", "joulecapd.sock"),
                          "--state-dir", os.path.join(tmp, "state"), "--config", conf,
                          "--metrics", "127.0.0.1:%d" % port], stdout=log, stderr=log, env=env,
                         start_new_session=True)
    t0 = time.monotonic()
    while True:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/metrics")
            c.getresponse().read()
            c.close()
            return p
        except OSError:
            if p.poll() is not None or time.monotonic() - t0 > 20:
                sys.exit("joulecapd did not start:\n" + open(log.name).read())
            time.sleep(0.05)


def latency(port, n, keepalive):
    times, size = [], 0
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    for _ in range(n):
        if not keepalive:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        t0 = time.perf_counter()
        conn.request("GET", "/metrics")
        body = conn.getresponse().read()
        times.append(time.perf_counter() - t0)
        size = len(body)
        if not keepalive:
            conn.close()
    conn.close()
    times.sort()
    return {"p50_us": 1e6 * times[len(times) // 2], "p90_us": 1e6 * times[int(len(times) * 0.9)],
            "max_us": 1e6 * times[-1], "mean_us": 1e6 * statistics.fmean(times), "bytes": size, "n": n}


def cpu_at(pid, port, rate, seconds):
    hz = os.sysconf("SC_CLK_TCK")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    before, t0 = cpu_ticks(pid), time.monotonic()
    k = 0
    while time.monotonic() - t0 < seconds:
        if rate > 0:
            due = t0 + k / rate
            d = due - time.monotonic()
            if d > 0:
                time.sleep(d)
            conn.request("GET", "/metrics")
            conn.getresponse().read()
            k += 1
        else:
            time.sleep(min(0.5, seconds - (time.monotonic() - t0)) if seconds > time.monotonic() - t0 else 0)
    wall = time.monotonic() - t0
    after = cpu_ticks(pid)
    conn.close()
    per = {name: (after.get(name, 0) - before.get(name, 0)) / hz for name in after}
    total = sum(per.values())
    return {"rate_hz": rate, "scrapes": k, "seconds": wall, "cpu_pct": 100 * total / wall,
            "threads_pct": {n: round(100 * v / wall, 3) for n, v in sorted(per.items()) if v > 0}}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--daemon", default=None, help="joulecapd to run (default build/joulecapd, else on PATH)")
    ap.add_argument("--fake", action="store_true", help="the fake NVML (300 W H100) instead of the driver")
    ap.add_argument("--fake-lib", default=os.path.join(REPO, "build", "libjoulecap-fakenvml.so"))
    ap.add_argument("--scrapes", type=int, default=2000, help="scrapes for the latency (default 2000)")
    ap.add_argument("--rates", default="0,1,100", help="scrape rates for the CPU, Hz (default 0,1,100)")
    ap.add_argument("--seconds", type=float, default=30, help="per rate (default 30)")
    ap.add_argument("--settle", type=float, default=WARMUP_S, help="wait after the start (default %d s)" % WARMUP_S)
    ap.add_argument("--json", help="write the results here too")
    args = ap.parse_args()
    if args.daemon is None:
        cand = os.path.join(REPO, "build", "joulecapd")
        args.daemon = cand if os.path.exists(cand) else shutil.which("joulecapd")
    if not args.daemon:
        sys.exit("no joulecapd: build it (cmake --build build) or pass --daemon")
    out = subprocess.run([args.daemon, "--version"], capture_output=True, text=True).stdout.strip()
    if "libmicrohttpd missing" in out:
        sys.exit(out + ": rebuild with libmicrohttpd-dev installed")
    tmp = tempfile.mkdtemp(prefix="joulecap-bench-exporter-")
    port = free_port()
    p = start_daemon(args, tmp, port)
    try:
        print("joulecapd pid %d on 127.0.0.1:%d (%s); settling %.0f s (warm-up)" % (p.pid, port, out, args.settle),
              flush=True)
        time.sleep(args.settle)
        body = http.client.HTTPConnection("127.0.0.1", port)
        body.request("GET", "/metrics")
        text = body.getresponse().read().decode()
        gpus = sorted(set(re.findall(r'joulecap_gpu_power_watts\{gpu="(\d+)",UUID="[^"]*",pci_bus_id="[^"]*",'
                                     r'modelName="([^"]*)"', text)))
        res = {
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "command": " ".join(sys.argv),
            "host": platform.node(),
            "kernel": platform.release(),
            "cpu_count": os.cpu_count(),
            "daemon": out,
            "fake": args.fake,
            "gpus": [{"gpu": g, "model": m} for g, m in gpus],
            "latency_keepalive": latency(port, args.scrapes, True),
            "latency_new_connection": latency(port, max(1, args.scrapes // 4), False),
            "cpu": [],
        }
        for lk in ("latency_keepalive", "latency_new_connection"):
            r = res[lk]
            print("%-24s p50 %7.1f us  p90 %7.1f us  max %8.1f us  (%d scrapes, %d bytes)"
                  % (lk, r["p50_us"], r["p90_us"], r["max_us"], r["n"], r["bytes"]), flush=True)
        for rate in [float(x) for x in args.rates.split(",")]:
            r = cpu_at(p.pid, port, rate, args.seconds)
            res["cpu"].append(r)
            print("scrapes at %5.0f Hz: joulecapd %.3f%% of one core over %.0f s  (threads: %s)"
                  % (rate, r["cpu_pct"], r["seconds"], r["threads_pct"]), flush=True)
        idle = [r for r in res["cpu"] if r["rate_hz"] == 0]
        top = max(res["cpu"], key=lambda r: r["rate_hz"])
        if idle and top["rate_hz"] > 0:
            res["cpu_per_scrape_us"] = 1e4 * (top["cpu_pct"] - idle[0]["cpu_pct"]) / top["rate_hz"]
            print("marginal CPU per scrape: %.1f us (from %g Hz vs none)" % (res["cpu_per_scrape_us"],
                                                                             top["rate_hz"]))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(res, f, indent=2)
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Square-wave GPU load for the window-accuracy benchmark: bf16 GEMMs for `on` seconds, idle for `off` seconds,
repeated for `seconds`.  Writes the real on-intervals (CLOCK_MONOTONIC ns, the clock joulecap uses) one per
line, "start end", to the schedule file: each on-phase ends with a synchronize, so its end is when the GPU
stopped, not when the host stopped launching.  With --ready, writes "t0_ns seconds" (the first on-phase, planned)
there about a second before it starts, for benchmarks that open real windows while the load runs."""
import argparse
import os
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("schedule")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--on", type=float, default=0.25)
    ap.add_argument("--off", type=float, default=0.25)
    ap.add_argument("--n", type=int, default=8192)
    ap.add_argument("--ready", help="write 't0_ns seconds' here before the first on-phase")
    a = ap.parse_args()
    x = torch.randn(a.n, a.n, device="cuda", dtype=torch.bfloat16)
    y = torch.randn(a.n, a.n, device="cuda", dtype=torch.bfloat16)
    # Time one GEMM so that each launch batch stays short (~5 ms) and phases end on time.
    torch.cuda.synchronize()
    t = time.monotonic()
    for _ in range(10):
        x @ y
    torch.cuda.synchronize()
    per = (time.monotonic() - t) / 10
    batch = max(1, int(0.005 / per))
    rows = []
    period = a.on + a.off
    t0 = time.monotonic_ns() + (1_000_000_000 if a.ready else 200_000_000)
    if a.ready:
        with open(a.ready + ".tmp", "w") as f:
            f.write(f"{t0} {a.seconds}\n")
        os.replace(a.ready + ".tmp", a.ready)
    k = 0
    while True:
        start = t0 + int(k * period * 1e9)
        end = start + int(a.on * 1e9)
        if (start - t0) / 1e9 >= a.seconds:
            break
        while time.monotonic_ns() < start:
            time.sleep(0.0005)
        s = time.monotonic_ns()
        while time.monotonic_ns() + per * batch * 1e9 < end:
            for _ in range(batch):
                x @ y
            torch.cuda.synchronize()
        torch.cuda.synchronize()
        rows.append((s, time.monotonic_ns()))
        k += 1
    with open(a.schedule + ".tmp", "w") as f:
        for s, e in rows:
            f.write(f"{s} {e}\n")
    os.replace(a.schedule + ".tmp", a.schedule)


if __name__ == "__main__":
    main()

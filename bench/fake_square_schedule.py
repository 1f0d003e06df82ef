"""Stand-in for square_wave_load.py on a machine without a GPU, to test bench/run_core11.sh end to end: the fake
NVML (tests/scenarios/h100-square-wave.scn: `load = square 500 0.5`) draws its square wave from its own start
time, which it keeps in the state file named by JOULECAP_FAKE_NVML_STATE.  This writes the same files as
square_wave_load.py --ready: "t0_ns seconds" about a second ahead, then the on-intervals once `seconds` have
passed."""
import argparse
import os
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("schedule")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--ready")
    ap.add_argument("--period-ms", type=float, default=500.0)
    ap.add_argument("--duty", type=float, default=0.5)
    a = ap.parse_args()
    state = os.environ["JOULECAP_FAKE_NVML_STATE"]
    start_ns = None
    for _ in range(500):
        try:
            with open(state) as f:
                for line in f:
                    if line.startswith("start_ns "):
                        start_ns = int(line.split()[1])
        except FileNotFoundError:
            pass
        if start_ns is not None:
            break
        time.sleep(0.01)
    if start_ns is None:
        raise SystemExit("no fake NVML state file at " + state)
    period = int(a.period_ms * 1e6)
    k = (time.monotonic_ns() + 1_000_000_000 - start_ns) // period + 1
    t0 = start_ns + k * period
    if a.ready:
        with open(a.ready + ".tmp", "w") as f:
            f.write(f"{t0} {a.seconds}\n")
        os.replace(a.ready + ".tmp", a.ready)
    n = int(a.seconds * 1e9 // period)
    end = t0 + n * period
    while time.monotonic_ns() < end:
        time.sleep(0.05)
    with open(a.schedule + ".tmp", "w") as f:
        for i in range(n):
            s = t0 + i * period
            f.write(f"{s} {s + int(period * a.duty)}\n")
    os.replace(a.schedule + ".tmp", a.schedule)


if __name__ == "__main__":
    main()

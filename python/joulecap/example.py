"""The built-in example: ``python -m joulecap.example [--out DIR]``.

Trains a small CNN on synthetic data (no downloads; about 20-30 s on two CPU cores) and measures it two ways at
once:

* ``EnergyMeasurementTool``: one window per epoch (``snippets.csv``);
* ``AsynchronousMeasurementTool``: a row every 0.1 s for the whole run (``async.csv``).

Then ``LayerwiseMeasurementTool`` measures the energy of each layer of the same model over a short training epoch
and a few batches of inference (``layers.csv``).

On a machine where PyTorch sees a CUDA GPU it trains there and measures that GPU and the CPU; otherwise it says
so and measures the CPU.  It ends with a short summary: time, CPU and GPU energy, and which values are
estimates and why.

The run is a list of parts (``PARTS``); each takes the shared :class:`Setup` and adds lines to the summary, so
more parts (a layer-wise run, the power-cap profiler) can be appended without touching the others.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

from . import AsynchronousMeasurementTool, EnergyMeasurementTool, read_csv  # noqa: F401  (read_csv: for users)
from ._common import J_PER_KWH



# --------------------------------------------------------------------------------------------------------------
# The workload


def _import_torch():
    import warnings

    # The CPU wheel of torch warns at import when numpy is absent; the example needs no numpy.
    warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
    try:
        import torch
    except ImportError:
        sys.stderr.write(
            "joulecap.example needs PyTorch, which is not installed.\n"
            "Install the CPU build with `pip install torch` (or `pip install 'joulecap[torch]'`) and run it again.\n"
        )
        raise SystemExit(2)
    return torch


def build_model(torch: Any):
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 7 * 7, 128),
        nn.ReLU(),
        nn.Linear(128, 10),
    )


def make_data(torch: Any, batches: int, batch_size: int, device: Any, seed: int = 0):
    """Synthetic 28x28 'digits': ten fixed random patterns plus noise, so the loss goes down."""
    g = torch.Generator().manual_seed(seed)
    patterns = torch.randn(10, 1, 28, 28, generator=g)
    data = []
    for _ in range(batches):
        y = torch.randint(0, 10, (batch_size,), generator=g)
        x = patterns[y] + 2.0 * torch.randn(batch_size, 1, 28, 28, generator=g)
        data.append((x.to(device), y.to(device)))
    return data


def train_epoch(torch: Any, model: Any, data: List[Any], optimizer: Any, loss_fn: Any) -> float:
    model.train()
    total = 0.0
    for x, y in data:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        total += float(loss.detach())
    return total / max(1, len(data))


def _synchronize(torch: Any, device: Any) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------------------------------------------
# Setup shared by the parts


@dataclass
class Setup:
    args: argparse.Namespace
    torch: Any
    device: Any
    gpu_num: Optional[int]  # CUDA number measured, None for the CPU only
    why_cpu: str = ""
    out_dir: str = ""
    summary: List[str] = field(default_factory=list)
    estimates: Dict[str, str] = field(default_factory=dict)  # "CPU" / "GPU 0" -> why
    files: List[str] = field(default_factory=list)

    def say(self, line: str = "") -> None:
        self.summary.append(line)
        if not self.args.quiet:
            print(line, flush=True)

    def note_estimates(self, estimates: Dict[str, str]) -> None:
        for label, why in estimates.items():
            key = "CPU" if label == "cpu" else "GPU %s" % label[3:]
            self.estimates.setdefault(key, why)


def _pick_device(torch: Any):
    if torch.cuda.is_available():
        idx = torch.cuda.current_device()
        return torch.device("cuda", idx), idx, ""
    why = "PyTorch sees no CUDA GPU (torch.cuda.is_available() is False"
    if getattr(torch.version, "cuda", None) is None:
        why += "; this is a CPU-only build of PyTorch"
    why += ")"
    return torch.device("cpu"), None, why


def _fmt_j(v: float) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return "%.1f" % v


# --------------------------------------------------------------------------------------------------------------
# Part 1: snippet windows per epoch and the asynchronous sampler, around the same training run


def part_training(s: Setup) -> None:
    torch, args = s.torch, s.args
    torch.manual_seed(0)
    model = build_model(torch).to(s.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    data = make_data(torch, args.batches, args.batch_size, s.device)

    snippets_csv = os.path.join(s.out_dir, "snippets.csv")
    async_csv = os.path.join(s.out_dir, "async.csv")
    snippet = EnergyMeasurementTool(out_file=snippets_csv, gpu_num=s.gpu_num)
    sampler = AsynchronousMeasurementTool(out_file=async_csv, gpu_num=s.gpu_num)

    s.say("Training a small CNN for %d epochs of %d batches of %d on %s" % (args.epochs, args.batches,
                                                                       args.batch_size, s.device))
    sampler.start(interval_s=args.interval)
    t0 = time.monotonic()
    results = []
    losses = []
    for epoch in range(args.epochs):
        snippet.start("epoch %d" % (epoch + 1))
        losses.append(train_epoch(torch, model, data, optimizer, loss_fn))
        _synchronize(torch, s.device)
        results.append(snippet.stop())
    wall = time.monotonic() - t0
    sampler.stop()
    snippet.close()  # every row is in snippets.csv now
    s.files += [snippets_csv, async_csv]

    gpu = s.gpu_num is not None and bool(snippet.gpus)
    s.say("")
    s.say("  %-8s %10s %8s %12s %12s" % ("window", "time (s)", "loss", "CPU (J)", "GPU (J)" if gpu else ""))
    for r, loss in zip(results, losses):
        s.say("  %-8s %10.3f %8.4f %12s %12s" % (r.name, r.elapsed_s, loss, _fmt_j(r.cpu_energy_j),
                                               _fmt_j(r.total_gpu_energy_j) if gpu else ""))
        s.note_estimates(r.estimates)
    tot_t = sum(r.elapsed_s for r in results)
    tot_cpu = sum(r.cpu_energy_j for r in results)
    tot_gpu = sum(r.total_gpu_energy_j for r in results)
    s.say("  %-8s %10.3f %8s %12s %12s" % ("total", tot_t, "", _fmt_j(tot_cpu), _fmt_j(tot_gpu) if gpu else ""))
    s.say("")
    kwh = "CPU %.3g kWh" % (tot_cpu / J_PER_KWH)
    if gpu:
        kwh += ", GPU %.3g kWh" % (tot_gpu / J_PER_KWH)
    s.say("Snippet tool: %d windows (one per epoch), %s -> %s" % (len(results), kwh, snippets_csv))

    rows = _read_rows(async_csv)
    line = "Asynchronous tool: %d rows, one every %g s over %.1f s -> %s" % (len(rows), args.interval, wall,
                                                                          async_csv)
    s.say(line)
    if rows:
        last = rows[-1]
        cpu_kwh = _float(last.get("cpu_energy_kwh"))
        parts = ["CPU %s J" % _fmt_j(cpu_kwh * J_PER_KWH)]
        for k, v in last.items():
            if k.startswith("gpu") and k.endswith("_energy_kwh"):
                parts.append("GPU %s %s J" % (k[3:-11], _fmt_j(_float(v) * J_PER_KWH)))
        s.say("  whole run (start() to stop()): " + ", ".join(parts))


def _float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _read_rows(path: str) -> List[Dict[str, str]]:
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# Parts run in order; later issues append theirs (layer-wise energy, the power-cap profiler).
PARTS: List[Callable[[Setup], None]] = [part_training]


# --------------------------------------------------------------------------------------------------------------
# Part: energy per layer of the same model (LayerwiseMeasurementTool), training then inference


def part_layerwise(s: Setup) -> None:
    from . import LayerwiseMeasurementTool

    torch, args = s.torch, s.args
    torch.manual_seed(0)
    model = build_model(torch).to(s.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    batches = min(args.batches, 100)
    data = make_data(torch, batches, args.batch_size, s.device, seed=1)
    test = data[: max(1, batches // 5)]
    layers_csv = os.path.join(s.out_dir, "layers.csv")
    tracker = LayerwiseMeasurementTool(layers_csv, gpu_num=s.gpu_num)

    s.say("")
    s.say("Layer-wise: %d training batches, then %d batches of inference (torch.no_grad), energy per layer"
          % (batches, len(test)))
    model = tracker.start(model)
    train_epoch(torch, model, data, optimizer, loss_fn)
    model.eval()
    with torch.no_grad():
        for x, _ in test:
            model(x)
    result = tracker.stop()
    s.files.append(layers_csv)
    s.say("")
    for line in result.summary(top=6, print_it=False).splitlines():
        s.say("  " + line)
    s.say("Layer-wise tool: %d rows (a row per layer and phase, plus the energy outside layers) -> %s"
          % (len(result.rows), layers_csv))
    s.note_estimates(result.estimates)


PARTS.append(part_layerwise)


# --------------------------------------------------------------------------------------------------------------
# Part: the power-cap profiler (joulecap.profile_power_cap)
#
# It changes a GPU's power limit, which needs root (or CAP_SYS_ADMIN) and, on a shared machine, the owner's
# consent: on a real GPU it runs only with --profile-caps.  Otherwise it shows the same profiler on something
# that is not a real GPU, and says so:
#   * no CUDA GPU: a child process points joulecap at its bundled fake NVML with a fake H100 whose power follows
#     its limit as DEMO_SWEEP says; each step waits the time DEMO_SWEEP gives at the limit in force.  The caps,
#     the cap session and its guardian, the energy readings and the profiler are joulecap's real code, in real
#     time; the GPU and the job are simulated.
#   * a GPU without --profile-caps, or without permission: the profiler's logic against the library's simulator
#     (DEMO_SWEEP on a virtual clock, no waiting).

# A synthetic H100-like power-limit sweep (not a measurement): time per step flat above a knee at 420 W, power
# still rising above it, so ED2P is lowest at 420 W.  The same numbers as tests/scenarios/h100-sweep.csv.
DEMO_SWEEP = {
    "power_limit_w": [200, 250, 300, 350, 400, 420, 450, 500, 550, 600, 650, 700],
    "time_per_step_s": [0.0840, 0.0640, 0.0530, 0.0462, 0.0426, 0.0416, 0.0412, 0.0409, 0.0407, 0.0405, 0.0404,
                        0.0403],
    "avg_power_w": [197, 245, 292, 338, 382, 398, 420, 452, 478, 498, 512, 520],
}

_DEMO_SCENARIO = """# Written by python -m joulecap.example: a fake H100 whose power follows its limit (sweep.csv).
[device]
name = NVIDIA H100 80GB HBM3 (fake)
min_limit_w = 200
max_limit_w = 700
default_limit_w = 700
idle_w = 70
sweep = sweep.csv
load = 1
energy_latency_ms = 3
energy_latency_jitter_ms = 3
"""


def _demo_time_per_step(cap: float) -> float:
    c, t = DEMO_SWEEP["power_limit_w"], DEMO_SWEEP["time_per_step_s"]
    if cap <= c[0]:
        return t[0]
    for i in range(1, len(c)):
        if cap <= c[i]:
            return t[i - 1] + (t[i] - t[i - 1]) * (cap - c[i - 1]) / (c[i] - c[i - 1])
    return t[-1]


def _say_profile(s: Setup, r: Any, csv_path: Optional[str]) -> None:
    s.say("  %-8s %6s %9s %9s %12s" % ("cap (W)", "steps", "step (ms)", "power (W)", "objective"))
    for t in r.trials:
        s.say("  %-8g %6d %9.1f %9.0f %12.4g" % (t["cap_w"], t["steps"], 1e3 * t["time_per_step_s"],
                                                t["avg_power_w"], t["objective"]))
    s.say("  recommended: %g W. %s" % (r.cap_w, r.reason))
    if csv_path:
        s.say("  trials and recommendation -> %s" % csv_path)


def _simulated_profile(s: Setup, budget: float) -> None:
    from . import _joulecap
    from .profiler import ProfileResult

    sweep = _joulecap.Sweep(DEMO_SWEEP["power_limit_w"], DEMO_SWEEP["time_per_step_s"], DEMO_SWEEP["avg_power_w"])
    prof = _joulecap.Profiler(*sweep.limits, time_budget=budget)
    prof.run_simulated(sweep, step_s=DEMO_SWEEP["time_per_step_s"][-1], noise=0.02, seed=1)
    r = ProfileResult._of(prof.result(), prof.trials(), -1, sweep.limits[2])
    best, _ = sweep.best_cap("ed2p")
    s.say("  [simulator: a synthetic H100-like sweep on a virtual clock, %.0f simulated seconds; nothing ran on a "
          "GPU]" % r.profile_seconds)
    _say_profile(s, r, None)
    s.say("  the sweep's own ED2P optimum: %g W" % best)


def _fake_gpu_child(out_csv: str, budget: float) -> None:
    """Runs in the child process of part_power_caps, whose environment points joulecap at the fake NVML."""
    import warnings

    import torch

    from . import get_power_cap, profile_power_cap

    torch.set_num_threads(1)

    class FakeGpuStep(torch.nn.Module):
        """One step of the simulated job: it waits the time DEMO_SWEEP gives at the fake GPU's limit."""

        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(1, 1)

        def forward(self, x: Any) -> Any:
            end = time.monotonic() + _demo_time_per_step(get_power_cap(0).limit_w)
            while time.monotonic() < end:
                time.sleep(max(0.0, end - time.monotonic()))
            return self.lin(x)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The step stands in for a job on the fake GPU (it runs on the CPU): steps_on_gpu=True says so.
        r = profile_power_cap(FakeGpuStep(), [torch.zeros(1, 1)] * 4, 0, out_file=out_csv, time_budget_s=budget,
                              steps_on_gpu=True)
    lines = Setup(args=argparse.Namespace(quiet=True), torch=torch, device=None, gpu_num=None)
    _say_profile(lines, r, out_csv)
    lines.say("  the fake GPU's limit afterwards: %g W (as found)" % get_power_cap(0).limit_w)
    for line in lines.summary:
        print(line, flush=True)


def _fake_gpu_profile(s: Setup, budget: float) -> None:
    import subprocess

    from . import _paths

    lib = _paths.fake_nvml_library()
    if lib is None:
        s.say("  skipped: this install of joulecap has no fake NVML (joulecap/_fake/) to demonstrate it on")
        return
    d = os.path.join(s.out_dir, "power-caps")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "sweep.csv"), "w") as f:
        f.write("power_limit_w,time_per_step_s,avg_power_w\n")
        for row in zip(*(DEMO_SWEEP[k] for k in ("power_limit_w", "time_per_step_s", "avg_power_w"))):
            f.write("%g,%g,%g\n" % row)
    with open(os.path.join(d, "fake-h100.scn"), "w") as f:
        f.write(_DEMO_SCENARIO)
    state = os.path.join(d, "fake-nvml.state")
    if os.path.exists(state):
        os.unlink(state)  # a fresh fake GPU at its default limit
    env = dict(os.environ, JOULECAP_NVML_LIBRARY=lib, JOULECAP_FAKE_NVML_SCENARIO=os.path.join(d, "fake-h100.scn"),
               JOULECAP_FAKE_NVML_STATE=state, JOULECAP_STATE_DIR=os.path.join(d, "journals"))
    for k in ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "JOULECAP_CLI"):
        env.pop(k, None)  # the fake GPU is GPU 0; the guardian is the bundled joulecap
    out_csv = os.path.join(s.out_dir, "power_caps.csv")
    code = "import sys; from joulecap.example import _fake_gpu_child; _fake_gpu_child(sys.argv[1], float(sys.argv[2]))"
    s.say("  [fake GPU: joulecap's fake NVML with a synthetic H100-like sweep; each step waits the sweep's time at the "
          "fake GPU's limit. Caps, energy readings and profiler are joulecap's real code in real time, the GPU and "
          "the job are simulated]")
    p = subprocess.run([sys.executable, "-c", code, out_csv, str(budget)], env=env, capture_output=True, text=True,
                       timeout=budget + 120)
    for line in p.stdout.splitlines():
        s.say(line)
    if p.returncode != 0:
        s.say("  the fake-GPU run failed: %s" % (p.stderr.strip().splitlines() or ["exit %d" % p.returncode])[-1])
        return
    s.files.append(out_csv)


def part_power_caps(s: Setup) -> None:
    from .errors import JoulecapError, PermissionDenied

    torch, args = s.torch, s.args
    budget = 6.0 if args.quick else 20.0
    s.say("")
    if s.gpu_num is None:
        s.say("Power-cap profiler (ED2P, %g s): no CUDA GPU here, so it runs on a fake GPU." % budget)
        _fake_gpu_profile(s, budget)
        return
    if not args.profile_caps:
        s.say("Power-cap profiler: GPU %d's power limit is left alone (pass --profile-caps to profile it for about "
              "%g s; that needs root or CAP_SYS_ADMIN, and the limit is put back afterwards). On the simulator "
              "instead:" % (s.gpu_num, budget))
        _simulated_profile(s, budget)
        return
    from . import profile_power_cap

    torch.manual_seed(0)
    model = build_model(torch).to(s.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    data = make_data(torch, 20, args.batch_size, s.device, seed=2)
    out_csv = os.path.join(s.out_dir, "power_caps.csv")
    s.say("Power-cap profiler (ED2P, %g s) on GPU %d: training steps of the CNN at the caps it chooses"
          % (budget, s.gpu_num))
    try:
        r = profile_power_cap(model, data, s.gpu_num, train=True, loss_fn=torch.nn.CrossEntropyLoss(),
                              optimizer=optimizer, out_file=out_csv, time_budget_s=budget)
    except PermissionDenied as e:
        s.say("  not allowed to set GPU %d's power limit (%s). On the simulator instead:" % (s.gpu_num, e))
        _simulated_profile(s, budget)
        return
    except JoulecapError as e:
        s.say("  cannot profile GPU %d: %s. On the simulator instead:" % (s.gpu_num, e))
        _simulated_profile(s, budget)
        return
    _say_profile(s, r, out_csv)
    s.say("  GPU %d's limit is back to %g W" % (s.gpu_num, r.limit_before_w))
    s.files.append(out_csv)


PARTS.append(part_power_caps)


def part_pictures(s: Setup) -> None:
    """A picture next to each CSV (joulecap.plot): the time series with the epochs shaded, the layers, the
    power-cap profile."""
    s.say("")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        s.say("Pictures: skipped, matplotlib is not installed (pip install 'joulecap[plot]'); then `joulecap plot "
              "FILE.csv` draws any of the CSVs above.")
        return
    from .plots import plot

    d = s.out_dir
    jobs = []
    if os.path.exists(os.path.join(d, "async.csv")):
        snip = os.path.join(d, "snippets.csv")
        jobs.append(("time series, epochs shaded", [os.path.join(d, "async.csv")], os.path.join(d, "async.png"),
                     {"snippets": snip} if os.path.exists(snip) else {}))
    for name, what in (("layers", "energy per layer"), ("power_caps", "power-cap profile")):
        if os.path.exists(os.path.join(d, name + ".csv")):
            jobs.append((what, [os.path.join(d, name + ".csv")], os.path.join(d, name + ".png"), {}))
    s.say("Pictures (joulecap.plot; `joulecap plot FILE.csv` draws the same):")
    for what, files, out, kw in jobs:
        try:
            plot(*files, out=out, **kw)
        except (ValueError, OSError) as e:
            s.say("  %s: not drawn: %s" % (what, e))
            continue
        s.say("  %-28s -> %s" % (what, out))
        s.files.append(out)


PARTS.append(part_pictures)


# --------------------------------------------------------------------------------------------------------------


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m joulecap.example", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="joulecap-example", help="folder for the CSV files (default ./joulecap-example)")
    p.add_argument("--epochs", type=int, default=5, help="epochs (default 5)")
    p.add_argument("--batches", type=int, default=300, help="batches per epoch (default 300)")
    p.add_argument("--batch-size", type=int, default=64, help="batch size (default 64)")
    p.add_argument("--interval", type=float, default=0.1, help="asynchronous tool's interval, s (default 0.1)")
    p.add_argument("--quick", action="store_true", help="a few seconds' run (1 epoch of 5 batches), for tests")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.add_argument("--profile-caps", action="store_true",
                   help="on a GPU, run the power-cap profiler on it (changes its power limit for about 20 s, then "
                        "puts it back; needs root or CAP_SYS_ADMIN). Without it: the simulator (a fake GPU when "
                        "there is no GPU)")
    args = p.parse_args(argv)
    if args.quick:
        args.epochs, args.batches = 1, 5
    if args.epochs < 1 or args.batches < 1 or args.batch_size < 1:
        p.error("--epochs, --batches and --batch-size must be >= 1")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    torch = _import_torch()
    device, gpu_num, why_cpu = _pick_device(torch)
    out_dir = os.path.abspath(args.out)
    os.makedirs(out_dir, exist_ok=True)
    s = Setup(args=args, torch=torch, device=device, gpu_num=gpu_num, why_cpu=why_cpu, out_dir=out_dir)

    s.say("joulecap example (PyTorch %s)" % torch.__version__)
    if gpu_num is None:
        s.say("No GPU: %s. Training and measuring on the CPU only." % why_cpu)
    else:
        s.say("GPU: CUDA device %d (%s); measuring it and the CPU." % (gpu_num, torch.cuda.get_device_name(gpu_num)))
    t0 = time.monotonic()
    for part in PARTS:
        part(s)

    s.say("")
    if s.estimates:
        s.say("Estimates (values not read from an energy counter):")
        for label, why in s.estimates.items():
            s.say("  %s: %s" % (label, why))
    else:
        s.say("Estimates: none; every value comes from an energy counter.")
    s.say("Done in %.1f s. Files: %s" % (time.monotonic() - t0, ", ".join(s.files)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

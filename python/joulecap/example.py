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

J_PER_KWH = 3.6e6


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
    sampler.start(interval=args.interval)
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


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m joulecap.example", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="joulecap-example", help="folder for the CSV files (default ./joulecap-example)")
    p.add_argument("--epochs", type=int, default=5, help="epochs (default 5)")
    p.add_argument("--batches", type=int, default=300, help="batches per epoch (default 300)")
    p.add_argument("--batch-size", type=int, default=64, help="batch size (default 64)")
    p.add_argument("--interval", type=float, default=0.1, help="asynchronous tool's interval, s (default 0.1)")
    p.add_argument("--quick", action="store_true", help="a few seconds' run (1 epoch of 5 batches), for tests")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
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

#!/usr/bin/env python3
"""Layer-wise energy benchmark (issue 5): accuracy of LayerwiseMeasurementTool against references that it did not
produce, the seed's method on the same layers in the same runs, and the overhead of the hooks on step time.

Workloads (synthetic data, on one GPU; training with SGD + momentum, bf16 autocast by default):
  * resnet50: ResNet-50 (torchvision's if installed, else the same architecture defined here), batch 64 at
    224x224, channels_last;
  * encoder: one nn.TransformerEncoderLayer (d_model 1024, 16 heads, feed-forward 4096, GELU as a module,
    batch_first), batch 32 x 512 tokens.

Per workload, in this order:
  1. warm-up;
  2. rounds of [no tool | tool, default (sampled steps) | tool, every step (sample="all") | no tool], leaf
     layers, every phase timed with a synchronisation at both ends.  Overhead = median over rounds of (step time
     with the tool / step time without it in the same round) - 1; and "within" the tool's own runs, immune to
     drift between runs: (their time / (steps x their median step)) - 1, minus the same for the runs without the
     tool.  The default runs give the "attribute" estimates (mode "attribute"); the every-step runs, from host
     timestamps taken at the same hook points (``_host_shadow``), the seed's method: layer time by the host clock
     (``time.time()`` in hooks) x the run-wide average GPU power;
  3. a tool run in mode "replay" (leaf layers, as long as a default run);
  4. reference "isolated" (per layer): each layer with >= 1% of the layers' time (and one call per step), run alone
     on its captured inputs
     (forward + backward) for --iso-seconds with the energy counter: its energy per call.  NB: this is the same
     procedure replay uses to measure a layer's power, so it is an independent reference for the attribute mode
     and for the seed, not for replay;
  5. reference "ablation" (per block): energy per step of long steady runs with and without a block (a ResNet
     bottleneck without a downsample replaced by nn.Identity; the encoder's attention or feed-forward sublayer
     replaced by zeros), baselines interleaved (B A1 B A2 B ...), truth = mean of the neighbouring baselines -
     ablated.  Independent of every method.  The tool's value of a block: the sum of its leaf rows (the residual
     add is in "(outside) forward").
Errors: |estimate - reference| / reference per layer (per call) or per block (per step); mean absolute error over
the layers with >= 1% of the time, and over the blocks.  GPU energy only: the seed's run-wide power was CPU + GPU;
here it is the GPU's alone, the quantity compared (this machine's CPU energy is an estimate anyway).

About 6 minutes on an H100 (--budget, default 480 s: later sections are cut short, and say so, when it runs out).
``--quick`` runs tiny models on the CPU against joulecap's fake NVML, to check the script:

  JOULECAP_NVML_LIBRARY=$(python -c 'import joulecap._paths as p; print(p.fake_nvml_library())') \\
  JOULECAP_FAKE_NVML_SCENARIO=tests/scenarios/h100-constant-300w.scn python bench/bench_layerwise.py --quick

On the GPU machine (joulecap installed from this tree, e.g. ``pip install --no-build-isolation --no-deps --target
/tmp/jcb-site .`` then ``PYTHONPATH=/tmp/jcb-site``): ``python3 bench/bench_layerwise.py --out "$OUT"``.
Output: JSON lines (DIR/layerwise.jsonl, or layerwise-quick.jsonl; DIR = --out, else $OUT, else bench/results),
the table last on stdout and in DIR/layerwise-table.txt.  Read-only NVML: nothing on the GPU is changed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shlex
import statistics
import sys
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
T_START = time.monotonic()


def elapsed() -> float:
    return time.monotonic() - T_START


def _strict(o):
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {str(k): _strict(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_strict(v) for v in o]
    return o


class Recorder:
    def __init__(self, path):
        self.path = path
        self.f = open(path, "w")

    def write(self, kind, **fields):
        rec = {"kind": kind, "t_s": round(elapsed(), 3), **fields}
        self.f.write(json.dumps(_strict(rec), default=str) + "\n")
        self.f.flush()
        return rec


def say(*a):
    print("[%6.1f s]" % elapsed(), *a, flush=True)


def mean(xs):
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return sum(xs) / len(xs) if xs else float("nan")


def excess_over_median(durs):
    """Time of the steps beyond as many median steps, as a fraction of that: in a run of the default tool, the
    cost of its sampled steps and leads (and of the steps after a burst that wait for the GPU) over a step not
    sampled, measured inside one run and so immune to the shared machine's drift between runs.  Minus the same
    for runs without the tool (steps vary by themselves), it is the tool's overhead but for its per-step pre-hook
    and marker (tens of µs; in the A/B figure)."""
    if not durs:
        return float("nan")
    med = statistics.median(durs)
    return sum(durs) / (len(durs) * med) - 1 if med > 0 else float("nan")


def rel_err(est, ref):
    if est is None or ref is None or not (ref > 0) or not math.isfinite(est):
        return float("nan")
    return abs(est - ref) / ref


# ----------------------------------------------------------------------------------------------------------------
# Models


def resnet50_inline(nn, layers=(3, 4, 6, 3), width=64, num_classes=1000):
    """torchvision's ResNet-50 architecture and module names (used when torchvision is missing, and, smaller, in
    --quick)."""

    class Bottleneck(nn.Module):
        expansion = 4

        def __init__(self, inplanes, planes, stride=1, downsample=None):
            super().__init__()
            self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(planes * 4)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = downsample

        def forward(self, x):
            identity = x
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.relu(self.bn2(self.conv2(out)))
            out = self.bn3(self.conv3(out))
            if self.downsample is not None:
                identity = self.downsample(x)
            out += identity
            return self.relu(out)

    class ResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.inplanes = width
            self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
            self.layer1 = self._make(width, layers[0])
            self.layer2 = self._make(width * 2, layers[1], 2)
            self.layer3 = self._make(width * 4, layers[2], 2)
            self.layer4 = self._make(width * 8, layers[3], 2)
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(width * 8 * 4, num_classes)

        def _make(self, planes, blocks, stride=1):
            down = None
            if stride != 1 or self.inplanes != planes * 4:
                down = nn.Sequential(nn.Conv2d(self.inplanes, planes * 4, 1, stride=stride, bias=False),
                                     nn.BatchNorm2d(planes * 4))
            mods = [Bottleneck(self.inplanes, planes, stride, down)]
            self.inplanes = planes * 4
            mods += [Bottleneck(self.inplanes, planes) for _ in range(1, blocks)]
            return nn.Sequential(*mods)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(self.avgpool(x).flatten(1))

    return ResNet()


class Workload:
    """A model, its training step, and its blocks (for the ablation reference)."""

    def __init__(self, name, torch, model, make_batch, loss_fn, device, amp_dtype, blocks, note):
        self.name = name
        self.torch = torch
        self.model = model
        self.device = device
        self.amp_dtype = amp_dtype
        self.blocks = blocks  # list of dicts: name, rows (names whose leaf rows make the block), ablate, restore
        self.note = note
        self.x, self.y = make_batch()
        self.loss_fn = loss_fn
        self.opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step(self):
        torch = self.torch
        self.opt.zero_grad(set_to_none=True)
        if self.amp_dtype is not None:
            with torch.autocast(self.device.type, dtype=self.amp_dtype):
                loss = self.loss_fn(self.model(self.x), self.y)
        else:
            loss = self.loss_fn(self.model(self.x), self.y)
        loss.backward()
        self.opt.step()


def make_resnet(torch, device, args):
    nn = torch.nn
    if args.quick:
        model, src = resnet50_inline(nn, layers=(2, 2, 1, 1), width=8, num_classes=10), "inline, quick (2,2,1,1) x8"
        batch, size, classes = 4, 32, 10
    else:
        try:
            import torchvision

            model, src = torchvision.models.resnet50(), "torchvision %s" % torchvision.__version__
        except Exception:
            model, src = resnet50_inline(nn), "inline (torchvision missing)"
        batch, size, classes = args.batch or 64, 224, 1000
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True

    def make_batch():
        g = torch.Generator().manual_seed(0)
        x = torch.randn(batch, 3, size, size, generator=g).to(device)
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        return x, torch.randint(0, classes, (batch,), generator=g).to(device)

    blocks = []
    want = ["layer1.1", "layer2.1", "layer3.1", "layer3.3", "layer4.1"] if not args.quick else ["layer1.1", "layer2.1"]
    for name in want:
        stage, idx = name.split(".")
        seq = getattr(model, stage)
        i = int(idx)
        if i >= len(seq) or getattr(seq[i], "downsample", None) is not None:
            continue

        def ablate(seq=seq, i=i):
            seq._jcb_saved = seq[i]
            seq[i] = nn.Identity()

        def restore(seq=seq, i=i):
            seq[i] = seq._jcb_saved

        blocks.append({"name": name, "rows": [name], "ablate": ablate, "restore": restore})
    amp = None if args.precision == "fp32" or device.type != "cuda" else torch.bfloat16
    note = "%s, batch %d at %dx%d, %s" % (src, batch, size, size, "bf16 autocast" if amp else "fp32")
    return Workload("resnet50", torch, model, make_batch, nn.functional.cross_entropy, device, amp, blocks, note)


def make_encoder(torch, device, args):
    nn = torch.nn
    if args.quick:
        d, heads, ff, batch, seq = 32, 4, 64, 4, 16
    else:
        d, heads, ff, batch, seq = 1024, 16, 4096, args.batch or 32, 512
    layer = nn.TransformerEncoderLayer(d, heads, ff, dropout=0.1, activation=nn.GELU(), batch_first=True).to(device)

    def make_batch():
        g = torch.Generator().manual_seed(0)
        return torch.randn(batch, seq, d, generator=g).to(device), None

    def loss_fn(out, _y):
        return out.float().square().mean()

    def zeros_sa(x, *a, **k):
        return torch.zeros_like(x)

    def zeros_ff(x):
        return torch.zeros_like(x)

    blocks = [
        {"name": "attention", "rows": ["self_attn", "dropout1"],
         "ablate": lambda: setattr(layer, "_sa_block", zeros_sa), "restore": lambda: delattr(layer, "_sa_block")},
        {"name": "feed-forward", "rows": ["linear1", "activation", "dropout", "linear2", "dropout2"],
         "ablate": lambda: setattr(layer, "_ff_block", zeros_ff), "restore": lambda: delattr(layer, "_ff_block")},
    ]
    amp = None if args.precision == "fp32" or device.type != "cuda" else torch.bfloat16
    note = "TransformerEncoderLayer(%d, %d heads, ff %d, GELU module), batch %d x %d tokens, %s" % (
        d, heads, ff, batch, seq, "bf16 autocast" if amp else "fp32")
    return Workload("encoder", torch, layer, make_batch, loss_fn, device, amp, blocks, note)


# ----------------------------------------------------------------------------------------------------------------
# Measuring


class SmClock:
    """Mean SM clock (MHz) over a stretch, read every 5 ms by a thread through pynvml (read-only), to tell whether
    a layer run alone ran at other clocks than in the network (a GEMM alone at the power limit is throttled).
    None without pynvml or a GPU."""

    def __init__(self, index):
        self.handle = self.nvml = None
        if index is None:
            return
        try:
            import pynvml

            pynvml.nvmlInit()
            self.nvml = pynvml
            self.handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        except Exception:
            self.handle = None

    def __enter__(self):
        import threading

        self.readings, self.stop_evt = [], threading.Event()
        if self.handle is not None:
            def loop():
                while not self.stop_evt.wait(0.005):
                    try:
                        self.readings.append(self.nvml.nvmlDeviceGetClockInfo(self.handle, self.nvml.NVML_CLOCK_SM))
                    except Exception:
                        return

            self.thread = threading.Thread(target=loop, daemon=True)
            self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_evt.set()
        if self.handle is not None:
            self.thread.join()
        return False

    @property
    def mhz(self):
        return mean(self.readings) if self.readings else None


class Bench:
    def __init__(self, args, torch, device, gpu_arg, label, rec):
        self.args = args
        self.torch = torch
        self.device = device
        self.gpu_arg = gpu_arg
        self.label = label  # the energy compared: "gpu0" (or "cpu" without any GPU)
        self.rec = rec
        from joulecap import EnergyMeasurementTool

        self.meter = EnergyMeasurementTool(None, gpu_num=gpu_arg)
        self.sm = SmClock((device.index or 0) if device.type == "cuda" else None)
        s = args.scale
        if args.quick:
            self.warmup_s, self.phase_s, self.rounds, self.abl_s = 0.3, 0.25, 2, 0.2
            self.sampled_s = 1.0
        else:
            self.warmup_s, self.phase_s, self.rounds, self.abl_s = 3.0 * s, 2.0 * s, args.rounds, 3.0 * s
            self.sampled_s = args.sampled_seconds * s

    def sync(self):
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)

    def run_steps(self, wl, n, durs=None):
        """Seconds for n steps (synchronised at both ends); durs, a list, gets each step's host time."""
        self.sync()
        t0 = time.perf_counter()
        if durs is None:
            for _ in range(n):
                wl.step()
        else:
            t = t0
            for _ in range(n):
                wl.step()
                t1 = time.perf_counter()
                durs.append(t1 - t)
                t = t1
        self.sync()
        return time.perf_counter() - t0

    def over_budget(self, need_s=0.0):
        return elapsed() + need_s > self.args.budget

    def tool(self, **kw):
        from joulecap import LayerwiseMeasurementTool

        kw.setdefault("replay_seconds", self.args.replay_seconds)
        kw.setdefault("replay_min_share", 0.01)
        return LayerwiseMeasurementTool(None, gpu_num=self.gpu_arg, _host_shadow=True, **kw)

    def tool_run(self, wl, n, durs=None, **kw):
        t = self.tool(**kw)
        self.sync()
        t.start(wl.model)
        secs = self.run_steps(wl, n, durs)
        t0 = time.perf_counter()
        res = t.stop()
        return t, res, secs, time.perf_counter() - t0

    def estimates(self, res, n_steps):
        """Per (layer, phase): calls, time, attribute energy, seed energy (host time x run-average power)."""
        lab = self.label
        p_avg = res.total_energy_j.get(lab, float("nan")) / res.elapsed_s
        host = res.clock.get("host_time_s", {})
        out = {}
        for r in res.layer_rows():
            key = (r["layer"], r["phase"])
            hf, hb = host.get(r["layer"] + "|" + r["phase"], (float("nan"), float("nan")))
            out[key] = {
                "calls": r["calls"], "backward_calls": r["backward_calls"], "time_s": r["time_s"],
                "energy_j": r["%s_energy_j" % lab], "seed_energy_j": (hf + hb) * p_avg, "host_time_s": hf + hb,
                "type": r["type"], "steps": n_steps,
            }
        return out

    def marker_cost(self, n=2000):
        """Host cost of one layer-time marker on this machine: the tool's marker (an event from its pool, recorded
        on the cached stream), the plain torch way it replaced (a reused torch.cuda.Event recorded with
        ev.record(torch.cuda.current_stream())), and turning one event into a host time (elapsed_time)."""
        torch = self.torch
        if self.device.type != "cuda":
            return None
        from joulecap import layerwise as lw

        clock = lw._CudaClock(torch, self.device)
        clock.begin()
        out = {}
        evs = []
        self.sync()
        t0 = time.perf_counter_ns()
        for _ in range(n):
            evs.append(clock.mark())
        out["tool_marker_us"] = (time.perf_counter_ns() - t0) / n / 1e3
        self.sync()
        dev = self.device
        plain = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
        for ev in plain:
            ev.record()
        self.sync()
        t0 = time.perf_counter_ns()
        for ev in plain:
            ev.record(torch.cuda.current_stream(dev))
        out["plain_marker_us"] = (time.perf_counter_ns() - t0) / n / 1e3
        self.sync()
        times = [clock.anchor_host] + evs
        t0 = time.perf_counter_ns()
        clock.convert(times, 1, False)
        out["convert_us_per_event"] = (time.perf_counter_ns() - t0) / n / 1e3
        self.rec.write("marker_cost", **out)
        say("  host cost per marker: tool %.2f us, plain torch %.2f us; conversion %.2f us per event" % (
            out["tool_marker_us"], out["plain_marker_us"], out["convert_us_per_event"]))
        return out

    # -- one workload ------------------------------------------------------------------------------------------

    def workload(self, wl):
        rec, lab = self.rec, self.label
        say("%s: %s" % (wl.name, wl.note))
        rec.write("workload", workload=wl.name, note=wl.note)
        # 1. warm-up, and the number of steps per phase
        t0 = time.perf_counter()
        n = 0
        while time.perf_counter() - t0 < self.warmup_s or n < 3:
            wl.step()
            n += 1
        self.sync()
        per = self.run_steps(wl, 3) / 3
        steps = max(3, int(round(self.phase_s / per)))
        say("  step %.2f ms; %d steps per phase" % (per * 1e3, steps))
        self.marker_cost()
        rec.write("warmup", workload=wl.name, step_s=per, steps_per_phase=steps, warmup_s=time.perf_counter() - t0)

        # 2. rounds: [no tool, tool (default: sampled steps), tool on every step (sample="all"), no tool], leaf
        # layers.  Each tool run is compared with the mean of the two runs without it around it (the shared
        # machine's speed drifts).  Attribute estimates come from the default runs; the seed's method (host time in
        # hooks on every step) from the sample="all" runs.
        runs, runs_all = [], []
        ratios, ratios_all, within = [], [], []
        steps_auto = max(steps, int(round(self.sampled_s / per)))
        for k in range(self.rounds):
            d_off, d_on = [], []
            off_a = self.run_steps(wl, steps, d_off) / steps
            t, res, secs, stop_s = self.tool_run(wl, steps_auto, d_on)
            runs.append(self.estimates(res, steps_auto))
            t2, res_all, secs_all, stop_all_s = self.tool_run(wl, steps, sample="all")
            runs_all.append(self.estimates(res_all, steps))
            off_b = self.run_steps(wl, steps, d_off) / steps
            off = 0.5 * (off_a + off_b)
            within.append(excess_over_median(d_on) - excess_over_median(d_off))
            row = {"round": k, "off_step_s": [off_a, off_b], "on_step_s": secs / steps_auto, "stop_s": stop_s,
                   "on_steps": steps_auto, "within_run_overhead_pct": 100 * within[-1],
                   "all_step_s": secs_all / steps, "stop_all_s": stop_all_s, "sampling": res.sampling,
                   "clock": res.clock.get("kind"),
                   "clock_info": {k2: v for k2, v in res.clock.items() if k2 != "host_time_s"},
                   "outside_share_pct": sum(r["share_pct"] for r in res.rows if r["type"] == "outside"),
                   "outside_rows": {r["layer"]: r["share_pct"] for r in res.rows if r["type"] == "outside"}}
            ratios.append(row["on_step_s"] / off)
            ratios_all.append(row["all_step_s"] / off)
            sm = res.sampling.get("train", {})
            say("  round %d: %.2f ms/step without the tool, %.2f with it (%d of %d steps sampled, lead %.0f ms, "
                "%d bursts corrected; within the run %+.2f%%), %.2f on every step" % (
                    k, off * 1e3, row["on_step_s"] * 1e3, sm.get("sampled_steps", 0), sm.get("steps", 0),
                    1e3 * res.clock.get("lead_s", 0), res.clock.get("bursts_corrected", 0), 100 * within[-1],
                    row["all_step_s"] * 1e3))
            rec.write("overhead_round", workload=wl.name, **row)
        overhead = statistics.median(ratios) - 1
        overhead_all = statistics.median(ratios_all) - 1
        overhead_within = statistics.median(within)
        say("  overhead of the tool (default, sampled steps): %+.2f%% step time (within its runs %+.2f%%); on every "
            "step: %+.2f%%" % (100 * overhead, 100 * overhead_within, 100 * overhead_all))
        rec.write("overhead", workload=wl.name, overhead_pct=100 * overhead, overhead_all_pct=100 * overhead_all,
                  overhead_within_pct=100 * overhead_within, within=within,
                  ratios=ratios, ratios_all=ratios_all, rounds=self.rounds, steps=steps)

        # 3. a replay run (its captured inputs also serve the isolated references)
        replay = {}
        kept_run = None
        if self.over_budget(10):
            rec.write("skipped", workload=wl.name, what="replay", reason="budget")
        else:
            t = self.tool(mode="replay", _keep_run=True)
            self.sync()
            t.start(wl.model)
            self.run_steps(wl, steps_auto)  # as long as the default's runs: sampling needs a long run
            t1 = time.perf_counter()
            res = t.stop()
            rs = time.perf_counter() - t1
            self.replay_steps = steps_auto
            replay = {(r["layer"], r["phase"]): r for r in res.layer_rows()}
            say("  replay: %d layers replayed in %.1f s" % (sum("same_as" not in r for r in res.replayed), rs))
            rec.write("replay", workload=wl.name, depth=None, stop_s=rs, replayed=res.replayed, steps=steps_auto,
                      clock_info={k: v for k, v in res.clock.items() if k != "host_time_s"}, sampling=res.sampling)
            kept_run = t._last_run

        # per-layer table from the default runs
        leaf = runs
        keys = list(leaf[0])
        layer_time = {k: mean([r[k]["time_s"] for r in leaf if k in r]) for k in keys}
        total_t = sum(layer_time.values())
        # Layers with >= 1% of the time, called once per step: a module called several times per step (ResNet's
        # shared relu: three shapes) is run alone on its first call's inputs only, so its reference would not
        # match its average call.
        big = [k for k in keys if k[1] == "train" and layer_time[k] >= 0.01 * total_t
               and all(r[k]["calls"] == r[k]["steps"] for r in leaf if k in r)]

        # 4. isolated references: each layer alone in a CUDA graph (its kernels back to back: the reference), and
        # in a Python loop (the earlier reference: short layers leave the GPU idle between launches)
        iso = self.isolated(wl, kept_run, big, graph=True)
        iso_eager = self.isolated(wl, kept_run, big, graph=False)

        results = []
        for k in keys:
            calls = mean([r[k]["calls"] for r in leaf if k in r])
            e_attr = mean([r[k]["energy_j"] for r in leaf if k in r])
            t_attr = mean([r[k]["time_s"] for r in leaf if k in r])
            calls_all = mean([r[k]["calls"] for r in runs_all if k in r])
            e_seed = mean([r[k]["seed_energy_j"] for r in runs_all if k in r])
            e_all = mean([r[k]["energy_j"] for r in runs_all if k in r])
            rp = replay.get(k)
            e_rep = rp["%s_energy_j" % lab] if rp else float("nan")
            rep_calls = rp["calls"] if rp else float("nan")
            ref = iso.get(k, {}).get("j_per_call")
            item = {
                "workload": wl.name, "layer": k[0], "phase": k[1], "type": leaf[0][k]["type"], "calls_per_run": calls,
                "time_share_pct": 100 * layer_time[k] / total_t if total_t else float("nan"),
                "attribute_j_per_call": e_attr / calls if calls else float("nan"),
                "every_step_j_per_call": e_all / calls_all if calls_all else float("nan"),
                "replay_j_per_call": e_rep / rep_calls if rep_calls else float("nan"),
                "replay_s_per_call": rp["time_s"] / rep_calls if rp and rep_calls else float("nan"),
                "seed_j_per_call": e_seed / calls_all if calls_all else float("nan"),
                "attribute_s_per_call": t_attr / calls if calls else float("nan"),
                "isolated_j_per_call": ref,
                "isolated_s_per_call": iso.get(k, {}).get("s_per_call"),
                "isolated_graph": iso.get(k, {}).get("graph"),
                "isolated_eager_j_per_call": iso_eager.get(k, {}).get("j_per_call"),
                "in_metric": k in big and ref is not None,
            }
            for m in ("attribute", "every_step", "replay", "seed"):
                item["%s_err" % m] = rel_err(item["%s_j_per_call" % m], ref)
                item["%s_err_eager_ref" % m] = rel_err(item["%s_j_per_call" % m], item["isolated_eager_j_per_call"])
            item["attribute_time_err"] = rel_err(item["attribute_s_per_call"], item["isolated_s_per_call"])

            results.append(item)
            rec.write("layer", **item)

        # 5. ablation reference
        blocks = self.ablation(wl, steps, runs, runs_all, replay)
        summary = {"workload": wl.name, "overhead_pct": 100 * overhead, "overhead_all_pct": 100 * overhead_all,
                   "overhead_within_pct": 100 * overhead_within, "step_s": per, "steps": steps}
        for m in ("attribute", "every_step", "replay", "seed"):
            errs = [r["%s_err" % m] for r in results if r["in_metric"]]
            summary["layer_mae_%s_pct" % m] = 100 * mean(errs)
            summary["layer_max_%s_pct" % m] = 100 * max([e for e in errs if math.isfinite(e)] or [float("nan")])
            summary["layer_mae_%s_eager_ref_pct" % m] = 100 * mean(
                [r["%s_err_eager_ref" % m] for r in results if r["in_metric"]])
            if m != "every_step":
                berrs = [b["%s_err" % m] for b in blocks if b.get("truth_j_per_step") is not None]
                summary["block_mae_%s_pct" % m] = 100 * mean(berrs)
        summary["layer_time_mae_attribute_pct"] = 100 * mean(
            [r["attribute_time_err"] for r in results if r["in_metric"]])

        summary["layers_in_metric"] = sum(r["in_metric"] for r in results)
        summary["blocks"] = len([b for b in blocks if b.get("truth_j_per_step") is not None])
        rec.write("summary", **summary)
        return summary

    def isolated(self, wl, run, keys, graph):
        """Energy and time per call of each layer run alone on its captured inputs (forward + backward), in a CUDA
        graph (graph=True, falling back to a Python loop where capture fails) or in a Python loop."""
        from joulecap import layerwise as lw

        out = {}
        if run is None:
            return out
        torch = self.torch
        ctx = self.meter._ctx
        labels = self.meter._devices.labels
        li = labels.index(self.label)
        by_key = {}
        rows = {(run.rows[r].name, lw.PHASES[run.rows[r].phase]): r for r in run.captures}
        iso_s = self.args.iso_seconds
        rng = torch.get_rng_state()
        for k in keys:
            r = rows.get(k)
            if r is None:
                continue
            if self.over_budget(iso_s + 2):
                self.rec.write("skipped", workload=wl.name, what="isolated %s" % (k,), reason="budget")
                continue
            row = run.rows[r]
            name, module = run.layers[row.layer]
            cap = run.captures[r]
            backward = run.calls[2 * r + 1] > 0 and bool(cap.grads)
            key = (lw._module_key(module), lw._key_of(cap.args), lw._key_of(cap.kwargs), cap.training, cap.autocast,
                   backward)
            if key not in by_key:
                try:
                    with self.sm as clk:
                        m = lw.measure_alone(torch, ctx, module, cap, lw.TRAIN, backward, iso_s, self.device.type,
                                             self.device if self.device.type == "cuda" else None, graph=graph)
                except Exception as e:
                    self.rec.write("skipped", workload=wl.name, what="isolated %s" % (k,), reason=repr(e))
                    continue
                by_key[key] = {"j_per_call": m["energy_j"][li] / m["iterations"],
                               "s_per_call": m["seconds"] / m["iterations"], "graph": m["graph"]}
                self.rec.write("isolated", workload=wl.name, layer=k[0], phase=k[1], power_w=m["power_w"][li],
                               seconds=m["seconds"], iterations=m["iterations"], backward=backward,
                               asked_graph=graph, sm_mhz=clk.mhz, **by_key[key])
            out[k] = by_key[key]
        torch.set_rng_state(rng)
        say("  isolated references (%s): %d layers (%d run alone, %d as CUDA graphs)" % (
            "graph" if graph else "Python loop", len(out), len(by_key), sum(v["graph"] for v in by_key.values())))
        return out

    def energy_per_step(self, wl, n):
        self.sync()
        with self.meter.window() as w, self.sm as clk:
            t0 = time.perf_counter()
            for _ in range(n):
                wl.step()
            self.sync()
            secs = time.perf_counter() - t0
        self.rec.write("steady", workload=wl.name, steps=n, j_per_step=w.result.energy_j[self.label] / n,
                       step_s=secs / n, sm_mhz=clk.mhz)
        return w.result.energy_j[self.label] / n, secs / n

    def ablation(self, wl, steps, runs, runs_all, replay):
        lab = self.label
        n = max(3, int(round(steps * self.abl_s / self.phase_s)))
        warm = max(2, n // 10)
        out = []
        if not wl.blocks:
            return out
        if self.over_budget(3 * self.abl_s):
            self.rec.write("skipped", workload=wl.name, what="ablation", reason="budget")
            return out
        base_before, base_t = self.energy_per_step(wl, n)
        for b in wl.blocks:
            if self.over_budget(2 * self.abl_s + 2):
                self.rec.write("skipped", workload=wl.name, what="ablation %s" % b["name"], reason="budget")
                continue
            b["ablate"]()
            try:
                for _ in range(warm):
                    wl.step()
                abl, abl_t = self.energy_per_step(wl, n)
            finally:
                b["restore"]()
            for _ in range(warm):
                wl.step()
            base_after, base_t2 = self.energy_per_step(wl, n)
            truth = 0.5 * (base_before + base_after) - abl
            # a block's leaf rows: the listed names and the layers inside them (the residual add of a ResNet block
            # is in "(outside) forward", not counted)
            keys = sorted({k for r in runs + runs_all for k in r if k[1] == "train" and
                           any(k[0] == p or k[0].startswith(p + ".") for p in b["rows"])})

            def per_step(field, est_runs):
                vals = [sum(r[k][field] for k in keys if k in r) / r[keys[0]]["steps"] for r in est_runs
                        if keys and keys[0] in r]
                return mean(vals)

            item = {
                "workload": wl.name, "block": b["name"], "rows": b["rows"], "steps": n,
                "baseline_j_per_step": [base_before, base_after], "ablated_j_per_step": abl,
                "truth_j_per_step": truth, "baseline_step_s": 0.5 * (base_t + base_t2), "ablated_step_s": abl_t,
                "attribute_j_per_step": per_step("energy_j", runs),
                "seed_j_per_step": per_step("seed_energy_j", runs_all),
                "replay_j_per_step": (sum(replay[k]["%s_energy_j" % lab] for k in keys if k in replay)
                                      / self.replay_steps if replay and keys and keys[0] in replay else float("nan")),
            }
            for m in ("attribute", "replay", "seed"):
                item["%s_err" % m] = rel_err(item["%s_j_per_step" % m], truth)
            self.rec.write("block", **item)
            out.append(item)
            base_before = base_after
        say("  ablation references: %d blocks" % len(out))
        return out


# ----------------------------------------------------------------------------------------------------------------


def collect_meta(args, torch, device):
    meta = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": os.environ.get("JCB_COMMAND") or " ".join(shlex.quote(a) for a in [sys.executable] + sys.argv),
        "git_commit": os.environ.get("JCB_GIT_COMMIT"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "quick": args.quick,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "device": str(device),
        "fake_nvml_scenario": os.environ.get("JOULECAP_FAKE_NVML_SCENARIO"),
        "args": vars(args),
    }
    if device.type == "cuda":
        meta["card"] = torch.cuda.get_device_name(device)
    try:
        import joulecap

        meta["joulecap"] = joulecap.__version__
        meta["joulecap_devices"] = [
            {k: d.get(k) for k in ("index", "name", "energy_source", "energy_note") if k in d}
            for d in joulecap.devices(args.gpu if args.gpu is not None else "none")
        ]
        from joulecap import _joulecap

        with _joulecap.Context(str(args.gpu) if args.gpu is not None else "none") as ctx:
            meta["driver"] = ctx.gpu_driver().get("version")
    except Exception as e:
        meta["joulecap_error"] = repr(e)
    return meta


def table(summaries):
    lines = []
    lines.append("%-9s %26s %7s | %-44s | %-16s | %-26s" % (
        "workload", "overhead", "layers", "layer MAE vs isolated (CUDA graph)", "vs Python loop",
        "block MAE (ablation ref.)"))
    lines.append("%-9s %8s %8s %8s %7s | %8s %8s %8s %8s %8s | %7s %8s | %8s %8s %8s" % (
        "", "default", "within", "every", "", "attrib.", "every", "replay*", "seed", "time", "attrib.", "seed",
        "attrib.", "replay", "seed"))
    for s in summaries:
        lines.append(
            "%-9s %+7.2f%% %+7.2f%% %+7.2f%% %7d | %7.1f%% %7.1f%% %7.1f%% %7.1f%% %7.1f%% | %6.1f%% %7.1f%% | "
            "%7.1f%% %7.1f%% %7.1f%%  (%d blocks)" % (
                s["workload"], s["overhead_pct"], s["overhead_within_pct"], s["overhead_all_pct"],
                s["layers_in_metric"],
                s["layer_mae_attribute_pct"], s["layer_mae_every_step_pct"], s["layer_mae_replay_pct"],
                s["layer_mae_seed_pct"], s["layer_time_mae_attribute_pct"],
                s["layer_mae_attribute_eager_ref_pct"], s["layer_mae_seed_eager_ref_pct"],
                s["block_mae_attribute_pct"], s["block_mae_replay_pct"], s["block_mae_seed_pct"], s["blocks"]))
    lines.append("default: sampled steps within 5% (lead on), against runs without the tool; within: the same runs' "
                 "steps beyond their median step (minus the same without the tool); every: sample='all'; time: MAE "
                 "of the default's time per call vs the graph reference's.")
    lines.append("* replay measures layer power the way the isolated reference does: not an independent check.")
    lines.append("layers: train-phase layers with >= 1% of the layers' time; errors on GPU energy per call "
                 "(layers) and per step (blocks).")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny models on the CPU (fake NVML), to check the script")
    ap.add_argument("--out", default=None, help="output folder (default $OUT, else bench/results)")
    ap.add_argument("--gpu", type=int, default=0, help="CUDA device (default 0)")
    ap.add_argument("--workloads", default="resnet50,encoder", help="comma-separated: resnet50,encoder")
    ap.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    ap.add_argument("--batch", type=int, default=None, help="batch size (default 64 ResNet-50, 32 encoder)")
    ap.add_argument("--scale", type=float, default=1.0, help="multiplies the phase durations")
    ap.add_argument("--replay-seconds", type=float, default=1.0, help="replay mode: seconds per layer (>= 10 steps)")
    ap.add_argument("--iso-seconds", type=float, default=1.5, help="isolated reference: seconds per layer")
    ap.add_argument("--rounds", type=int, default=2, help="overhead rounds (default 2)")
    ap.add_argument("--sampled-seconds", type=float, default=30.0,
                    help="length of the default (sampled) tool's run per round, s (default 30: sampling needs a "
                         "run long against a burst)")
    ap.add_argument("--budget", type=float, default=480.0, help="seconds; later sections are cut short past it")
    args = ap.parse_args(argv)
    if args.quick:
        args.replay_seconds = min(args.replay_seconds, 0.05)
        args.iso_seconds = min(args.iso_seconds, 0.05)
    warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
    import torch

    out_dir = args.out or os.environ.get("OUT") or os.path.join(HERE, "results")
    os.makedirs(out_dir, exist_ok=True)
    rec = Recorder(os.path.join(out_dir, "layerwise-quick.jsonl" if args.quick else "layerwise.jsonl"))
    if torch.cuda.is_available() and not args.quick:
        device = torch.device("cuda", args.gpu)
        torch.cuda.set_device(device)
    else:
        if not args.quick:
            ap.error("no CUDA GPU: run with --quick to check the script on the CPU")
        device = torch.device("cpu")
    import joulecap

    gpus = [d for d in joulecap.devices("all") if d["kind"] == "gpu"]
    gpu_arg = args.gpu if any(d["index"] == args.gpu for d in gpus) else None
    label = "gpu%d" % args.gpu if gpu_arg is not None else "cpu"
    meta = collect_meta(args, torch, device)
    meta["energy_compared"] = label
    rec.write("meta", **meta)
    say("layer-wise benchmark on %s (%s), comparing %s energy" % (device, meta.get("card", "CPU"), label))
    torch.manual_seed(0)
    bench = Bench(args, torch, device, gpu_arg, label, rec)
    makers = {"resnet50": make_resnet, "encoder": make_encoder}
    summaries = []
    for name in [w.strip() for w in args.workloads.split(",") if w.strip()]:
        if name not in makers:
            ap.error("unknown workload %r (resnet50, encoder)" % name)
        if bench.over_budget(20):
            rec.write("skipped", workload=name, what="workload", reason="budget")
            continue
        wl = makers[name](torch, device, args)
        summaries.append(bench.workload(wl))
        del wl
        if device.type == "cuda":
            torch.cuda.empty_cache()
    text = table(summaries)
    rec.write("table", text=text, total_s=elapsed())
    table_path = os.path.join(out_dir, "layerwise-quick-table.txt" if args.quick else "layerwise-table.txt")
    with open(table_path, "w") as f:
        f.write(text + "\n")
    print()
    print(text)
    print("total %.1f s; JSON lines in %s" % (elapsed(), rec.path))
    return 0


if __name__ == "__main__":
    sys.exit(main())

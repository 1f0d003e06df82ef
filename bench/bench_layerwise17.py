#!/usr/bin/env python3
"""Layer-wise benchmark of issue 17: per-layer energy of the default mode against each layer run alone, on layers
of distinct power and of both durations, and the tool's overhead on short and long runs, side by side with mode
"replay", the seed's method and (where the tool still offers it) the default as it was before issue 17.

Sections (one GPU; synthetic data; every reference is something the method under test did not produce):
  (a) "four": four layers of distinct power run in sequence, inference (torch.inference_mode): a bf16 GEMM, a
      memory-bound elementwise chain, a softmax, a reduction, each a module working on the same 8192 x 8192 bf16
      tensor, repeated inside the module so that a call takes about the target time (calibrated here).  Two sizes:
      "short" (2 / 4 / 6 / 3 ms per call) and "long" (200 / 150 / 300 / 100 ms per call).  Reference: each layer
      alone, called in a Python loop for --iso-seconds inside an energy window (the counter): its energy per call.
  (b) "resnet50" (training step, bf16 autocast, batch 64; torchvision's model if installed, else the same
      architecture defined in bench_layerwise.py) and "encoder" (one nn.TransformerEncoderLayer d 1024, batch 32 x
      512, training).  Reference: each layer with >= 1% of the layers' time, alone on its captured inputs in a
      CUDA graph (forward + backward) for --iso-seconds (bench_layerwise.py's "isolated" reference).
  (c) "overhead": a 12-block transformer (d 1024, 16 heads, ff 4096, seq 512, batch 16, bf16 autocast, AdamW)
      training, 60 steps and 800 steps, runs without the tool and with the default tool interleaved; the loop's
      time and the time of start() + stop() (which holds any replay after the run) apart.  The seed's method
      (every step hooked) over 60 steps.
Methods, per workload, in separate runs of the same length:
  default  LayerwiseMeasurementTool's defaults (the code under test); its replay budget, 5% of a run this short,
           replays nothing here;
  default5m  the defaults but replay_budget = 15 s / the run's length: the replay time that the default's 5% gives
           a 5-minute run (only where the tool has replay_budget);
  before   the default as it was before issue 17 (only where the tool offers the switches: replay_budget=0,
           _knots=False, _early_scale=False);
  replay   mode="replay";
  seed     the seed's method: every step hooked (sample="all"), a layer's time by the host clock in the hooks
           (time.time() in the seed) x the run's average GPU power.
Error per layer: |estimate - reference| / reference of GPU energy per call; MAE over the layers.

About 7.5 minutes on an H100/H200 (--budget, default 440 s: later parts are cut short, and say so, past it).
``--fake`` runs tiny sizes on the CPU against joulecap's fake NVML, to check the script (bench/run_layerwise17.sh
--fake sets the fake up).  Output: DIR/layerwise17.jsonl (JSON lines) and DIR/layerwise17-table.txt, the table
last on stdout; DIR = --out, else $OUT, else bench/results.  Read-only NVML: nothing on the GPU is changed.
"""

from __future__ import annotations

import argparse
import inspect
import math
import os
import statistics
import sys
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import bench_layerwise as bl  # noqa: E402  (Recorder, models, the isolated reference)

elapsed, say, mean, rel_err = bl.elapsed, bl.say, bl.mean, bl.rel_err

SIZES = {  # target ms per call: GEMM, elementwise, softmax, reduction
    "short": (2.0, 4.0, 6.0, 3.0),
    "long": (200.0, 150.0, 300.0, 100.0),
}
FAKE_SIZES = {"short": (2.0, 4.0, 6.0, 3.0), "long": (40.0, 30.0, 60.0, 20.0)}


# ----------------------------------------------------------------------------------------------------------------
# (a) four layers of distinct power


def make_four(torch, device, targets, fake):
    """Four modules on one (n, n) tensor, each repeating its op `reps` times (calibrated to the target ms)."""
    nn = torch.nn
    n = 256 if fake else 8192
    dtype = torch.float32 if fake else torch.bfloat16

    class Gemm(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(n, n, device=device, dtype=dtype) / math.sqrt(n),
                                       requires_grad=False)
            self.reps = 1

        def forward(self, x):
            y = x
            for _ in range(self.reps):
                y = x @ self.weight  # (from x each time: no drift of the values over many repetitions)
            return y

    class Elementwise(nn.Module):  # memory-bound: each op reads and writes the whole tensor
        def __init__(self):
            super().__init__()
            self.reps = 1

        def forward(self, x):
            for _ in range(self.reps):
                x = x * 0.5 + 0.25
            return x

    class Softmax(nn.Module):
        def __init__(self):
            super().__init__()
            self.reps = 1

        def forward(self, x):
            for _ in range(self.reps):
                x = torch.softmax(x, dim=-1)
            return x * n  # (keeps the values O(1) for the next layer)

    class Reduction(nn.Module):
        def __init__(self):
            super().__init__()
            self.reps = 1

        def forward(self, x):
            s = None
            for _ in range(self.reps):
                r = x.sum(dim=0, keepdim=True)
                s = r if s is None else s + r
            return x - s / (self.reps * n)

    model = nn.Sequential()
    for name, cls in (("gemm", Gemm), ("elementwise", Elementwise), ("softmax", Softmax), ("reduction", Reduction)):
        model.add_module(name, cls())
    model = model.to(device).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    # calibrate each module's repetitions to its target time per call
    with torch.inference_mode():
        for mod, target_ms in zip(model, targets):
            mod.reps = 4 if not fake else 2
            mod(x)
            sync()
            t0 = time.perf_counter()
            k = 0
            while k < 3 or time.perf_counter() - t0 < 0.2:
                mod(x)
                sync()
                k += 1
            per_rep = (time.perf_counter() - t0) / k / mod.reps
            mod.reps = max(1, int(round(target_ms * 1e-3 / per_rep)))
        sync()
    return model, x


class FourBench:
    def __init__(self, args, torch, device, gpu_arg, label, rec):
        self.args, self.torch, self.device, self.gpu_arg, self.label, self.rec = (
            args, torch, device, gpu_arg, label, rec)
        from joulecap import EnergyMeasurementTool

        self.meter = EnergyMeasurementTool(None, gpu_num=gpu_arg)

    def sync(self):
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)

    def loop(self, model, x, seconds=None, steps=None):
        torch = self.torch
        self.sync()
        t0 = time.perf_counter()
        n = 0
        with torch.inference_mode():
            while (steps is not None and n < steps) or (steps is None and time.perf_counter() - t0 < seconds):
                model(x)
                n += 1
                if steps is None:
                    self.sync()  # (only to watch the clock; a sync per step does not change the GPU's work)
        self.sync()
        return n, time.perf_counter() - t0

    def alone(self, mod, x, seconds):
        """The layer's GPU energy per call, run alone in a Python loop inside an energy window."""
        torch = self.torch
        with torch.inference_mode():
            mod(x)
            self.sync()
            with self.meter.window() as w:
                t0 = time.perf_counter()
                n = 0
                while n < 3 or time.perf_counter() - t0 < seconds:
                    mod(x)
                    n += 1
                    if n % 4 == 0:
                        self.sync()
                self.sync()
                secs = time.perf_counter() - t0
        e = w.result.energy_j[self.label]
        return {"j_per_call": e / n, "s_per_call": secs / n, "power_w": e / secs, "calls": n}

    def run(self, size, methods):
        torch, rec, lab, args = self.torch, self.rec, self.label, self.args
        targets = (FAKE_SIZES if args.fake else SIZES)[size]
        model, x = make_four(torch, self.device, targets, args.fake)
        names = [nm for nm, _ in model.named_children()]
        # warm-up, and the step's time
        n, secs = self.loop(model, x, seconds=0.5 if args.fake else 2.0)
        step_s = secs / n
        run_s = 1.0 if args.fake else args.run_seconds
        steps = max(6, int(round(run_s / step_s)))
        say("four/%s: reps %s, %.2f ms per step, %d steps per run" % (
            size, [m.reps for m in model], 1e3 * step_s, steps))
        rec.write("four_setup", size=size, reps={nm: m.reps for nm, m in model.named_children()}, step_s=step_s,
                  steps=steps, targets_ms=targets)
        # references first (each layer alone)
        ref = {}
        for nm, mod in model.named_children():
            if bl.elapsed() + args.iso_seconds + 1 > args.budget:
                rec.write("skipped", what="four/%s alone %s" % (size, nm), reason="budget")
                continue
            ref[nm] = self.alone(mod, x, args.iso_seconds * (0.2 if args.fake else 1.0))
            rec.write("four_alone", size=size, layer=nm, **ref[nm])
        say("  alone: " + ", ".join("%s %.1f W %.2f ms" % (nm, r["power_w"], 1e3 * r["s_per_call"])
                                    for nm, r in ref.items()))
        out = {"size": size, "ref": ref, "methods": {}}
        for meth, kw in methods:
            if bl.elapsed() + run_s * 2 + 5 > args.budget:
                rec.write("skipped", what="four/%s %s" % (size, meth), reason="budget")
                continue
            n_steps = steps if meth != "seed" else max(6, steps // 2)
            kw = resolve_kwargs(kw, n_steps * step_s)
            t = tool(self.gpu_arg, args, **kw)
            self.sync()
            t0 = time.perf_counter()
            t.start(model)
            t_start = time.perf_counter() - t0
            n, secs = self.loop(model, x, steps=n_steps)
            t1 = time.perf_counter()
            res = t.stop()
            t_stop = time.perf_counter() - t1
            per = per_call(res, lab, seed=(meth == "seed"))
            errs = {nm: rel_err(per.get(nm, {}).get("j_per_call"), ref[nm]["j_per_call"]) for nm in ref}
            item = {"size": size, "method": meth, "kwargs": kw, "steps": n, "loop_s": secs, "start_s": t_start,
                    "stop_s": t_stop, "per_layer": per, "err": errs, "mae": mean(list(errs.values())),
                    "sampling": res.sampling, "replayed": getattr(res, "replayed", None),
                    "clock": {k: v for k, v in res.clock.items() if k != "host_time_s"},
                    "rows_add_up": adds_up(res)}
            rec.write("four_method", **item)
            out["methods"][meth] = item
            say("  %-8s MAE %5.1f%%  (%s)  powers %s W; start %.2f s, stop %.2f s" % (
                meth, 100 * item["mae"], " / ".join("%.0f%%" % (100 * errs[nm]) for nm in names if nm in errs),
                " / ".join("%.0f" % per.get(nm, {}).get("power_w", float("nan")) for nm in names),
                t_start, t_stop))
        del model, x
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        return out


BEFORE = {"replay_budget": 0.0, "_knots": False, "_early_scale": False}  # the default before issue 17
FIVE_MIN = "five minutes"  # replay_budget: what the default's 5% would be in a 5-minute run


def resolve_kwargs(kw, run_s):
    """The tool's arguments for a run of run_s seconds: FIVE_MIN becomes the replay_budget that gives this run
    the replay time (5% of 300 s) that the default gives a 5-minute run."""
    return {k: (min(10.0, 0.05 * 300.0 / run_s) if v is FIVE_MIN else v) for k, v in kw.items()}


def per_call(res, lab, seed=False):
    """{layer: {j_per_call, power_w, s_per_call}} from a result's layer rows (infer and train phases summed);
    seed: host time in the hooks x the run's average power."""
    out = {}
    p_avg = res.total_energy_j.get(lab, float("nan")) / res.elapsed_s if res.elapsed_s else float("nan")
    host = res.clock.get("host_time_s", {})
    for r in res.layer_rows():
        o = out.setdefault(r["layer"], {"e": 0.0, "t": 0.0, "calls": 0, "th": 0.0})
        o["e"] += r["%s_energy_j" % lab]
        o["t"] += r["time_s"]
        o["calls"] += r["calls"]
        hf, hb = host.get(r["layer"] + "|" + r["phase"], (float("nan"), float("nan")))
        o["th"] += hf + hb
    for o in out.values():
        e = o["th"] * p_avg if seed else o["e"]
        o["j_per_call"] = e / o["calls"] if o["calls"] else float("nan")
        o["s_per_call"] = o["t"] / o["calls"] if o["calls"] else float("nan")
        o["power_w"] = o["e"] / o["t"] if o["t"] > 0 else float("nan")
    return out


def adds_up(res):
    ok = True
    for lab, total in res.total_energy_j.items():
        s = sum(r["%s_energy_j" % lab] for r in res.rows)
        ok = ok and abs(s - total) <= 1e-6 * max(1.0, abs(total))
    return ok


def tool(gpu_arg, args, **kw):
    from joulecap import LayerwiseMeasurementTool

    kw = dict(kw)
    kw.setdefault("replay_seconds", args.replay_seconds)
    return LayerwiseMeasurementTool(None, gpu_num=gpu_arg, _host_shadow=True, **kw)


def method_list(args):
    """(name, kwargs) of the methods compared; 'before' only where the tool has the switches of issue 17."""
    from joulecap import LayerwiseMeasurementTool

    params = inspect.signature(LayerwiseMeasurementTool).parameters
    out = [("default", {})]
    if "replay_budget" in params:
        out.append(("default5m", {"replay_budget": FIVE_MIN}))
    if "replay_budget" in params and "_knots" in params and "_early_scale" in params:
        out.append(("before", BEFORE))
    out += [("replay", {"mode": "replay"}), ("seed", {"sample": "all"})]
    want = [m.strip() for m in args.methods.split(",") if m.strip()]
    return [m for m in out if m[0] in want]


# ----------------------------------------------------------------------------------------------------------------
# (b) ResNet-50 training, a transformer encoder layer


def net_workload(name, args, torch, device, gpu_arg, label, rec, methods):
    wl = {"resnet50": bl.make_resnet, "encoder": bl.make_encoder}[name](torch, device, _bl_args(args))
    b = bl.Bench(_bl_args(args), torch, device, gpu_arg, label, rec)
    say("%s: %s" % (name, wl.note))
    t0 = time.perf_counter()
    k = 0
    while time.perf_counter() - t0 < (0.3 if args.fake else 3.0) or k < 3:
        wl.step()
        k += 1
    b.sync()
    step_s = b.run_steps(wl, 3) / 3
    run_s = 1.0 if args.fake else args.run_seconds
    steps = max(8, int(round(run_s / step_s)))
    say("  step %.2f ms; %d steps per run" % (1e3 * step_s, steps))
    results = {}
    kept = None
    for meth, kw in methods:
        if bl.elapsed() + run_s * 2.5 + 10 > args.budget:
            rec.write("skipped", workload=name, what=meth, reason="budget")
            continue
        n = steps if meth != "seed" else max(8, steps // 3)
        kw = resolve_kwargs(kw, n * step_s)
        kw.setdefault("replay_min_share", 0.01)
        if meth == "replay":
            kw["_keep_run"] = True
        t = tool(gpu_arg, args, **kw)
        b.sync()
        t.start(wl.model)
        secs = b.run_steps(wl, n)
        t1 = time.perf_counter()
        res = t.stop()
        stop_s = time.perf_counter() - t1
        if meth == "replay":
            kept = t._last_run
        est = {}
        p_avg = res.total_energy_j.get(label, float("nan")) / res.elapsed_s
        host = res.clock.get("host_time_s", {})
        for r in res.layer_rows():
            if r["phase"] != "train":
                continue
            hf, hb = host.get(r["layer"] + "|train", (float("nan"), float("nan")))
            e = (hf + hb) * p_avg if meth == "seed" else r["%s_energy_j" % label]
            est[r["layer"]] = {"calls": r["calls"], "steps": r["steps"], "time_s": r["time_s"],
                               "j_per_call": e / r["calls"] if r["calls"] else float("nan"),
                               "power_w": r["%s_power_w" % label]}
        results[meth] = {"est": est, "steps": n, "loop_s": secs, "stop_s": stop_s, "sampling": res.sampling,
                         "replayed": getattr(res, "replayed", None), "rows_add_up": adds_up(res),
                         "clock": {k2: v for k2, v in res.clock.items() if k2 != "host_time_s"}}
        say("  %-8s %d steps, %.1f s loop, stop %.1f s" % (meth, n, secs, stop_s))
    # layers in the metric: >= 1% of the layers' time, one call per step (from the first method that ran)
    base = next(iter(results.values()))["est"] if results else {}
    tot = sum(v["time_s"] for v in base.values())
    big = [k2 for k2, v in base.items() if tot and v["time_s"] >= 0.01 * tot and v["calls"] == v["steps"]]
    iso = {}
    if kept is not None:
        iso_keys = [(k2, "train") for k2 in big]
        iso = {k2[0]: v for k2, v in b.isolated(wl, kept, iso_keys, graph=True).items()}
    summary = {"workload": name, "layers": len([k2 for k2 in big if k2 in iso]), "step_s": step_s, "mae": {},
               "per_layer": {}}
    for meth, r in results.items():
        errs = {k2: rel_err(r["est"].get(k2, {}).get("j_per_call"), iso[k2]["j_per_call"]) for k2 in big if k2 in iso}
        summary["mae"][meth] = mean(list(errs.values()))
        summary["per_layer"][meth] = errs
        rec.write("net_method", workload=name, method=meth, err=errs, mae=summary["mae"][meth],
                  **{k2: v for k2, v in r.items() if k2 != "est"}, est=r["est"])
    rec.write("net_reference", workload=name, isolated=iso)
    say("  per-layer MAE (%d layers): %s" % (summary["layers"], ", ".join(
        "%s %.1f%%" % (m, 100 * v) for m, v in summary["mae"].items())))
    rec.write("net_summary", **summary)
    del wl, kept
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return summary


def _bl_args(args):
    """The arguments bench_layerwise's helpers read."""
    ns = argparse.Namespace(quick=args.fake, batch=None, precision="bf16", scale=1.0, rounds=1,
                            sampled_seconds=args.run_seconds, replay_seconds=args.replay_seconds,
                            iso_seconds=args.iso_seconds, budget=args.budget)
    return ns


# ----------------------------------------------------------------------------------------------------------------
# (c) overhead on a 12-block transformer


def overhead(args, torch, device, gpu_arg, label, rec):
    nn = torch.nn
    if args.fake:
        d, heads, ff, seq, batch, blocks = 32, 4, 64, 16, 4, 2
        lengths = (6, 40)
    else:
        d, heads, ff, seq, batch, blocks = 1024, 16, 4096, 512, 16, 12
        lengths = (60, 800)
    layer = nn.TransformerEncoderLayer(d, heads, ff, dropout=0.1, activation=nn.GELU(), batch_first=True)
    model = nn.TransformerEncoder(layer, blocks, enable_nested_tensor=False).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, seq, d, generator=g).to(device)
    amp = device.type == "cuda"

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = model(x).float().square().mean()
        loss.backward()
        opt.step()

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def plain(n):
        sync()
        t0 = time.perf_counter()
        for _ in range(n):
            step()
        sync()
        return time.perf_counter() - t0

    def with_tool(n, **kw):
        t = tool(gpu_arg, args, **kw)
        sync()
        t0 = time.perf_counter()
        t.start(model)
        t1 = time.perf_counter()
        for _ in range(n):
            step()
        sync()
        t2 = time.perf_counter()
        res = t.stop()
        t3 = time.perf_counter()
        return {"start_s": t1 - t0, "loop_s": t2 - t1, "stop_s": t3 - t2, "sampling": res.sampling,
                "lead_s": res.clock.get("lead_s"), "replayed": len(getattr(res, "replayed", []) or []),
                "notes": res.clock.get("notes"), "cost": res.clock.get("cost")}

    plain(max(3, lengths[0] // 4))
    step_s = plain(5) / 5
    say("overhead: 12-block transformer (d %d, seq %d, batch %d), %.2f ms per step" % (d, seq, batch, 1e3 * step_s))
    out = {"step_s": step_s, "runs": []}
    plans = [(lengths[0], "default", {}, 3), (lengths[0], "seed", {"sample": "all"}, 1), (lengths[1], "default", {}, 1)]
    if any(m == "before" for m, _ in method_list(args)):
        plans.insert(1, (lengths[0], "before", BEFORE, 2))
    for n, meth, kw, reps in plans:
        for k in range(reps):
            need = n * step_s * 3.5 + 5
            if bl.elapsed() + need > args.budget:
                rec.write("skipped", what="overhead %s %d steps" % (meth, n), reason="budget")
                continue
            off_a = plain(n)
            on = with_tool(n, **kw)
            off_b = plain(n)
            off = 0.5 * (off_a + off_b)
            item = {"steps": n, "method": meth, "round": k, "off_s": [off_a, off_b], **on,
                    "loop_overhead_pct": 100 * (on["loop_s"] / off - 1),
                    "total_overhead_pct": 100 * ((on["start_s"] + on["loop_s"] + on["stop_s"]) / off - 1)}
            rec.write("overhead_run", **item)
            out["runs"].append(item)
            smp = on["sampling"].get("train", {})
            say("  %-7s %4d steps: %.2f s without, loop %.2f s with (%+.1f%%), start %.2f s, stop %.2f s "
                "(%+.1f%% in all); %s of %s steps sampled, leads %.2f s" % (
                    meth, n, off, on["loop_s"], item["loop_overhead_pct"], on["start_s"], on["stop_s"],
                    item["total_overhead_pct"], smp.get("sampled_steps"), smp.get("steps"), on["lead_s"] or 0))
    del model, opt
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


# ----------------------------------------------------------------------------------------------------------------


def table(four, nets, ovh, run_s):
    lines = ["per-layer MAE of GPU energy per call against each layer alone (lower is better)"]
    meths = ["default", "default5m", "before", "replay", "seed"]
    lines.append("%-16s %7s" % ("workload", "layers") + "".join(" %9s" % m for m in meths) +
                 "   default per layer / powers (W): default vs alone")
    for f in four:
        ms = f["methods"]
        names = list(f["ref"])
        d = ms.get("default")
        detail = ""
        if d:
            detail = " / ".join("%.0f%%" % (100 * d["err"][nm]) for nm in names) + "; " + " ".join(
                "%.0f:%.0f" % (d["per_layer"].get(nm, {}).get("power_w", float("nan")), f["ref"][nm]["power_w"])
                for nm in names)
        lines.append("%-16s %7d" % ("four/" + f["size"], len(names)) + "".join(
            " %8.1f%%" % (100 * ms[m]["mae"]) if m in ms else " %9s" % "-" for m in meths) + "   " + detail)
    for s in nets:
        lines.append("%-16s %7d" % (s["workload"], s["layers"]) + "".join(
            " %8.1f%%" % (100 * s["mae"][m]) if m in s["mae"] else " %9s" % "-" for m in meths))
    if ovh:
        lines.append("")
        lines.append("overhead, 12-block transformer training (%.1f ms per step): loop time with the tool / without"
                     " (neighbouring runs) - 1; 'all' adds start() + stop()" % (1e3 * ovh["step_s"]))
        by = {}
        for r in ovh["runs"]:
            by.setdefault((r["method"], r["steps"]), []).append(r)
        for (m, n), rs in by.items():
            lines.append("  %-8s %4d steps: loop %+6.1f%%, all %+6.1f%% (median of %d; start %.2f s, stop %.2f s)" % (
                m, n, statistics.median(r["loop_overhead_pct"] for r in rs),
                statistics.median(r["total_overhead_pct"] for r in rs), len(rs),
                statistics.median(r["start_s"] for r in rs), statistics.median(r["stop_s"] for r in rs)))
    lines.append("default: the tool's defaults over this run (%s); default5m: the same with the replay budget a "
                 "5-minute run gets (5%% of 300 s: replay_budget = 15 s / this run's length); before: the default "
                 "before issue 17 (no knots, no replay); seed: host time in hooks x the run's average power."
                 % ("runs of about %.0f s" % run_s))
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fake", action="store_true", help="tiny sizes on the CPU against the fake NVML")
    ap.add_argument("--out", default=None)
    ap.add_argument("--gpu", type=int, default=0)
    ap.add_argument("--parts", default="four,resnet50,encoder,overhead")
    ap.add_argument("--sizes", default="short,long")
    ap.add_argument("--methods", default="default,default5m,before,replay,seed")
    ap.add_argument("--run-seconds", type=float, default=6.0, help="length of each tool run (a, b)")
    ap.add_argument("--iso-seconds", type=float, default=1.5, help="each layer alone, s")
    ap.add_argument("--replay-seconds", type=float, default=1.0)
    ap.add_argument("--budget", type=float, default=440.0)
    args = ap.parse_args(argv)
    if args.fake:
        args.replay_seconds = min(args.replay_seconds, 0.1)
        args.iso_seconds = min(args.iso_seconds, 1.0)
    warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
    import torch

    out_dir = args.out or os.environ.get("OUT") or os.path.join(HERE, "results")
    os.makedirs(out_dir, exist_ok=True)
    suffix = "-fake" if args.fake else ""
    rec = bl.Recorder(os.path.join(out_dir, "layerwise17%s.jsonl" % suffix))
    if args.fake:
        device = torch.device("cpu")
    else:
        if not torch.cuda.is_available():
            ap.error("no CUDA GPU: run with --fake to check the script on the CPU")
        device = torch.device("cuda", args.gpu)
        torch.cuda.set_device(device)
    import joulecap

    gpus = [d for d in joulecap.devices("all") if d["kind"] == "gpu"]
    gpu_arg = args.gpu if any(d["index"] == args.gpu for d in gpus) else None
    label = "gpu%d" % args.gpu if gpu_arg is not None else "cpu"
    bargs = _bl_args(args)
    bargs.gpu = args.gpu if gpu_arg is not None else None
    meta = bl.collect_meta(bargs, torch, device)
    meta["args17"] = vars(args)
    rec.write("meta", **meta)
    methods = method_list(args)
    say("issue-17 layer-wise benchmark on %s (%s), %s energy; methods %s" % (
        device, meta.get("card", "CPU"), label, [m for m, _ in methods]))
    torch.manual_seed(0)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    four, nets, ovh = [], [], None
    if "four" in parts:
        fb = FourBench(args, torch, device, gpu_arg, label, rec)
        for size in [s.strip() for s in args.sizes.split(",") if s.strip()]:
            if bl.elapsed() + 30 > args.budget:
                rec.write("skipped", what="four/%s" % size, reason="budget")
                continue
            four.append(fb.run(size, methods))
    if "overhead" in parts:
        ovh = overhead(args, torch, device, gpu_arg, label, rec)
    for name in ("resnet50", "encoder"):
        if name in parts:
            if bl.elapsed() + 40 > args.budget:
                rec.write("skipped", what=name, reason="budget")
                continue
            nets.append(net_workload(name, args, torch, device, gpu_arg, label, rec, methods))
    text = table(four, nets, ovh, 1.0 if args.fake else args.run_seconds)
    rec.write("table", text=text, total_s=elapsed())
    with open(os.path.join(out_dir, "layerwise17%s-table.txt" % suffix), "w") as f:
        f.write(text + "\n")
    print()
    print(text)
    print("total %.1f s; JSON lines in %s" % (elapsed(), rec.path))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Python-side benchmarks of issue 3 (run by bench/run_python.sh on the GPU machine; results in BENCHMARKS.md).

Part 1, "pairs": the cost of one start()+stop() pair from Python, side by side in one process:
  * joulecap ``EnergyMeasurementTool`` (CSV in /tmp; and without a CSV): wall time per pair, timed one pair at a
    time; then "with resolution": the same pairs plus reading each result once resolved, and the process CPU
    per pair spent by joulecap's C threads resolving the windows and writing their rows (net of the sampler's
    idle rate, measured just before);
  * the seed's method: ``time.time()`` and pynvml ``nvmlDeviceGetTotalEnergyConsumption`` (and the socket-0
    RAPL file where it is readable, as the seed did) at both edges;
  * Zeus ``ZeusMonitor(gpu_indices=[gpu], approx_instant_energy=True).begin_window/end_window`` with
    ``sync_execution=False`` (joulecap does no CUDA sync either);
  * CodeCarbon ``OfflineEmissionsTracker(...).start_task/stop_task`` (offline, default measure_power_secs).
  p50/p90 per pair and the ratio to joulecap's p50.

Part 2, "train": the effect of measuring on the throughput of a training loop (ResNet-50 from torchvision,
synthetic batch of 64 at 224x224, bf16 autocast on CUDA, channels_last, SGD with momentum; each step ends with
torch.cuda.synchronize(), and each step is timed).  Each condition runs as a block (default 3 untimed steps with
the tool already running, then 30 timed steps); the blocks are interleaved and rotated over rounds
(A B C.., B C.. A, ...; default 5 rounds, no new round once 200 s have passed) to control drift:
  none; joulecap AsynchronousMeasurementTool.start(interval=0.01); the seed's multiprocessing sampler at
  0.01 s (bench/seed_async.py); joulecap EnergyMeasurementTool window around every step; Zeus window around
  every step (its usual sync_execution=True); CodeCarbon OfflineEmissionsTracker running (measure_power_secs=1).
  Reported: median step time, slowdown vs none (pooled medians, and the median over rounds of the ratio to the
  same round's none block), rows written per second by the two asynchronous samplers.

``--quick`` runs everything tiny on the CPU (ResNet-18 at 64x64, batch 4, few steps) so that it can be tried
without a GPU against joulecap's fake NVML:

  JOULECAP_NVML_LIBRARY=$(python -c 'import joulecap._paths as p; print(p.fake_nvml_library())') \
  JOULECAP_FAKE_NVML_SCENARIO=tests/scenarios/h100-constant-300w.scn python bench/bench_python.py --quick

Output: JSON lines (``--out DIR``/python.jsonl, default $OUT or bench/results), the table last on stdout (and in
DIR/python-table.txt).  Read-only NVML: nothing on the GPU is changed.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import seed_async  # noqa: E402

T_START = time.monotonic()


# ----------------------------------------------------------------------------------------------------------------
# small helpers


def quantile(xs, q):
    """Linear-interpolated quantile of a non-empty sequence."""
    s = sorted(xs)
    if not s:
        return float("nan")
    pos = (len(s) - 1) * q
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def elapsed():
    return time.monotonic() - T_START


def log(msg):
    print("[%6.1fs] %s" % (elapsed(), msg), flush=True)


class Recorder:
    def __init__(self, path):
        self.path = path
        self.f = open(path, "w")

    def write(self, kind, **fields):
        rec = {"kind": kind, **fields}
        self.f.write(json.dumps(_strict(rec), default=str) + "\n")
        self.f.flush()
        return rec


def _strict(o):
    """NaN and infinities as null, so that the lines are strict JSON."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _strict(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_strict(v) for v in o]
    return o


def _finite(x):
    return x if isinstance(x, (int, float)) and math.isfinite(x) else None


def tmp_path(name):
    return os.path.join(tempfile.gettempdir(), "jcbench-%d-%s" % (os.getpid(), name))


def count_rows(path):
    try:
        with open(path) as f:
            return max(0, sum(1 for _ in f) - 1)
    except OSError:
        return None


# ----------------------------------------------------------------------------------------------------------------
# environment


def collect_meta(args):
    meta = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": os.environ.get("JCB_COMMAND") or " ".join(shlex.quote(a) for a in [sys.executable] + sys.argv),
        "script_command": " ".join(shlex.quote(a) for a in [sys.executable] + sys.argv),
        "git_commit": os.environ.get("JCB_GIT_COMMIT"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "quick": args.quick,
        "fake_nvml": seed_async.fake_nvml_path(),
        "fake_nvml_scenario": os.environ.get("JOULECAP_FAKE_NVML_SCENARIO") if seed_async.fake_nvml_path() else None,
    }
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    meta["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import joulecap

        meta["joulecap"] = joulecap.__version__
        meta["joulecap_lib"] = joulecap.__lib_version__
        meta["joulecap_devices"] = [
            {k: d.get(k) for k in ("index", "name", "energy_source", "energy_note") if k in d}
            for d in joulecap.devices(args.gpu)
        ]
    except Exception as e:  # recorded, not fatal: the parts say what failed
        meta["joulecap_error"] = repr(e)
    try:
        import pynvml

        pynvml.nvmlInit()
        h = pynvml.nvmlDeviceGetHandleByIndex(args.gpu)
        name = pynvml.nvmlDeviceGetName(h)
        drv = pynvml.nvmlSystemGetDriverVersion()
        meta["card"] = name.decode() if isinstance(name, bytes) else name
        meta["driver"] = drv.decode() if isinstance(drv, bytes) else drv
        pynvml.nvmlShutdown()
    except Exception as e:
        meta["nvml_error"] = repr(e)
    try:
        import torch

        meta["torch"] = torch.__version__
        meta["torch_cuda"] = torch.version.cuda
        meta["cuda_available"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            meta["torch_device_name"] = torch.cuda.get_device_name(0)
        import torchvision

        meta["torchvision"] = torchvision.__version__
    except Exception as e:
        meta["torch_error"] = repr(e)
    for mod in ("zeus", "codecarbon", "pynvml", "psutil", "numpy"):
        try:
            from importlib.metadata import version

            dist = {"pynvml": "nvidia-ml-py"}.get(mod, mod)
            meta[mod + "_version"] = version(dist)
        except Exception:
            meta[mod + "_version"] = None
    return meta


def quiet_third_parties():
    import logging

    for name in ("zeus", "codecarbon"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*energy consumption of one or more GPUs was measured as zero.*")


def make_codecarbon_tracker(gpu, **kw):
    """An offline CodeCarbon tracker that never tries the network (no API, no geo lookup, no files)."""
    from codecarbon import OfflineEmissionsTracker

    args = dict(
        country_iso_code="USA",
        save_to_file=False,
        save_to_api=False,
        save_to_logger=False,
        save_to_prometheus=False,
        save_to_logfire=False,
        gpu_ids=[gpu],
        allow_multiple_runs=True,
        log_level="error",
        tracking_mode="machine",
        output_dir=tempfile.gettempdir(),
    )
    args.update(kw)
    # Its __init__ swallows every exception (codecarbon.core.util.suppress): check that it really initialised.
    t = OfflineEmissionsTracker(**args)
    if not hasattr(t, "_measure_power_secs"):
        raise RuntimeError("CodeCarbon's tracker did not initialise (its __init__ swallowed the error)")
    return t


# ----------------------------------------------------------------------------------------------------------------
# part 1: start()+stop() pairs


def time_pairs(begin, end, n, seconds):
    """Per-pair wall times (ns) of begin(); end(), for n pairs or until `seconds` ran out."""
    pc = time.perf_counter_ns
    deadline = pc() + int(seconds * 1e9)
    out = []
    append = out.append
    for i in range(n):
        t0 = pc()
        begin()
        end()
        t1 = pc()
        append(t1 - t0)
        if (i & 7) == 7 and t1 > deadline:
            break
    return out


def summarize_ns(ts):
    us = [t / 1000 for t in ts]
    return {
        "n": len(us),
        "p50_us": quantile(us, 0.5),
        "p10_us": quantile(us, 0.1),
        "p90_us": quantile(us, 0.9),
        "p99_us": quantile(us, 0.99),
        "mean_us": statistics.fmean(us) if us else float("nan"),
        "min_us": min(us) if us else float("nan"),
        "max_us": max(us) if us else float("nan"),
    }


def pairs_timer_floor(args, rec):
    noop = lambda: None  # noqa: E731
    time_pairs(noop, noop, 2000, 1)
    s = summarize_ns(time_pairs(noop, noop, args.pairs, 2))
    return rec.write("pair", method="timer floor (two empty calls)", **s)


def pairs_joulecap(args, rec):
    from joulecap import EnergyMeasurementTool

    results = []
    n = args.pairs
    # -- with a CSV in /tmp: the brief's case ------------------------------------------------------------------
    csv_path = tmp_path("pairs.csv")
    tool = EnergyMeasurementTool(out_file=csv_path, gpu_num=args.gpu)
    sources = tool.devices
    time.sleep(args.settle)  # let the sampler lock on to the counter's steps before timing
    warm = [None] * 1000
    for i in range(len(warm)):
        tool.start()
        warm[i] = tool.stop()
    tool.flush(30)
    del warm
    # the sampler's (and idle resolver's) CPU rate with no windows coming, to subtract below
    c0, w0 = time.process_time(), time.monotonic()
    time.sleep(args.idle_s)
    idle_rate = (time.process_time() - c0) / (time.monotonic() - w0)

    ms = [None] * n
    k = [0]
    start, stop = tool.start, tool.stop

    def end():
        ms[k[0]] = stop()
        k[0] += 1

    gc.collect()
    c0, w0 = time.process_time(), time.monotonic()
    ts = time_pairs(start, end, n, 1e9)
    w_loop = time.monotonic() - w0
    flushed = tool.flush(60)
    w_all = time.monotonic() - w0
    cpu_all = time.process_time() - c0
    # reading each (already resolved) result once: what using the result adds to the pair
    pc = time.perf_counter_ns
    reads = []
    energies = []
    for m in ms:
        t0 = pc()
        e = m.total_energy_j
        reads.append(pc() - t0)
        energies.append(e)
    unresolved = sum(1 for m in ms if not m.resolved)
    tool.close()
    rows = count_rows(csv_path)
    s = summarize_ns(ts)
    r = summarize_ns(reads)
    cpu_net = cpu_all - idle_rate * w_all
    results.append(
        rec.write(
            "pair",
            method="joulecap EnergyMeasurementTool start()+stop() (CSV in /tmp)",
            short="joulecap",
            **s,
            loop_wall_s=w_loop,
            flush_ok=flushed,
            flush_wall_s=w_all - w_loop,
            csv_rows=rows,
            csv_rows_expected=n + 1000,
            unresolved=unresolved,
            sources={d.get("name", "?"): d.get("energy_source") for d in sources},
            result_read_p50_us=r["p50_us"],
            result_read_p90_us=r["p90_us"],
            pair_plus_result_p50_us=s["p50_us"] + r["p50_us"],
            sampler_idle_cpu_pct=100 * idle_rate,
            process_cpu_per_pair_us=1e6 * cpu_all / n,
            process_cpu_per_pair_net_us=1e6 * cpu_net / n,
            mean_window_energy_j=statistics.fmean(e for e in energies if math.isfinite(e)) if energies else None,
        )
    )
    ms.clear()  # free the 20000 results before the next part
    energies.clear()
    # -- no CSV: the pair alone, no row writer -----------------------------------------------------------------
    tool = EnergyMeasurementTool(out_file=None, gpu_num=args.gpu)
    time.sleep(min(args.settle, 0.5))
    ms2 = [None] * n
    k2 = [0]
    stop2 = tool.stop

    def end2():
        ms2[k2[0]] = stop2()
        k2[0] += 1

    time_pairs(tool.start, lambda: tool.stop(), 1000, 5)
    gc.collect()
    ts = time_pairs(tool.start, end2, n, 1e9)
    tool.close()
    results.append(
        rec.write("pair", method="joulecap EnergyMeasurementTool start()+stop() (out_file=None)", short="joulecap-nocsv", **summarize_ns(ts))
    )
    return results


def read_rapl0():
    try:
        with open(seed_async.RAPL_FILE) as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def pairs_seed(args, rec):
    import pynvml

    pynvml.nvmlInit()
    h = pynvml.nvmlDeviceGetHandleByIndex(args.gpu)
    rapl = read_rapl0() is not None
    get = pynvml.nvmlDeviceGetTotalEnergyConsumption
    state = {}

    def begin():
        state["t"] = time.time()
        state["g"] = get(h)
        if rapl:
            state["c"] = read_rapl0()

    def end():
        t = time.time() - state["t"]
        g = get(h) - state["g"]
        c = (read_rapl0() - state["c"]) if rapl else None
        state["last"] = (t, g, c)

    time_pairs(begin, end, 3, 1)
    ts = time_pairs(begin, end, args.pairs, args.edge_seconds)
    pynvml.nvmlShutdown()
    return rec.write(
        "pair",
        method="seed: time.time() + pynvml nvmlDeviceGetTotalEnergyConsumption%s at both edges"
        % (" + RAPL socket 0" if rapl else ""),
        short="seed",
        rapl_read=rapl,
        **summarize_ns(ts),
    )


def pairs_zeus(args, rec):
    from zeus.monitor import ZeusMonitor

    t0 = time.monotonic()
    mon = ZeusMonitor(gpu_indices=[args.gpu], approx_instant_energy=True)
    init_s = time.monotonic() - t0
    begin = lambda: mon.begin_window("w", sync_execution=False)  # noqa: E731
    end = lambda: mon.end_window("w", sync_execution=False)  # noqa: E731
    time_pairs(begin, end, 3, 1)
    ts = time_pairs(begin, end, args.pairs, args.edge_seconds)
    return rec.write(
        "pair",
        method="Zeus ZeusMonitor.begin_window+end_window (sync_execution=False, approx_instant_energy=True)",
        short="zeus",
        import_s=args.import_s.get("zeus"),
        init_s=init_s,
        cpus=type(mon.cpus).__name__,
        cpu_indices=list(mon.cpu_indices),
        **summarize_ns(ts),
    )


def pairs_codecarbon(args, rec):
    import codecarbon

    t0 = time.monotonic()
    tr = make_codecarbon_tracker(args.gpu)
    init_s = time.monotonic() - t0
    res = {}

    # No task names: a name used before gets a uuid appended by start_task, and stop_task(name) would then stop
    # the old task; without names each task gets a uuid and stop_task() stops the active one (its normal use).
    def begin():
        tr.start_task()

    def end():
        res["last"] = tr.stop_task()

    t0 = time.monotonic()
    time_pairs(begin, end, 1, 60)  # the first start_task sets up the hardware (not timed below)
    first_s = time.monotonic() - t0
    ts = time_pairs(begin, end, args.pairs, args.edge_seconds)
    last = res.get("last")
    hw = [type(h).__name__ for h in getattr(tr, "_hardware", [])]
    ok = last is not None
    try:
        tr.stop()
    except Exception:
        pass
    return rec.write(
        "pair",
        method="CodeCarbon OfflineEmissionsTracker.start_task+stop_task (offline, measure_power_secs default)",
        short="codecarbon",
        version=codecarbon.__version__,
        import_s=args.import_s.get("codecarbon"),
        init_s=init_s,
        first_pair_s=first_s,
        hardware=hw,
        gpu_tracked="GPU" in hw,
        stop_task_returned_data=ok,
        last_gpu_energy_kwh=getattr(last, "gpu_energy", None),
        **summarize_ns(ts),
    )


# ----------------------------------------------------------------------------------------------------------------
# part 2: training throughput


class Trainer:
    def __init__(self, args):
        import torch
        import torchvision

        self.torch = torch
        self.cuda = torch.cuda.is_available() and not args.cpu
        self.device = torch.device("cuda", 0) if self.cuda else torch.device("cpu")
        if self.cuda:
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.dtype = args.dtype or ("bf16" if self.cuda else "fp32")
        if args.quick:
            torch.set_num_threads(1)  # a small CPU: no OpenMP threads spinning against the samplers
        torch.manual_seed(0)
        model = getattr(torchvision.models, args.model)(num_classes=1000)
        self.model = model.to(self.device, memory_format=torch.channels_last)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)
        self.x = torch.randn(args.batch, 3, args.size, args.size, device=self.device).contiguous(
            memory_format=torch.channels_last
        )
        self.y = torch.randint(0, 1000, (args.batch,), device=self.device)
        self.loss_fn = torch.nn.CrossEntropyLoss()
        self.describe = "%s, batch %d at %dx%d, %s%s, channels_last, SGD momentum, on %s" % (
            args.model,
            args.batch,
            args.size,
            args.size,
            self.dtype,
            " autocast" if self.dtype == "bf16" else "",
            self.device,
        )

    def step(self):
        torch = self.torch
        if self.dtype == "bf16":
            with torch.autocast(self.device.type, dtype=torch.bfloat16):
                loss = self.loss_fn(self.model(self.x), self.y)
        else:
            loss = self.loss_fn(self.model(self.x), self.y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.sync()

    def sync(self):
        if self.cuda:
            self.torch.cuda.synchronize()


class Condition:
    """One way of measuring (or not) while training: setup before a block, hooks around each step, teardown."""

    name = "?"
    per_step = False

    def setup(self, block):
        pass

    def begin(self):
        pass

    def end(self):
        pass

    def teardown(self):
        return {}


class NoneCondition(Condition):
    name = "none"


class JoulecapAsync(Condition):
    name = "joulecap async 10 ms"

    def __init__(self, args):
        self.args = args

    def setup(self, block):
        from joulecap import AsynchronousMeasurementTool

        self.path = tmp_path("async-%d.csv" % block)
        self.tool = AsynchronousMeasurementTool(out_file=self.path, gpu_num=self.args.gpu)
        self.tool.start(interval=0.01)
        self.t0 = time.monotonic()

    def teardown(self):
        self.tool.stop()
        dur = time.monotonic() - self.t0
        rows = count_rows(self.path)
        os.unlink(self.path)
        return {"rows": rows, "rows_per_s": rows / dur if rows else 0.0}


class SeedAsync(Condition):
    name = "seed async 10 ms"

    def __init__(self, args):
        self.args = args

    def setup(self, block):
        self.path = tmp_path("seed-%d.csv" % block)
        self.tool = seed_async.AsynchronousMeasurementTool(out_file=self.path, gpu_num=self.args.gpu)
        self.tool.start(0.01)
        self.t0 = time.monotonic()

    def teardown(self):
        self.tool.stop()
        dur = time.monotonic() - self.t0
        rows = count_rows(self.path)
        os.unlink(self.path)
        return {"rows": rows, "rows_per_s": rows / dur if rows else 0.0}


class JoulecapWindows(Condition):
    name = "joulecap window/step"
    per_step = True

    def __init__(self, args):
        self.args = args

    def setup(self, block):
        from joulecap import EnergyMeasurementTool

        self.path = tmp_path("win-%d.csv" % block)
        self.tool = EnergyMeasurementTool(out_file=self.path, gpu_num=self.args.gpu)
        self.begin = self.tool.start
        self.ms = []
        self.stop = self.tool.stop

    def end(self):
        self.ms.append(self.stop())

    def teardown(self):
        self.tool.close()
        e = [m.total_gpu_energy_j for m in self.ms]
        rows = count_rows(self.path)
        os.unlink(self.path)
        return {"rows": rows, "mean_step_gpu_energy_j": _finite(statistics.fmean(e)) if e else None}


class ZeusWindows(Condition):
    name = "zeus window/step"
    per_step = True

    def __init__(self, args, cuda):
        from zeus.monitor import ZeusMonitor

        self.mon = ZeusMonitor(gpu_indices=[args.gpu], approx_instant_energy=True)
        self.sync = cuda  # Zeus's default; on the CPU (quick mode) it would raise

    def setup(self, block):
        self.ms = []

    def begin(self):
        self.mon.begin_window("step", sync_execution=self.sync)

    def end(self):
        self.ms.append(self.mon.end_window("step", sync_execution=self.sync))

    def teardown(self):
        e = [sum(m.gpu_energy.values()) for m in self.ms]
        return {"mean_step_gpu_energy_j": _finite(statistics.fmean(e)) if e else None}


class CodeCarbonRunning(Condition):
    name = "codecarbon tracker 1 s"

    def __init__(self, args):
        self.args = args

    def setup(self, block):
        self.tr = make_codecarbon_tracker(self.args.gpu, measure_power_secs=1)
        self.tr.start()

    def teardown(self):
        return {"emissions_kg": self.tr.stop()}


def run_training(args, rec, have):
    log("training: building the model")
    tr = Trainer(args)
    conds = [NoneCondition(), JoulecapAsync(args), SeedAsync(args), JoulecapWindows(args)]
    if have.get("zeus"):
        try:
            conds.append(ZeusWindows(args, tr.cuda))
        except Exception as e:
            rec.write("train_error", condition=ZeusWindows.name, error=repr(e))
            log("training: %s left out: %r" % (ZeusWindows.name, e))
    if have.get("codecarbon"):
        conds.append(CodeCarbonRunning(args))
    if args.conditions:
        wanted = [c.strip() for c in args.conditions.split(",")]
        conds = [c for c in conds if any(w in c.name for w in wanted) or c.name == "none"]
    rec.write("train_setup", workload=tr.describe, conditions=[c.name for c in conds], steps=args.steps,
              warmup=args.warmup, rounds=args.rounds)
    log("training: %s; global warm-up %d steps" % (tr.describe, args.global_warmup))
    t0 = time.monotonic()
    for _ in range(args.global_warmup):
        tr.step()
    log("training: warm-up took %.1f s" % (time.monotonic() - t0))
    times = {c.name: [] for c in conds}
    block_medians = {c.name: [] for c in conds}
    extras = {c.name: [] for c in conds}
    block = 0
    round_s = None
    rounds_done = 0
    for r in range(args.rounds):
        if round_s is not None and elapsed() + round_s > args.max_seconds:
            log("training: stopping after %d rounds (time budget %.0f s)" % (r, args.max_seconds))
            break
        r0 = time.monotonic()
        order = conds[r % len(conds):] + conds[: r % len(conds)]
        for c in order:
            block += 1
            try:
                c.setup(block)
                for _ in range(args.warmup):
                    c.begin()
                    tr.step()
                    c.end()
                st = []
                pc = time.perf_counter
                for _ in range(args.steps):
                    t = pc()
                    c.begin()
                    tr.step()
                    c.end()
                    st.append(pc() - t)
                extra = c.teardown() or {}
            except Exception as e:  # one broken tool must not lose the others' numbers
                try:
                    c.teardown()
                except Exception:
                    pass
                rec.write("train_error", condition=c.name, round=r, error=repr(e))
                log("training: %s failed: %r" % (c.name, e))
                continue
            times[c.name].extend(st)
            block_medians[c.name].append((r, statistics.median(st)))
            extras[c.name].append(extra)
            rec.write("train_block", condition=c.name, round=r, block=block, median_s=statistics.median(st),
                      step_s=st, **{k: v for k, v in extra.items() if not callable(v)})
        rounds_done = r + 1
        round_s = time.monotonic() - r0
        log("training: round %d took %.1f s" % (r, round_s))
    base = times["none"]
    base_med = statistics.median(base) if base else float("nan")
    base_rounds = dict(block_medians["none"])
    noise = None
    if len(base_rounds) >= 2:
        v = list(base_rounds.values())
        noise = 100 * (max(v) / min(v) - 1)
    out = []
    for c in conds:
        st = times[c.name]
        if not st:
            continue
        med = statistics.median(st)
        paired = [100 * (m / base_rounds[r] - 1) for r, m in block_medians[c.name] if r in base_rounds]
        ex = extras[c.name]
        rows_per_s = [e.get("rows_per_s") for e in ex if e.get("rows_per_s") is not None]
        out.append(
            rec.write(
                "train",
                condition=c.name,
                n_steps=len(st),
                rounds=rounds_done,
                median_step_ms=1e3 * med,
                p90_step_ms=1e3 * quantile(st, 0.9),
                slowdown_pct=100 * (med / base_med - 1),
                slowdown_paired_pct=statistics.median(paired) if paired else None,
                slowdown_paired_each_pct=paired,
                none_block_spread_pct=noise,
                rows_per_s=statistics.fmean(rows_per_s) if rows_per_s else None,
                workload=tr.describe,
            )
        )
    return out


# ----------------------------------------------------------------------------------------------------------------
# table


def fmt(x, nd=1):
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    if abs(x) >= 1000:
        return "%.0f" % x
    return ("%." + str(nd) + "f") % x


def table(meta, pairs, train):
    lines = []
    lines.append(
        "# %s | %s | driver %s | torch %s | python %s%s"
        % (meta["date_utc"], meta.get("card", "no NVML"), meta.get("driver", "-"), meta.get("torch", "-"),
           meta["python"], " | FAKE NVML" if meta.get("fake_nvml") else "")
    )
    lines.append("# command: %s" % meta["command"])
    jc = next((p for p in pairs if p.get("short") == "joulecap"), None)
    ref = jc["p50_us"] if jc else None
    lines.append("")
    lines.append("start()+stop() per pair from Python      n      p50 us    p90 us   x joulecap")
    for p in pairs:
        ratio = p["p50_us"] / ref if ref else None
        lines.append(
            "%-38s %6d %10s %9s %11s"
            % ((p.get("short") or p["method"])[:38], p["n"], fmt(p["p50_us"], 2), fmt(p["p90_us"], 2),
               fmt(ratio, 1) if p.get("short") not in ("joulecap", None) else "1.0" if p.get("short") == "joulecap" else "")
        )
    if jc:
        lines.append(
            "joulecap: + result read p50 %s us (pair+result %s us); process CPU per pair incl. resolver+CSV %s us "
            "(net of sampler idle %s%% of a core); CSV rows %s/%s"
            % (fmt(jc["result_read_p50_us"], 2), fmt(jc["pair_plus_result_p50_us"], 2),
               fmt(jc["process_cpu_per_pair_net_us"], 2), fmt(jc["sampler_idle_cpu_pct"], 1), jc["csv_rows"],
               jc["csv_rows_expected"])
        )
    if train:
        lines.append("")
        lines.append("training: %s" % train[0]["workload"])
        lines.append("condition                    steps  median ms  slowdown %  paired %  rows/s")
        for t in train:
            lines.append(
                "%-28s %5d %10s %11s %9s %7s"
                % (t["condition"], t["n_steps"], fmt(t["median_step_ms"], 2), fmt(t["slowdown_pct"], 2),
                   fmt(t["slowdown_paired_pct"], 2), fmt(t["rows_per_s"], 0))
            )
        if train[0].get("none_block_spread_pct") is not None:
            lines.append("spread of the none blocks' medians across rounds: %s %%" % fmt(train[0]["none_block_spread_pct"], 2))
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny CPU run for testing (fake NVML is fine)")
    ap.add_argument("--out", default=None, help="output folder (default $OUT, else bench/results)")
    ap.add_argument("--gpu", type=int, default=0, help="GPU (CUDA number = NVML index on a one-GPU machine)")
    ap.add_argument("--parts", default="pairs,train", help="pairs, train or both")
    ap.add_argument("--pairs", type=int, default=20000, help="joulecap pairs (others stop at --edge-seconds)")
    ap.add_argument("--edge-seconds", type=float, default=3.0, help="time for each edge-reading method's pairs")
    ap.add_argument("--settle", type=float, default=2.0, help="seconds between opening joulecap and timing")
    ap.add_argument("--idle-s", type=float, default=1.0, help="seconds to measure the sampler's idle CPU")
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--dtype", choices=["bf16", "fp32"], default=None, help="default: bf16 on CUDA, fp32 on CPU")
    ap.add_argument("--cpu", action="store_true", help="train on the CPU even if CUDA is there")
    ap.add_argument("--steps", type=int, default=30, help="timed steps per block")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps per block, measurement running")
    ap.add_argument("--global-warmup", type=int, default=15)
    ap.add_argument("--rounds", type=int, default=5, help="rounds (stops early at --max-seconds)")
    ap.add_argument("--conditions", default=None, help="comma list of substrings of condition names")
    ap.add_argument("--max-seconds", type=float, default=200, help="no new training round after this")
    args = ap.parse_args(argv)
    if args.quick:
        args.pairs = min(args.pairs, 3000)
        args.edge_seconds = min(args.edge_seconds, 0.5)
        args.settle = min(args.settle, 0.5)
        args.idle_s = min(args.idle_s, 0.5)
        args.model, args.batch, args.size = "resnet18", 4, 64
        args.steps, args.warmup, args.global_warmup, args.rounds = 4, 1, 8, 2
        args.cpu = True
    out_dir = args.out or os.environ.get("OUT") or os.path.join(HERE, "results")
    os.makedirs(out_dir, exist_ok=True)
    jsonl = os.path.join(out_dir, "python-quick.jsonl" if args.quick else "python.jsonl")
    rec = Recorder(jsonl)

    fake = seed_async.fake_pynvml()  # only when JOULECAP_NVML_LIBRARY names the fake
    quiet_third_parties()
    meta = rec.write("meta", **collect_meta(args))
    log("%s, driver %s, torch %s%s" % (meta.get("card"), meta.get("driver"), meta.get("torch"),
                                       ", FAKE NVML" if fake else ""))
    parts = {p.strip() for p in args.parts.split(",")}
    have = {}
    args.import_s = {}
    for mod in ("zeus.monitor", "codecarbon"):
        try:
            t0 = time.monotonic()
            __import__(mod)
            args.import_s[mod.split(".")[0]] = time.monotonic() - t0
            have[mod.split(".")[0]] = True
        except Exception as e:
            have[mod.split(".")[0]] = False
            rec.write("missing", module=mod, error=repr(e))
            log("%s cannot be imported: %r (left out)" % (mod, e))
    quiet_third_parties()  # again: importing them set their loggers' levels

    pairs = []
    if "pairs" in parts:
        steps = [("timer floor", pairs_timer_floor), ("joulecap", pairs_joulecap), ("seed", pairs_seed)]
        if have.get("zeus"):
            steps.append(("zeus", pairs_zeus))
        if have.get("codecarbon"):
            steps.append(("codecarbon", pairs_codecarbon))
        for label, fn in steps:
            log("pairs: %s" % label)
            try:
                r = fn(args, rec)
            except Exception as e:
                rec.write("pair_error", method=label, error=repr(e))
                log("pairs: %s failed: %r" % (label, e))
                continue
            for x in r if isinstance(r, list) else [r]:
                pairs.append(x)
                log("  %-60s p50 %9.2f us  n=%d" % (x["method"][:60], x["p50_us"], x["n"]))
    train = []
    if "train" in parts:
        try:
            train = run_training(args, rec, have)
        except Exception as e:
            rec.write("train_error", condition="all", error=repr(e))
            log("training failed: %r" % (e,))
            import traceback

            traceback.print_exc()
    txt = table(meta, pairs, train)
    rec.write("done", seconds=elapsed())
    with open(os.path.join(out_dir, "python-quick-table.txt" if args.quick else "python-table.txt"), "w") as f:
        f.write(txt + "\n")
    print()
    print(txt, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

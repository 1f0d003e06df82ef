"""What the trainer callbacks share: windows per epoch and per block of steps on one
:class:`~joulecap.EnergyMeasurementTool`, the metrics made of their results, the optional online power-cap
optimizer, and the final summary.  Nothing here imports a trainer package.

Metric names (``prefix`` default ``"energy/"``; ``scope`` is ``epoch`` or ``steps``):

* ``{prefix}{scope}_j``: joules, every measured device together (devices with no value left out: see coverage);
  ``{prefix}{scope}_{dev}_j`` per device (``cpu``, ``gpu0``, ... CUDA numbers);
* ``{prefix}{scope}_s``: seconds; ``{prefix}{scope}_power_w`` and ``{prefix}{scope}_{dev}_power_w``: mean power;
* ``{prefix}{scope}_coverage``: the smallest share of the window a device's value covers (1.0: whole); when it is
  below 1, ``{prefix}{scope}_{dev}_coverage`` for each partial device as well;
* with a grid intensity / price set (``joulecap.carbon``): ``{prefix}{scope}_kwh``, ``_gco2e``, ``_cost``;
* with the power-cap optimizer: ``{prefix}power_cap_w`` (the cap in force at the end of the epoch).

Under torch.distributed (job mode, docs/distributed.md) the same names hold the job's values, each GPU and each
host's CPU counted once, identical on every rank (rank 0's job result is broadcast): ``{scope}_j`` the job, ``{dev}``
each distinct device (on one host ``cpu``, ``gpu0``, ``gpu1``, ...; on several ``host0_cpu``, ``host1_gpu0``, ...,
hosts numbered in rank order), and in job mode only ``{scope}_gpu_j`` (every GPU), ``{scope}_hosts`` and
``{scope}_gpus`` (how many), on several hosts ``{scope}_host{h}_j`` per host and ``{scope}_cpu_j`` every host's CPU.
"""

from __future__ import annotations

import math
import sys
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

from .. import distributed as _distributed
from ..carbon import resolve as _resolve_carbon
from ..distributed import JobMeasurement
from ..errors import InvalidArgument, StateError
from ..measurement import EnergyMeasurementTool, Measurement, _check_interval

__all__ = ["TrainerMeter", "metrics_of"]


# --------------------------------------------------------------------------------------------------------------
# A window's result as metrics: the one place that knows both result types


class _Values(NamedTuple):
    """One window's values, whichever tool mode made them."""

    elapsed_s: float
    #: One dict per device: key (its metric name part), kind, energy_j, coverage, source, elapsed_s (its window).
    devices: List[Dict[str, Any]]
    #: Sums of devices logged as well: (name, device keys).  Job mode only.
    groups: List[Tuple[str, List[str]]]
    #: Counts logged as they are (job mode: hosts, gpus).
    counts: Dict[str, int]
    #: Job mode: host{h} -> {"host", "host_id", "ranks"}; empty for one process.
    hosts: Dict[str, Dict[str, Any]]
    carbon: Any


def _values(m: Any) -> _Values:
    if isinstance(m, JobMeasurement):
        return _job_values(m)
    if isinstance(m, Measurement):
        energy, cover, source, elapsed = m.energy_j, m.coverage, m.sources, m.elapsed_s
        devices = [{"key": d, "kind": "cpu" if d == "cpu" else "gpu", "energy_j": e, "coverage": cover[d],
                    "source": source[d], "elapsed_s": elapsed} for d, e in energy.items()]
        return _Values(elapsed, devices, [], {}, {}, m.carbon)
    raise TypeError("metrics_of() takes a joulecap Measurement or JobMeasurement, not %s" % type(m).__name__)


def _job_values(jm: JobMeasurement) -> _Values:
    """The job's distinct devices under metric keys: on one host ``cpu`` and each GPU's label (``gpu1``: the CUDA
    number of the lowest rank using it), on several hosts prefixed ``host{h}_`` (hosts in rank order).  Two GPUs
    of one host with one label (ranks that each see their GPU as cuda:0) are told apart by that rank:
    ``gpu0_rank2``."""
    host_ids = list(dict.fromkeys(d["host_id"] for d in jm.devices))
    multi = len(host_ids) > 1
    ranks = {r["rank"]: r["host_id"] for r in jm.ranks}
    devices: List[Dict[str, Any]] = []
    groups: List[Tuple[str, List[str]]] = []
    hosts: Dict[str, Dict[str, Any]] = {}
    for h, hid in enumerate(host_ids):
        mine = [d for d in jm.devices if d["host_id"] == hid]
        labels = [d["label"] for d in mine if d["kind"] == "gpu"]
        pre = "host%d_" % h if multi else ""
        keys = []
        for d in mine:
            if d["kind"] == "cpu":
                key = "cpu"
            elif labels.count(d["label"]) == 1:
                key = d["label"]
            else:
                key = "%s_rank%d" % (d["label"], d["rank"])
            keys.append(pre + key)
            devices.append({"key": pre + key, "kind": d["kind"], "energy_j": d["energy_j"],
                            "coverage": d["coverage"], "source": d["source"], "elapsed_s": d["elapsed_s"],
                            "uuid": d["uuid"]})
        hosts["host%d" % h] = {"host": mine[0]["host"], "host_id": hid,
                               "ranks": sorted(r for r, x in ranks.items() if x == hid)}
        if multi:
            groups.append(("host%d" % h, keys))
    groups.append(("gpu", [d["key"] for d in devices if d["kind"] == "gpu"]))
    if multi:
        groups.append(("cpu", [d["key"] for d in devices if d["kind"] == "cpu"]))
    counts = {"hosts": len(host_ids), "gpus": sum(1 for d in devices if d["kind"] == "gpu")}
    return _Values(jm.elapsed_s, devices, groups, counts, hosts, None)


def metrics_of(m: Any, prefix: str, scope: str, carbon: Any = None) -> Dict[str, float]:
    """The metrics of one window's result (names in the module's docstring): a
    :class:`~joulecap.Measurement`, or under torch.distributed a :class:`~joulecap.distributed.JobMeasurement`.
    ``carbon``: the grid intensity and price for ``kwh`` / ``gco2e`` / ``cost`` (default: the Measurement's)."""
    v = _values(m)
    carbon = v.carbon if carbon is None else carbon
    p = prefix + scope + "_"
    elapsed = v.elapsed_s
    out: Dict[str, float] = {}
    measured = {d["key"]: d for d in v.devices if d["source"] != "none" and math.isfinite(d["energy_j"])}
    total = float(sum(d["energy_j"] for d in measured.values()))
    groups = {name: float(sum(measured[k]["energy_j"] for k in keys if k in measured)) for name, keys in v.groups}
    out[p + "j"] = total
    for k, d in measured.items():
        out[p + k + "_j"] = d["energy_j"]
    for name, e in groups.items():
        out[p + name + "_j"] = e
    for name, n in v.counts.items():
        out[p + name] = float(n)
    out[p + "s"] = elapsed
    if elapsed > 0:
        out[p + "power_w"] = total / elapsed
        for k, d in measured.items():
            if d["elapsed_s"] > 0:
                out[p + k + "_power_w"] = d["energy_j"] / d["elapsed_s"]
        for name, e in groups.items():
            out[p + name + "_power_w"] = e / elapsed
    covs = {d["key"]: d["coverage"] for d in v.devices if d["source"] != "none"}
    out[p + "coverage"] = min(covs.values()) if covs else 0.0
    for k, c in covs.items():
        if c < 1:
            out[p + k + "_coverage"] = c
    if carbon is not None and carbon.is_set:
        for key, value in carbon.of(total).items():
            out[p + ("kwh" if key == "energy_kwh" else key)] = value
    return out


def _check_every(every_n_steps: Any) -> Optional[int]:
    if every_n_steps is None:
        return None
    if isinstance(every_n_steps, bool) or not isinstance(every_n_steps, int) or every_n_steps < 1:
        raise InvalidArgument("every_n_steps=%r: give a whole number of steps >= 1, or None (epochs only)" % (every_n_steps,))
    return every_n_steps


def _check_power_cap(power_cap: Any) -> Optional[Dict[str, Any]]:
    if power_cap is None or power_cap is False:
        return None
    if power_cap is True:
        return {}
    if isinstance(power_cap, dict):
        allowed = {"objective", "max_slowdown", "caps_w", "time_budget_s", "out_file", "process_group", "progress",
                   "caps", "time_budget"}  # the last two: old names, PowerCapOptimizer warns
        unknown = sorted(set(power_cap) - allowed)
        if unknown:
            raise InvalidArgument("power_cap: unknown key(s) %s; PowerCapOptimizer takes %s" % (
                ", ".join(unknown), ", ".join(sorted(allowed))))
        return dict(power_cap)
    raise InvalidArgument(
        "power_cap=%r: pass True (the online power-cap optimizer with its defaults), a dict of PowerCapOptimizer's "
        "arguments such as {'objective': 'ed2p', 'time_budget_s': 60}, or None" % (power_cap,))


class TrainerMeter:
    """One training run's energy: an epoch window per epoch, a window per ``every_n_steps`` steps, their
    metrics, and a summary.  The trainer callbacks drive it; it can be driven by hand as well.

    ``distributed``: None (default): job mode when torch.distributed's default process group is initialised with
    more than one rank when training starts (``begin()``); True: job mode (StateError at ``begin()`` without a
    process group); False: every rank measures and logs its own devices.  In job mode every rank must call
    ``begin``, ``epoch_start``/``epoch_end``, ``step_start``/``step_end`` and ``end`` equally often (the trainers'
    hooks run on every rank): each window's stop is collective, rank 0 gets the job's result, and its metrics are
    broadcast so that every rank logs the same values.  ``abort()`` is local (for exceptions)."""

    def __init__(
        self,
        gpu_num: Any = "auto",
        *,
        every_n_steps: Optional[int] = None,
        out_file: Any = None,
        carbon: Any = None,
        power_cap: Any = None,
        prefix: str = "energy/",
        summary: bool = True,
        interval_s: Optional[float] = None,
        distributed: Optional[bool] = None,
    ) -> None:
        if not isinstance(prefix, str):
            raise InvalidArgument("prefix=%r: give a string such as 'energy/'" % (prefix,))
        if distributed is not None and not isinstance(distributed, bool):
            raise InvalidArgument("distributed=%r: pass None (job totals under torch.distributed), True or False "
                                  "(each rank logs its own devices)" % (distributed,))
        self.gpu_num = gpu_num
        self.every_n_steps = _check_every(every_n_steps)
        self.out_file = out_file
        self.carbon = _resolve_carbon(carbon)
        self.power_cap = _check_power_cap(power_cap)
        self.prefix = prefix
        self.summary = summary
        self.interval = None if interval_s is None else _check_interval(interval_s)
        self.distributed = distributed
        self.tool: Optional[EnergyMeasurementTool] = None
        self.optimizer: Any = None
        #: Job mode (torch.distributed): this rank's place in the job, from begin() to end(); None otherwise.
        self.job: Optional[_distributed.Job] = None
        #: Every window measured: dicts with scope, name, epoch, first_step, last_step, metrics.
        self.records: List[Dict[str, Any]] = []
        self.steps = 0
        self._log_step = 0
        self._epoch: Optional[Tuple[int, str]] = None
        self._block: Optional[Tuple[int, str]] = None
        self._pending: List[Tuple[Dict[str, Any], Measurement]] = []
        self._ready: List[Dict[str, Any]] = []
        self._world = 1
        if gpu_num != "auto":
            # Checked here, so that a GPU that does not exist fails before training; measured from begin(), when
            # the trainer has made its process group (if any).  No CSV yet: under DDP every rank makes its
            # callback, and rank 0 alone writes out_file, in job mode.
            self._open(gpu_num, None, csv=False)
            try:
                self._check_one_gpu()
            finally:
                if self.tool is not None:
                    self.tool.close()
                    self.tool = None

    def __getstate__(self) -> Dict[str, Any]:
        # Pickled into the processes of a spawning strategy (Lightning's ddp_spawn): each opens its own at begin()
        # (a meter pickled while measuring does not measure in the copy).
        state = dict(self.__dict__)
        state.update(tool=None, optimizer=None, job=None)
        return state

    # -- opening and closing

    def _open(self, gpu_num: Any, job: Optional[_distributed.Job], csv: bool = True) -> None:
        self.tool = EnergyMeasurementTool(self.out_file if csv else None, gpu_num, interval_s=self.interval,
                                          carbon=self.carbon, distributed=job is not None)

    def _check_one_gpu(self) -> None:
        """power_cap needs one GPU measured; in job mode every rank learns of a rank that has not (none is left
        waiting in PowerCapOptimizer's collectives)."""
        if self.power_cap is None:
            return
        gpus = self.tool.gpus  # type: ignore[union-attr]
        bad = None if len(gpus) == 1 else (gpus or "none (the model is not on a CUDA GPU, or NVML is not there)")
        if self.job is not None:
            got = self.job.gather(bad, "power_cap's check at the start of training")
            bad = self.job.broadcast(next(((r, b) for r, b in enumerate(got) if b is not None), None)
                                     if got is not None else None, "power_cap's check at the start of training")
            bad = None if bad is None else "%s on rank %d" % (bad[1], bad[0])
        if bad is not None:
            self.tool.close()  # type: ignore[union-attr]
            self.tool = None
            raise InvalidArgument(
                "power_cap needs one GPU measured, not %s: give gpu_num the CUDA number of the GPU the model "
                "trains on" % (bad,))

    def _job_of_run(self) -> Optional[_distributed.Job]:
        job = _distributed.job_info(self.distributed)
        if job is not None and self.distributed is None and job.world_size < 2:
            return None
        return job

    def _rank_gpu(self, device_gpu: Optional[int]) -> Any:
        """``gpu_num="auto"`` in job mode: the model's CUDA GPU; a model on the CPU: the GPU of this rank by its
        local rank, as the job tools choose it (docs/distributed.md), or none where NVML sees no GPU."""
        if device_gpu is not None:
            return device_gpu
        n = _distributed._visible_gpus()
        return _distributed.rank_gpu(n) if n > 0 else None

    def begin(self, device_gpu: Optional[int]) -> None:
        """Training starts; ``device_gpu`` is the CUDA number the model is on (None: the CPU), used for
        ``gpu_num="auto"``.  Decides job mode (see the class); collective in job mode."""
        job = self._job_of_run()
        self._world = job.world_size if job is not None else _world_size()
        if self.tool is not None:  # begin() again without end() (a run that never ended): dropped, locally
            summary, self.summary = self.summary, False
            try:
                self.abort()
            finally:
                self.summary = summary
        if job is not None:
            self.job = job
            self._open(self._rank_gpu(device_gpu) if self.gpu_num == "auto" else self.gpu_num, job)
        else:
            self._open(device_gpu if self.gpu_num == "auto" else self.gpu_num, None)
        self._check_one_gpu()
        if self.power_cap is not None:
            # Here, not in the constructor: under DDP the process group exists by now, and PowerCapOptimizer
            # agrees with the other ranks on one cap and on who owns a shared GPU (docs/distributed.md).
            from ..profiler import PowerCapOptimizer

            try:
                self.optimizer = PowerCapOptimizer(self.tool.gpus[0], **self.power_cap)  # type: ignore[union-attr]
            except BaseException:
                self.tool.close()  # type: ignore[union-attr]
                self.tool = None
                self.job = None
                raise

    def end(self) -> Optional[str]:
        """Training ends: stops the windows still open (collectively in job mode), waits for every result, closes
        the optimizer (its cap is put back) and the tool.  Returns the summary text."""
        return self._close(stop_windows=True)

    def abort(self) -> Optional[str]:
        """Training failed: as ``end()``, but in job mode local (the other ranks may not be here): the windows
        still open are dropped, not gathered.  Returns the summary text."""
        return self._close(stop_windows=self.job is None)

    def _close(self, stop_windows: bool) -> Optional[str]:
        if self.tool is None:
            return None
        tool = self.tool
        try:
            if stop_windows:
                if self._block is not None:
                    self._stop_block()
                if self._epoch is not None:
                    rec, m = self._stop_epoch()
                    self._finish(rec, m)
                for rec, m in self._pending:
                    self._finish(rec, m)
            self._pending = []
            self._ready = []
            self._block = self._epoch = None
        finally:
            try:
                if self.optimizer is not None:
                    self.optimizer.close()
            finally:
                self.tool = None
                self.job = None
                tool.close()
        text = self.summary_text()
        if self.summary:
            sys.stderr.write(text + "\n")
        return text

    # -- windows

    def _require(self) -> EnergyMeasurementTool:
        if self.tool is None:
            raise StateError("the energy meter is not measuring: training has not started or has ended")
        return self.tool

    def epoch_start(self, epoch: int) -> None:
        tool = self._require()
        if self._epoch is not None:  # an epoch that never ended (an exception inside the trainer)
            rec, m = self._stop_epoch()
            self._stopped(rec, m)
        name = "epoch%d" % epoch
        tool.start(name)
        self._epoch = (epoch, name)

    def _stop_epoch(self) -> Tuple[Dict[str, Any], Any]:
        epoch, name = self._epoch  # type: ignore[misc]
        self._epoch = None
        m = self._require().stop(name)
        return {"scope": "epoch", "name": name, "epoch": epoch, "last_step": self.steps}, m

    def epoch_end(self) -> Optional[Dict[str, Any]]:
        """Stops the epoch's window and waits for its result (~0.1 s); returns its record (None when no epoch
        window is open)."""
        if self._epoch is None:
            return None
        rec, m = self._stop_epoch()
        return self._finish(rec, m)

    def step_start(self) -> None:
        if self.every_n_steps is None or self._block is not None:
            return
        first = self.steps + 1
        name = "steps%d-%d" % (first, first + self.every_n_steps - 1)
        self._require().start(name)
        self._block = (first, name)

    def step_end(self, log_step: Optional[int] = None) -> List[Dict[str, Any]]:
        """A training step ended: counts it, steps the power-cap optimizer, closes the block of steps when it is
        full; returns the records of blocks whose results are known by now (logged by the caller).  ``log_step``
        is the trainer's step number for the loggers (default: the steps counted here)."""
        self.steps += 1
        self._log_step = self.steps if log_step is None else log_step
        if self.optimizer is not None:
            self.optimizer.step()
        if self._block is not None and self.steps - self._block[0] + 1 >= self.every_n_steps:
            self._stop_block()
        return self.ready()

    def _stop_block(self) -> None:
        first, name = self._block  # type: ignore[misc]
        self._block = None
        m = self._require().stop(name)
        rec = {"scope": "steps", "name": name, "epoch": self._epoch[0] if self._epoch else None,
               "first_step": first, "last_step": self.steps, "log_step": self._log_step}
        self._stopped(rec, m)

    def _stopped(self, rec: Dict[str, Any], m: Any) -> None:
        # In job mode stop() has waited for the values and gathered them: finished now, at the same step on every
        # rank (its broadcast is collective).  Otherwise the result comes ~0.1 s later: see ready().
        if self.job is not None:
            self._ready.append(self._finish(rec, m))
        else:
            self._pending.append((rec, m))

    def ready(self, wait: bool = False) -> List[Dict[str, Any]]:
        """Records of the stopped windows whose results are known (all of them, waiting, with ``wait``), in stop
        order."""
        out, self._ready = self._ready, []
        while self._pending and (wait or self._pending[0][1].ready):
            rec, m = self._pending.pop(0)
            out.append(self._finish(rec, m))
        return out

    def _finish(self, rec: Dict[str, Any], m: Any) -> Dict[str, Any]:
        rec["measurement"] = m
        if self.job is not None:
            rec.update(self._job_result(rec, m))
        else:
            v = _values(m)
            rec["metrics"] = metrics_of(m, self.prefix, rec["scope"], self.carbon)
            rec["devices"] = [d["key"] for d in v.devices]
            rec["estimates"] = m.estimates
        if rec["scope"] == "epoch" and self.optimizer is not None:
            rec["metrics"][self.prefix + "power_cap_w"] = float(self.optimizer.cap_w)
        self.records.append(rec)
        return rec

    def _job_result(self, rec: Dict[str, Any], m: Any) -> Dict[str, Any]:
        """Collective: rank 0's metrics of the job's result, on every rank."""
        job = self.job
        out: Any = None
        if job.rank == 0:  # type: ignore[union-attr]
            try:
                v = _values(m)
                out = {"metrics": metrics_of(m, self.prefix, rec["scope"], self.carbon),
                       "devices": [d["key"] for d in v.devices], "estimates": m.estimates,
                       "hosts": v.hosts, "job_ranks": len(m.ranks)}
            except Exception as e:  # noqa: BLE001 - every rank must learn of it
                out = {"error": "%s: %s" % (type(e).__name__, e)}
        out = job.broadcast(out, "the energy of %s" % rec["name"])  # type: ignore[union-attr]
        if "error" in out:
            raise StateError("the job's energy of %s on rank 0: %s" % (rec["name"], out["error"]))
        return out

    # -- summary

    def totals(self) -> Dict[str, float]:
        """Sums over the epochs: ``j``, ``s``, per device ``{dev}_j`` (and in job mode the sums ``gpu_j``,
        ``cpu_j``, ``host{h}_j``), and ``kwh``/``gco2e``/``cost`` when set."""
        out: Dict[str, float] = {"j": 0.0, "s": 0.0}
        p = self.prefix + "epoch_"
        for rec in self.records:
            if rec["scope"] != "epoch":
                continue
            for k, v in rec["metrics"].items():
                if k.startswith(p) and (k.endswith("_j") or k[len(p):] in ("s", "kwh", "gco2e", "cost")):
                    key = k[len(p):]
                    out[key] = out.get(key, 0.0) + v
        return out

    def summary_text(self) -> str:
        epochs = [r for r in self.records if r["scope"] == "epoch"]
        if not epochs:
            return "joulecap: no epoch was measured"
        t = self.totals()
        keys = list(dict.fromkeys(k for r in epochs for k in r["devices"]))
        devs = ", ".join("%s %.4g J" % (k, t[k + "_j"]) for k in keys if k + "_j" in t)
        lines = ["joulecap: %d epoch%s, %.4g s, %.4g J (%s), mean %.4g W" % (
            len(epochs), "" if len(epochs) == 1 else "s", t["s"], t["j"], devs, t["j"] / t["s"] if t["s"] > 0 else float("nan"))]
        job = [r for r in epochs if "hosts" in r]
        if job:
            hosts = job[-1]["hosts"]
            lines.append("  torch.distributed: the job's %d ranks on %d host%s, each GPU and each host's CPU counted "
                         "once (GPUs %.4g J, CPUs %.4g J)" % (
                             job[-1]["job_ranks"], len(hosts), "" if len(hosts) == 1 else "s", t.get("gpu_j", 0.0),
                             t.get("cpu_j", 0.0)))
            if len(hosts) > 1:
                for key, h in hosts.items():
                    lines.append("  %s: %s (ranks %s), %.4g J" % (key, h["host"], " ".join(map(str, h["ranks"])),
                                                                   t.get(key + "_j", float("nan"))))
        if self.carbon.is_set:
            lines.append("  " + self.carbon.describe(t["j"]))
        partial = [r["name"] for r in epochs if r["metrics"][self.prefix + "epoch_coverage"] < 1]
        if partial:
            lines.append("  partial (a device stalled or was lost): %s" % ", ".join(partial))
        notes = {}
        for r in epochs:
            notes.update(r["estimates"])
        for dev, why in sorted(notes.items()):
            lines.append("  %s: %s" % (dev, why))
        if self.optimizer is not None and self.optimizer.result is not None:
            lines.append("  power cap: %s" % self.optimizer.result.reason)
        if not job and self._world > 1:
            lines.append("  torch.distributed: these are this rank's devices only, not the job's %d ranks "
                         "(distributed=False)" % self._world)
        return "\n".join(lines)


def _world_size() -> int:
    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.distributed.is_available() and torch.distributed.is_initialized():
            return int(torch.distributed.get_world_size())
    except Exception:  # noqa: BLE001 - no distributed information: one process
        pass
    return 1

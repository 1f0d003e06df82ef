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
"""

from __future__ import annotations

import math
import sys
from typing import Any, Dict, List, Optional, Tuple

from ..carbon import resolve as _resolve_carbon
from ..errors import InvalidArgument, StateError
from ..measurement import EnergyMeasurementTool, Measurement, _check_interval

__all__ = ["TrainerMeter", "metrics_of", "job_totals"]


def job_totals(records: List[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """Under torch.distributed: the whole job's energy over every rank (issue 9).

    Not available yet: the job totals of issue 9 (energy gathered over the ranks, each host's CPU counted once)
    do not exist in joulecap.  Until they do, each rank measures its own devices, its values are its own, and
    the trainers log rank 0's (their loggers write from rank 0 only).  This returns None; the callbacks call it
    and log what it returns under ``{prefix}job_*`` once it returns something."""
    return None


def metrics_of(m: Measurement, prefix: str, scope: str) -> Dict[str, float]:
    """The metrics of one window's result (names in the module's docstring)."""
    p = prefix + scope + "_"
    energy, cover, source = m.energy_j, m.coverage, m.sources
    elapsed = m.elapsed_s
    out: Dict[str, float] = {}
    measured = {d: e for d, e in energy.items() if source[d] != "none" and math.isfinite(e)}
    total = float(sum(measured.values()))
    out[p + "j"] = total
    for d, e in measured.items():
        out[p + d + "_j"] = e
    out[p + "s"] = elapsed
    if elapsed > 0:
        out[p + "power_w"] = total / elapsed
        for d, e in measured.items():
            out[p + d + "_power_w"] = e / elapsed
    covs = {d: c for d, c in cover.items() if source[d] != "none"}
    out[p + "coverage"] = min(covs.values()) if covs else 0.0
    for d, c in covs.items():
        if c < 1:
            out[p + d + "_coverage"] = c
    carbon = m.carbon
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
    metrics, and a summary.  The trainer callbacks drive it; it can be driven by hand as well."""

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
        interval: Optional[float] = None,
    ) -> None:
        if not isinstance(prefix, str):
            raise InvalidArgument("prefix=%r: give a string such as 'energy/'" % (prefix,))
        self.gpu_num = gpu_num
        self.every_n_steps = _check_every(every_n_steps)
        self.out_file = out_file
        self.carbon = _resolve_carbon(carbon)
        self.power_cap = _check_power_cap(power_cap)
        self.prefix = prefix
        self.summary = summary
        self.interval = None if interval is None else _check_interval(interval)
        self.tool: Optional[EnergyMeasurementTool] = None
        self.optimizer: Any = None
        #: Every window measured: dicts with scope, name, epoch, first_step, last_step, metrics.
        self.records: List[Dict[str, Any]] = []
        self.steps = 0
        self._log_step = 0
        self._epoch: Optional[Tuple[int, str]] = None
        self._block: Optional[Tuple[int, str]] = None
        self._pending: List[Tuple[Dict[str, Any], Measurement]] = []
        if gpu_num != "auto":
            self._open(gpu_num)

    # -- opening and closing

    def _open(self, gpu_num: Any) -> None:
        # Each rank logs its own devices (distributed=False): the job totals are not wired into the callbacks yet.
        self.tool = EnergyMeasurementTool(self.out_file, gpu_num, interval_s=self.interval, carbon=self.carbon,
                                          distributed=False)
        if self.power_cap is not None:
            gpus = self.tool.gpus
            if len(gpus) != 1:
                self.tool.close()
                self.tool = None
                raise InvalidArgument(
                    "power_cap needs one GPU measured, not %s: give gpu_num the CUDA number of the GPU the model "
                    "trains on" % (gpus or "none (the model is not on a CUDA GPU, or NVML is not there)"))
            from ..profiler import PowerCapOptimizer

            try:
                self.optimizer = PowerCapOptimizer(gpus[0], **self.power_cap)
            except BaseException:
                self.tool.close()
                self.tool = None
                raise

    def begin(self, device_gpu: Optional[int]) -> None:
        """Training starts; ``device_gpu`` is the CUDA number the model is on (None: the CPU), used for
        ``gpu_num="auto"``."""
        if self.tool is None:  # "auto", or a second run after end()
            self._open(device_gpu if self.gpu_num == "auto" else self.gpu_num)

    def end(self) -> Optional[str]:
        """Training ends: stops the windows still open, waits for every result, closes the optimizer (its cap is
        put back) and the tool.  Returns the summary text."""
        if self.tool is None:
            return None
        tool = self.tool
        try:
            if self._block is not None:
                self._stop_block()
            if self._epoch is not None:
                rec, m = self._stop_epoch()
                self._finish(rec, m)
            for rec, m in self._pending:
                self._finish(rec, m)
            self._pending = []
        finally:
            try:
                if self.optimizer is not None:
                    self.optimizer.close()
            finally:
                self.tool = None
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
            self._pending.append((rec, m))
        name = "epoch%d" % epoch
        tool.start(name)
        self._epoch = (epoch, name)

    def _stop_epoch(self) -> Tuple[Dict[str, Any], Measurement]:
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
        self._pending.append((rec, m))

    def ready(self, wait: bool = False) -> List[Dict[str, Any]]:
        """Records of the stopped windows whose results are known (all of them, waiting, with ``wait``), in stop
        order."""
        out = []
        while self._pending and (wait or self._pending[0][1].ready):
            rec, m = self._pending.pop(0)
            out.append(self._finish(rec, m))
        return out

    def _finish(self, rec: Dict[str, Any], m: Measurement) -> Dict[str, Any]:
        rec["measurement"] = m
        rec["metrics"] = metrics_of(m, self.prefix, rec["scope"])
        if rec["scope"] == "epoch" and self.optimizer is not None:
            rec["metrics"][self.prefix + "power_cap_w"] = float(self.optimizer.cap_w)
        rec["estimates"] = m.estimates
        self.records.append(rec)
        return rec

    # -- summary

    def totals(self) -> Dict[str, float]:
        """Sums over the epochs: ``j``, ``s``, per device ``{dev}_j``, and ``kwh``/``gco2e``/``cost`` when set."""
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
        devs = ", ".join("%s %.4g J" % (k[:-2], v) for k, v in t.items() if k.endswith("_j") and k != "j")
        lines = ["joulecap: %d epoch%s, %.4g s, %.4g J (%s), mean %.4g W" % (
            len(epochs), "" if len(epochs) == 1 else "s", t["s"], t["j"], devs, t["j"] / t["s"] if t["s"] > 0 else float("nan"))]
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
        world = _world_size()
        if world > 1 and job_totals(self.records) is None:
            lines.append("  torch.distributed: these are this rank's devices only, not the job's %d ranks (job "
                         "totals: not in joulecap yet)" % world)
        return "\n".join(lines)


def _world_size() -> int:
    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.distributed.is_available() and torch.distributed.is_initialized():
            return int(torch.distributed.get_world_size())
    except Exception:  # noqa: BLE001 - no distributed information: one process
        pass
    return 1

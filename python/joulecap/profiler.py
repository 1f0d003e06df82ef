"""The power-cap profiler from Python: the seed's ``power_cap_profiler`` and an online ``PowerCapOptimizer``.

    from joulecap.profiler import power_cap_profiler, PowerCapOptimizer

    cap = power_cap_profiler(model, dataloader, gpu_num=0, train=True, loss_fn=loss_fn, optimizer=optimizer,
                             out_file="caps.csv")               # the cap (W) with the lowest ED2P; limit restored
    result = profile_power_cap(model, dataloader, 0, ...)       # the same, returning the whole ProfileResult

    with PowerCapOptimizer(gpu_num=0) as pco:                    # online: no step is wasted
        for x, y in dataloader:
            train_step(x, y)
            pco.step()                                           # profiles during the first steps, then keeps the cap

Both drive the C library's profiler state machine (``jc_profiler_*``, docs/profiler.md): it says which cap to set
and when to run a step; the driver here sets the cap through the process's cap session (``joulecap.caps``: the
limit in force is saved, and put back at the end, on an exception, and by the guardian if the process is
killed), runs or waits for the step, and reports the step's end time and the GPU's cumulative energy.

Energy: each driver opens a measurement context on its GPU (the library's sampler thread reads the NVML energy
counter just after each of its 100 ms steps) and reports the newest counter value at each step boundary
(``Context.read_latest``): a cumulative reading that costs no NVML call and never blocks the step.  The C
profiler is built for such stepped counters (it fits the counter's update phase).  Time is the library's
monotonic clock.

See docs/python.md, "Power caps and the profiler".
"""

from __future__ import annotations

import csv
import inspect
import logging
import math
import os
import warnings
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

from . import _joulecap
from ._deprecation import renamed_keywords, user_stacklevel
from ._types import OneGpu, OutFile
from .caps import (
    CapReset,
    PowerCap,
    _check_range,
    _info,
    _sessions,
    _watts,
    current_gpu,
    get_power_cap,
    reset_power_cap,
    restore_power_caps,
    set_power_cap,
)
from ._progress import ProgressLine
from .distributed import RANK_GPU, rank_gpu
from .errors import FileError, InvalidArgument, JoulecapWarning, PermissionDenied, StateError

if TYPE_CHECKING:  # torch is optional: only type checkers need its names
    import torch

__all__ = [
    "power_cap_profiler",
    "profile_power_cap",
    "PowerCapOptimizer",
    "ProfileResult",
    "OBJECTIVES",
    "set_power_cap",
    "reset_power_cap",
    "get_power_cap",
    "restore_power_caps",
    "PowerCap",
    "CapReset",
]

_log = logging.getLogger("joulecap")

#: The objectives (docs/profiler.md): ED2P per unit of work is the default.
OBJECTIVES = ("ed2p", "edp", "energy", "time", "energy-slowdown", "zeus")

#: Columns of the out_file CSV.
CSV_COLUMNS = [
    "row",
    "cap_w",
    "steps",
    "dropped_steps",
    "seconds",
    "energy_j",
    "time_per_step_s",
    "power_w",
    "energy_per_step_j",
    "objective",
    "objective_name",
    "rel_se_objective",
    "phase",
    "binding",
    "reason",
    # the uncertainty and what the profiler saw
    "rel_se_time",
    "rel_se_power",
    "energy_saving",
    "energy_saving_ci",
    "slowdown",
    "slowdown_ci",
    "measurably_better",
    "reference_cap_w",
    "default_limit_w",
    "warnings",
]

#: Mean GPU utilisation (%) over the profile below which the GPU counts as idle (the steps did not run on it).
IDLE_UTIL_PCT = 5.0

_STOP = {1: "precise enough", 2: "clearly worse than the best", 3: "max_trial_s", 4: "budget or finish"}
_PHASE = {1: "coarse", 2: "refine", 3: "race"}


@dataclass(frozen=True)
class ProfileResult:
    """A finished profile: the recommended ``cap_w`` and why (``reason``), whether caps bind at all
    (``binding``), the time, power and energy per step predicted (or measured, ``cap_measured``) there, savings
    against ``reference_cap_w`` (the highest cap measured, normally the default limit), and every trial.

    Every saving carries its uncertainty: ``energy_saving_ci`` and ``slowdown_ci`` are half-widths of 90%
    confidence intervals from the trials' spread.  ``measurably_better`` is False when no cap beat the reference
    beyond that uncertainty: ``cap_w`` is then the reference (the default limit) and the reason says so;
    ``candidate_cap_w`` / ``candidate_gain`` ± ``candidate_gain_ci`` tell the best cap found and by how much
    (objective, relative) it looked better.  ``warnings`` lists what makes the profile doubtful (the model or its
    data not on the GPU profiled, a GPU that stayed idle); each was also issued as a JoulecapWarning.

    Under torch.distributed, power and energy are summed over the ranks' GPUs and time per step is the slowest
    rank's.
    """

    cap_w: float
    objective: str
    binding: bool
    reason: str
    cap_measured: bool
    time_per_step_s: float
    avg_power_w: float
    energy_per_step_j: float
    objective_value: float
    energy_saving: float
    slowdown: float
    reference_cap_w: float
    profile_seconds: float
    total_steps: int
    gpu_num: int
    limit_before_w: float
    trials: Tuple[Dict[str, Any], ...] = field(default_factory=tuple)
    energy_saving_ci: float = float("nan")
    slowdown_ci: float = float("nan")
    measurably_better: bool = True
    candidate_cap_w: float = float("nan")
    candidate_gain: float = float("nan")
    candidate_gain_ci: float = float("nan")
    default_limit_w: float = float("nan")
    warnings: Tuple[str, ...] = field(default_factory=tuple)

    @property
    def energy_saving_interval(self) -> Tuple[float, float]:
        """(low, high) of the 90% confidence interval of ``energy_saving``."""
        return (self.energy_saving - self.energy_saving_ci, self.energy_saving + self.energy_saving_ci)

    @property
    def slowdown_interval(self) -> Tuple[float, float]:
        """(low, high) of the 90% confidence interval of ``slowdown``."""
        return (self.slowdown - self.slowdown_ci, self.slowdown + self.slowdown_ci)

    @classmethod
    def _of(cls, r: Dict[str, Any], trials: List[Dict[str, Any]], gpu_num: int, before: float,
            default_w: float = float("nan"), warns: Sequence[str] = ()) -> "ProfileResult":
        return cls(
            cap_w=r["cap_w"],
            objective=r["objective"],
            binding=bool(r["binding"]),
            reason=r["reason"],
            cap_measured=bool(r["cap_measured"]),
            time_per_step_s=r["time_per_step_s"],
            avg_power_w=r["avg_power_w"],
            energy_per_step_j=r["energy_per_step_j"],
            objective_value=r["objective_value"],
            energy_saving=r["energy_saving"],
            slowdown=r["slowdown"],
            reference_cap_w=r["reference_cap_w"],
            profile_seconds=r["profile_seconds"],
            total_steps=r["total_steps"],
            gpu_num=gpu_num,
            limit_before_w=before,
            trials=tuple(trials),
            energy_saving_ci=r.get("energy_saving_ci", float("nan")),
            slowdown_ci=r.get("slowdown_ci", float("nan")),
            measurably_better=bool(r.get("measurably_better", True)),
            candidate_cap_w=r.get("candidate_cap_w", float("nan")),
            candidate_gain=r.get("candidate_gain", float("nan")),
            candidate_gain_ci=r.get("candidate_gain_ci", float("nan")),
            default_limit_w=default_w,
            warnings=tuple(warns),
        )


# --------------------------------------------------------------------------------------------------------------
# Argument checks (all of them before any cap changes)


# The library's profiler (jc_profiler_new) checks the rest when it is created, before any step or file: a known
# objective, max_slowdown > 0, at most 64 caps, caps not empty.  What is checked here, it cannot say as well.


def _objective(objective: str, max_slowdown: Optional[float]) -> Tuple[str, Optional[float]]:
    if not isinstance(objective, str):
        raise InvalidArgument("objective=%r: choose one of %s" % (objective, ", ".join(OBJECTIVES)))
    objective = objective.lower()
    if max_slowdown is not None and objective != "energy-slowdown":
        raise InvalidArgument(
            "max_slowdown=%r applies to objective='energy-slowdown' only (the objective is %r)" % (max_slowdown, objective)
        )
    return objective, max_slowdown


def _time_budget(time_budget_s: Optional[float]) -> float:
    # Not the library's check: it takes 0 for "automatic", which here is None.
    if time_budget_s is None:
        return 0.0  # automatic: max(20 s, 300 steps at the first cap)
    try:
        b = float(time_budget_s)
    except (TypeError, ValueError):
        b = float("nan")
    if isinstance(time_budget_s, bool) or not (b > 0) or not math.isfinite(b):
        raise InvalidArgument("time_budget_s=%r: give the profiling time in seconds (> 0), or None" % (time_budget_s,))
    return b


def _caps(caps_w: Optional[Iterable[float]], info: Dict[str, Any]) -> Optional[List[float]]:
    # Each cap against the GPU's range here, so that the message names the GPU (the library's names the list).
    if caps_w is None:
        return None
    if isinstance(caps_w, (str, bytes)) or not hasattr(caps_w, "__iter__"):
        raise InvalidArgument("caps_w=%r: give a list of caps in watts, such as [700, 500, 300], or None" % (caps_w,))
    out = [_watts(c, "caps_w") for c in caps_w]
    for w in out:
        _check_range(info, w, "caps_w:")
    return out


def _open_out_file(out_file: OutFile):
    if out_file is None:
        return None
    path = os.fspath(out_file)
    try:
        return open(path, "w", newline="")
    except PermissionError as e:
        raise PermissionDenied("cannot create the CSV file %s: %s; choose a writable path" % (path, e.strerror)) from None
    except OSError as e:
        raise FileError("cannot create the CSV file %s: %s; choose a writable path" % (path, e.strerror)) from None


# --------------------------------------------------------------------------------------------------------------
# Energy of the GPU: the sampler's newest counter value


class _GpuMeter:
    """Cumulative energy (J) of one GPU at the newest energy-counter step, and the library's clock (s)."""

    def __init__(self, uuid: str) -> None:
        self.ctx = _joulecap.Context(uuid, flags=_joulecap.NO_CPU | _joulecap.EVERY_STEP)
        dev = self.ctx.devices()
        if len(dev) < 2:
            self.ctx.close()
            raise StateError("joulecap cannot measure GPU %s (NVML is not available)" % uuid)
        src = dev[1]["energy_source"]
        if src not in ("counter", "integrated-power"):
            note = dev[1]["energy_note"]
            self.ctx.close()
            raise StateError("the profiler needs the energy of GPU %s, which joulecap cannot read: %s" % (uuid, note))
        # NVML's counter moves in ~100 ms steps; energy integrated from power by the sampler moves every 10 ms.
        self.counter_period = 0.1 if src == "counter" else 0.01
        self.ctx.sync()
        self.last_e = 0.0
        self.util_sum = 0.0
        self.util_n = 0

    def read(self) -> Tuple[float, float]:
        t = _joulecap.now_ns() * 1e-9
        s = self.ctx.read_latest(1)
        e, u = s["energy_j"], s["util_pct"]
        if not math.isfinite(e) or e < self.last_e:
            e = self.last_e
        self.last_e = e
        if math.isfinite(u):
            self.util_sum += u
            self.util_n += 1
        return t, e

    def mean_util_pct(self) -> float:
        """Mean GPU utilisation over the readings so far (NaN where the GPU does not report it)."""
        return self.util_sum / self.util_n if self.util_n else float("nan")

    def close(self) -> None:
        self.ctx.close()


# --------------------------------------------------------------------------------------------------------------
# The cap during profiling: taken through the process's session, put back as found


class _CapHold:
    """Sets caps on one GPU through the process's cap session and puts back the limit found in force."""

    def __init__(self, info: Dict[str, Any]) -> None:
        self.info = info
        self.uuid = info["uuid"]
        self.index = info["index"]
        self.had_session = _sessions.get(self.uuid) is not None
        self.session = _sessions.open(info)  # PermissionDenied / Busy here, before any change
        self.found_w = _joulecap.cap_get(self.uuid)["limit_w"]
        self.changed = False

    def set(self, watts: float) -> None:
        self.changed = True
        self.session.set(self.index, watts)

    def restore(self) -> None:
        """The limit found in force is back; a session opened for profiling is closed (journal removed)."""
        if self.had_session:
            if self.changed:
                self.session.set(self.index, self.found_w)
        else:
            _sessions.close(self.uuid)  # puts back the saved limit, which is the one found


# --------------------------------------------------------------------------------------------------------------
# Running steps: the seed's loop over the dataloader


def _to_device(obj: Any, device: Any) -> Any:
    if hasattr(obj, "to") and hasattr(obj, "device"):
        return obj.to(device, non_blocking=True) if obj.device != device else obj
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # a namedtuple
        return type(obj)(*(_to_device(o, device) for o in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_device(o, device) for o in obj)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    return obj


class _Batches:
    """The dataloader's batches, cycling: at its end it is iterated again."""

    def __init__(self, dataloader: Any) -> None:
        self.dataloader = dataloader
        try:
            self.it: Iterator[Any] = iter(dataloader)
        except TypeError:
            raise InvalidArgument("dataloader=%r is not iterable: give a DataLoader or a list of batches" % (dataloader,)) from None
        try:
            self.first: Any = next(self.it)
        except StopIteration:
            raise InvalidArgument("the dataloader yields no batch: profiling needs at least one") from None
        self.has_first = True
        self.count = 0

    def next(self) -> Any:
        if self.has_first:
            self.has_first = False
            self.count += 1
            return self.first
        try:
            b = next(self.it)
        except StopIteration:
            self.it = iter(self.dataloader)
            try:
                b = next(self.it)
            except StopIteration:
                raise InvalidArgument(
                    "the dataloader ran out after %d batches and yields nothing when iterated again: give one that "
                    "can be iterated more than once (a DataLoader, a list)" % self.count
                ) from None
        self.count += 1
        return b


def _model_device(model: Any) -> Any:
    params = getattr(model, "parameters", None)
    if params is None:
        return None
    for p in params():
        return p.device
    return None


class _StepRunner:
    """One training or inference step on the next batch, then a synchronisation of the device."""

    def __init__(self, model: Any, batches: _Batches, train: bool, loss_fn: Any, optimizer: Any, gpu_index: int):
        import torch

        self.torch = torch
        self.model, self.batches, self.train = model, batches, train
        self.loss_fn, self.optimizer = loss_fn, optimizer
        self.device = _model_device(model)
        cuda = torch.cuda.is_available()
        if self.device is not None and self.device.type == "cuda":
            self.sync_device = self.device
        elif cuda and self.device is None:
            self.sync_device = torch.device("cuda", gpu_index)
        else:
            self.sync_device = None

    def __call__(self) -> None:
        batch = self.batches.next()
        if self.device is not None:
            batch = _to_device(batch, self.device)
        # (inputs, targets, ...) as in the seed's `for inputs, labels in dataloader`; a dict of keyword arguments;
        # anything else is the inputs.
        if isinstance(batch, dict):
            targets = batch
            forward = lambda: self.model(**batch)  # noqa: E731
        elif isinstance(batch, (list, tuple)) and not hasattr(batch, "_fields") and len(batch) > 0:
            targets = batch[1] if len(batch) > 1 else None
            forward = lambda: self.model(batch[0])  # noqa: E731
        else:
            targets = None
            forward = lambda: self.model(batch)  # noqa: E731
        if self.train:
            self.optimizer.zero_grad(set_to_none=True)
            out = forward()
            loss = self.loss_fn(out, targets) if targets is not None else self.loss_fn(out)
            loss.backward()
            self.optimizer.step()
        else:
            with self.torch.no_grad():
                forward()
        if self.sync_device is not None:
            self.torch.cuda.synchronize(self.sync_device)


# --------------------------------------------------------------------------------------------------------------
# Model and optimizer state: copied before profiling, loaded back after


def _clone_cpu(obj: Any) -> Any:
    import copy

    if hasattr(obj, "detach") and hasattr(obj, "to"):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        out = type(obj)((k, _clone_cpu(v)) for k, v in obj.items())
        if hasattr(obj, "_metadata"):  # module versions, read by load_state_dict
            out._metadata = copy.deepcopy(obj._metadata)
        return out
    if isinstance(obj, list):
        return [_clone_cpu(v) for v in obj]
    if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return tuple(_clone_cpu(v) for v in obj)
    return copy.deepcopy(obj)


class _Snapshot:
    """What profiling steps change, to be put back after profiling: the model's train/eval mode and, for
    training steps, its weights and buffers, its gradients and the optimizer's state, copied to the CPU (so
    profiling needs no extra GPU memory).  Inference steps run in eval mode under torch.no_grad() and change
    no state, so only the mode is kept for them."""

    def __init__(self, model: Any, optimizer: Any, train: bool) -> None:
        self.model, self.optimizer = model, optimizer
        self.training = getattr(model, "training", None)
        self.state = self.opt_state = None
        self.grads: List[Tuple[Any, Any]] = []
        if train:
            if hasattr(model, "state_dict"):
                self.state = _clone_cpu(model.state_dict())
            params = list(model.parameters()) if hasattr(model, "parameters") else []
            self.grads = [(p, None if p.grad is None else p.grad.detach().to("cpu", copy=True)) for p in params]
            self.opt_state = _clone_cpu(optimizer.state_dict())
        if hasattr(model, "train"):
            model.train(bool(train))

    def restore(self) -> None:
        if self.state is not None:
            self.model.load_state_dict(self.state)
        for p, g in self.grads:
            p.grad = None if g is None else g.to(p.device)
        if self.opt_state is not None:
            self.optimizer.load_state_dict(self.opt_state)
        if self.training is not None and hasattr(self.model, "train"):
            self.model.train(self.training)


# --------------------------------------------------------------------------------------------------------------
# The out_file CSV


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, float):
        return "" if not math.isfinite(v) else "%.10g" % v
    return str(v)


def _write_csv(f: Any, result: ProfileResult) -> None:
    w = csv.writer(f)
    w.writerow(CSV_COLUMNS)
    for t in result.trials:
        w.writerow(
            [
                "trial",
                _fmt(t["cap_w"]),
                t["steps"],
                t["dropped_steps"],
                _fmt(t["seconds"]),
                _fmt(t["energy_j"]),
                _fmt(t["time_per_step_s"]),
                _fmt(t["avg_power_w"]),
                _fmt(t["energy_per_step_j"]),
                _fmt(t["objective"]),
                result.objective,
                _fmt(t["rel_se_objective"]),
                _PHASE.get(t["phase"], str(t["phase"])),
                "",
                "stopped: %s" % _STOP.get(t["stop_reason"], str(t["stop_reason"])),
                _fmt(t.get("rel_se_time")),
                _fmt(t.get("rel_se_power")),
            ]
            + [""] * 8
        )
    w.writerow(
        [
            "recommended",
            _fmt(result.cap_w),
            result.total_steps,
            "",
            _fmt(result.profile_seconds),
            "",
            _fmt(result.time_per_step_s),
            _fmt(result.avg_power_w),
            _fmt(result.energy_per_step_j),
            _fmt(result.objective_value),
            result.objective,
            "",
            "measured" if result.cap_measured else "predicted",
            _fmt(result.binding),
            result.reason,
            "",
            "",
            _fmt(result.energy_saving),
            _fmt(result.energy_saving_ci),
            _fmt(result.slowdown),
            _fmt(result.slowdown_ci),
            _fmt(result.measurably_better),
            _fmt(result.reference_cap_w),
            _fmt(result.default_limit_w),
            " | ".join(result.warnings),
        ]
    )
    f.flush()


def _objective_of(name: str, t: float, p: float, max_w: float) -> float:
    """The objective of one (time per step, power) pair, as the C profiler computes it (energy for
    energy-slowdown, whose constraint the reference meets by definition)."""
    if name == "ed2p":
        return p * t**3
    if name == "edp":
        return p * t**2
    if name == "time":
        return t
    if name == "zeus":
        return 0.5 * p * t + 0.5 * max_w * t
    return p * t


def _keep_default(result: ProfileResult, why: Sequence[str], max_w: float) -> ProfileResult:
    """The profile's recommendation replaced by the reference cap (the default limit), with the reason first:
    where the steps do not use the GPU, or it stayed idle, no cap can be shown to make them better, whatever
    the measurements seemed to say."""
    if result.measurably_better is False and result.cap_w == result.reference_cap_w:
        note = "The recommendation stands regardless: "
    else:
        note = "So %g W is kept rather than %g W, which the measurements seemed to favour: " % (
            result.reference_cap_w, result.cap_w)
    t = result.trials
    ref = [x for x in t if abs(x["cap_w"] - result.reference_cap_w) < 0.5 and x["steps"] > 0]
    secs = sum(x["seconds"] for x in ref)
    tps = secs / sum(x["steps"] for x in ref) if ref else float("nan")
    pw = sum(x["energy_j"] for x in ref) / secs if secs > 0 else float("nan")
    head = "No cap can be shown to make these steps better: %s. " % "; ".join(w.split(":")[0] for w in why)
    return replace(
        result,
        cap_w=result.reference_cap_w,
        cap_measured=True,
        measurably_better=False,
        time_per_step_s=tps,
        avg_power_w=pw,
        energy_per_step_j=tps * pw,
        objective_value=_objective_of(result.objective, tps, pw, max_w),
        energy_saving=0.0,
        energy_saving_ci=0.0,
        slowdown=0.0,
        slowdown_ci=0.0,
        reason=head + note + result.reason,
    )


class _Progress:
    """The profiler's progress line: trial k at cap W, elapsed / budget, the best cap so far."""

    def __init__(self, prof: Any, index: int, budget: float, enabled: Optional[bool]) -> None:
        self.prof, self.budget = prof, budget
        # An automatic budget is max(20 s, 300 steps at the first cap): 20 s until the first trial tells.
        self.line = ProgressLine("joulecap profiler, GPU %d" % index, total=budget or 20.0, enabled=enabled)
        self.t0: Optional[float] = None
        self.k, self.cap = 0, float("nan")

    def _text(self) -> str:
        r = self.prof.result()
        best = "none yet" if r["cap_w"] != r["cap_w"] else "%g W" % r["cap_w"]
        if r["cap_w"] == r["cap_w"] and not r.get("measurably_better", True):
            best += " (the default: none measurably better yet)"
        return "trial %d at %g W | best so far %s" % (self.k, self.cap, best)

    def trial(self, cap: float, t: float) -> None:
        if not self.line.enabled:
            return
        if self.t0 is None:
            self.t0 = t
        self.k += 1
        self.cap = cap
        if not self.budget and self.k == 2:
            first = self.prof.trials()[0]
            if first["time_per_step_s"] == first["time_per_step_s"]:
                self.line.set_total(max(20.0, 300 * first["time_per_step_s"]))
        self.line.update(t - self.t0, self._text, force=True)

    def step(self, t: float) -> None:
        if self.line.enabled and self.t0 is not None:
            self.line.update(t - self.t0, self._text)

    def close(self) -> None:
        self.line.close()


def _report(result: ProfileResult, new_warnings: Sequence[str] = ()) -> None:
    _log.info("joulecap: power-cap profiler: %s", result.reason)
    for w in new_warnings:
        warnings.warn(w, JoulecapWarning, stacklevel=user_stacklevel())
    if not result.binding:
        warnings.warn(
            "power caps do not bind on GPU %d for this workload: %s" % (result.gpu_num, result.reason),
            JoulecapWarning,
            stacklevel=user_stacklevel(),
        )


def _new_profiler(info: Dict[str, Any], objective: str, max_slowdown: Optional[float], caps: Optional[List[float]],
                  budget: float, counter_period: float) -> Any:
    return _joulecap.Profiler(
        info["min_limit_w"],
        info["max_limit_w"],
        info["default_limit_w"],
        objective=objective,
        max_slowdown=max_slowdown,
        caps=caps,
        time_budget=budget,
        counter_period=counter_period,
    )


# --------------------------------------------------------------------------------------------------------------
# What makes a profile doubtful: steps that do not run on the GPU profiled


def _tensor_devices(obj: Any, out: set, depth: int = 0) -> set:
    if depth > 4:
        return out
    if hasattr(obj, "device") and hasattr(obj, "dtype"):
        out.add(obj.device)
    elif isinstance(obj, dict):
        for v in obj.values():
            _tensor_devices(v, out, depth + 1)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _tensor_devices(v, out, depth + 1)
    return out


def _placement_warnings(runner: "_StepRunner", batches: "_Batches", gpu_num: Any, index: int) -> List[str]:
    """Warnings where the model (or, for a model without parameters, its data) is not on GPU ``index``: the cap
    of a GPU the steps do not run on cannot change them, and its energy is not theirs."""
    dev = runner.device
    what = "the model"
    if dev is None:
        devs = _tensor_devices(batches.first, set())
        if not devs:
            return []
        what = "the model has no parameters and its data are"
        dev = next((d for d in devs if d.type == "cuda"), next(iter(devs)))
        what_on = "%s on %s" % (what, dev)
    else:
        what_on = "%s is on %s" % (what, dev)
    if dev.type == "cuda" and dev.index in (None, index):
        return []
    if dev.type == "cuda":
        return ["%s but gpu_num=%r is GPU %d: the profiler caps GPU %d while the steps run elsewhere, so its "
                "results say nothing about them; give gpu_num=%d" % (what_on, gpu_num, index, index, dev.index)]
    return ["%s, not on GPU %d (the GPU profiled): the cap of GPU %d cannot change how fast the steps run and its "
            "energy is not theirs, so the profile describes whatever else GPU %d does; move the model with "
            "model.to('cuda:%d')" % (what_on, index, index, index, index)]


def _idle_warnings(meter: "_GpuMeter", index: int) -> List[str]:
    util = meter.mean_util_pct()
    if not (util < IDLE_UTIL_PCT):  # NaN (not reported) too
        return []
    return ["GPU %d stayed idle while profiling (utilisation %.1f%% on average): the steps did not keep it busy, so "
            "its cap had nothing to limit; check that the work runs on this GPU" % (index, util)]


# --------------------------------------------------------------------------------------------------------------
# The seed's offline profiler


#: A model: a callable (a torch.nn.Module) taking a batch's inputs.
Model = Union["torch.nn.Module", Callable[..., Any]]
#: Batches: a DataLoader or any iterable that can be iterated again (a list); a batch is (inputs, targets, ...),
#: a tensor of inputs, or a dict of keyword arguments.
Batches = Iterable[Any]
#: The loss: loss_fn(outputs, targets) -> a tensor with .backward() (loss_fn(outputs) for batches of inputs only).
LossFn = Callable[..., "torch.Tensor"]


@renamed_keywords(caps="caps_w", time_budget="time_budget_s")
def profile_power_cap(
    model: Model,
    dataloader: Batches,
    gpu_num: OneGpu = RANK_GPU,
    train: bool = False,
    loss_fn: Optional[LossFn] = None,
    optimizer: Optional[torch.optim.Optimizer] = None,
    out_file: OutFile = None,
    *,
    objective: str = "ed2p",
    max_slowdown: Optional[float] = None,
    caps_w: Optional[Sequence[float]] = None,
    time_budget_s: Optional[float] = None,
    steps_on_gpu: Optional[bool] = None,
    progress: Optional[bool] = None,
) -> ProfileResult:
    """Finds the power cap of GPU ``gpu_num`` with the lowest ``objective`` for one step of ``model`` on
    ``dataloader``'s batches, and returns the :class:`ProfileResult` (``result.cap_w``: the cap in W, with why,
    the savings and every trial).  :func:`power_cap_profiler` takes the same arguments and returns only the cap.
    The GPU's limit is what it was before when this returns (also on an exception or Ctrl-C), and so are the
    model's weights and the optimizer's state.

    * ``gpu_num``: one GPU (CUDA number, UUID, ``"cuda:1"``, ``torch.device``, ``"current"``); by default GPU 0,
      or under torch.distributed the GPU this rank uses, as for the measurement tools.
    * Each step runs the model on the next batch (the dataloader is iterated again at its end): with
      ``train=True`` a training step (``optimizer.zero_grad()``, ``loss_fn(model(inputs), targets).backward()``,
      ``optimizer.step()``), otherwise a forward pass under ``torch.no_grad()``.  A batch is
      ``(inputs, targets, ...)``, a tensor of inputs (``loss_fn(outputs)``), or a dict of keyword arguments
      (``loss_fn(outputs, batch)``); tensors are moved to the model's device.  On CUDA each step ends with
      ``torch.cuda.synchronize``.
    * ``objective``: ``"ed2p"`` (default: E·t² per step), ``"edp"``, ``"energy"``, ``"time"``,
      ``"energy-slowdown"`` (least energy with at most ``max_slowdown``, default 0.05, slower steps than at the
      default limit), ``"zeus"``.  ``caps_w``: only these caps (W) are tried.  ``time_budget_s``: seconds of
      profiling (default: max(20 s, 300 steps)).  (``caps`` and ``time_budget``, the old names, still work and
      warn.)
    * ``out_file``: a CSV with a header, one ``trial`` row per cap tried and a last ``recommended`` row (see
      docs/python.md).
    * Before any cap changes: the arguments are checked (``train=True`` needs ``loss_fn`` and ``optimizer``;
      caps within the GPU's range; a known objective; ``max_slowdown > 0`` with ``"energy-slowdown"`` only; a
      dataloader with at least one batch), the CSV is created, and the permission to set caps is checked
      (``PermissionDenied`` says that root or CAP_SYS_ADMIN gives it).
    * Unlike the seed, the model is not left trained by the profiling steps: its weights, buffers, gradients and
      train/eval mode, and the optimizer's state, are copied to the CPU before and loaded back after.
    * When caps do not bind (the workload draws well below every cap tried) a JoulecapWarning says so, and the
      CSV's ``binding`` column is 0.
    * Every saving carries a 90% confidence interval; where no cap is better than the default limit beyond that
      uncertainty, the default limit is returned and the reason says why.
    * Where the model (or, without parameters, its data) is not on GPU ``gpu_num``, or the GPU stayed idle, a
      JoulecapWarning says so and the default limit is returned: the cap of a GPU the steps do not use cannot
      make them better.  ``steps_on_gpu=True`` says that the steps do run on that GPU all the same (work the
      model hands to the GPU itself, or a test's stand-in for a GPU).
    * ``progress``: a progress line on stderr (trial, cap, elapsed / budget, best cap so far; tqdm's when it
      is installed); None (default) shows it only when stderr is a terminal.
    """
    if train and (loss_fn is None or optimizer is None):
        raise InvalidArgument("train=True needs loss_fn and optimizer (the profiler runs real training steps)")
    objective, max_slowdown = _objective(objective, max_slowdown)
    budget = _time_budget(time_budget_s)
    if not callable(model):
        raise InvalidArgument("model=%r is not callable: give a torch.nn.Module" % (model,))
    group = _Group(None)

    def setup() -> Tuple[int, Dict[str, Any], List[float]]:
        g = _default_gpu(gpu_num, group)
        i = _info(g)
        return g, i, _caps(caps_w, i)

    gpu_num, info, cap_list = group.agree(setup, "power_cap_profiler's checks")
    if group.size > 1:
        runner, placement = group.agree(
            lambda: _steps(model, dataloader, train, loss_fn, optimizer, gpu_num, info, steps_on_gpu),
            "power_cap_profiler's first steps")
        return _profile_ranks(group, runner, model, optimizer, bool(train), info, placement, out_file,
                              dict(objective=objective, max_slowdown=max_slowdown, caps_w=caps_w,
                                   time_budget_s=time_budget_s, progress=progress))
    f = None
    meter = _GpuMeter(info["uuid"])
    try:
        # The library checks the objective, max_slowdown and the caps here, before any step or file.
        prof = _new_profiler(info, objective, max_slowdown, cap_list, budget, meter.counter_period)
        runner, placement = _steps(model, dataloader, train, loss_fn, optimizer, gpu_num, info, steps_on_gpu)
        f = _open_out_file(out_file)
        hold = _CapHold(info)  # PermissionDenied / Busy here, before any change
        line = _Progress(prof, info["index"], budget, progress)
        try:
            snapshot = _Snapshot(model, optimizer, bool(train))
            try:
                while True:
                    kind, cap = prof.next_action()
                    if kind == "done":
                        break
                    if kind == "set_cap":
                        hold.set(cap)
                        t, e = meter.read()
                        prof.cap_applied(cap, t, e)
                        line.trial(cap, t)
                    else:
                        runner()
                        t, e = meter.read()
                        prof.observe_step(t, e)
                        line.step(t)
            finally:
                line.close()
                snapshot.restore()
        finally:
            hold.restore()
        idle = _idle_warnings(meter, info["index"])
        result = ProfileResult._of(prof.result(), prof.trials(), info["index"], hold.found_w,
                                   info["default_limit_w"], placement + idle)
        if idle or placement:
            result = _keep_default(result, placement + idle, info["max_limit_w"])
    except BaseException:
        if f is not None:
            f.close()
        raise
    finally:
        meter.close()
    if f is not None:
        with f:
            _write_csv(f, result)
    _report(result, idle)
    return result


def _steps(model: Model, dataloader: Batches, train: bool, loss_fn: Optional[LossFn], optimizer: Any,
           gpu_num: OneGpu, info: Dict[str, Any], steps_on_gpu: Optional[bool]) -> Tuple["_StepRunner", List[str]]:
    """The step runner over the dataloader's batches, and the warnings (issued) where the steps miss the GPU."""
    batches = _Batches(dataloader)
    runner = _StepRunner(model, batches, bool(train), loss_fn, optimizer, info["index"])
    placement = [] if steps_on_gpu else _placement_warnings(runner, batches, gpu_num, info["index"])
    for w in placement:
        warnings.warn(w, JoulecapWarning, stacklevel=user_stacklevel())
    return runner, placement


def _warn_last_result() -> None:
    warnings.warn("power_cap_profiler.last_result is deprecated and will be removed in the next release: call "
                  "profile_power_cap() (the same arguments), which returns the ProfileResult",
                  DeprecationWarning, stacklevel=user_stacklevel())


class _SeedProfiler:
    """``power_cap_profiler(model, dataloader, gpu_num=0, train=False, loss_fn=None, optimizer=None,
    out_file=None, *, objective="ed2p", max_slowdown=None, caps_w=None, time_budget_s=None, steps_on_gpu=None,
    progress=None) -> float``: the seed's name and return value.  Profiles as :func:`profile_power_cap` does
    (same arguments) and returns the recommended cap in W; use :func:`profile_power_cap` for the whole
    :class:`ProfileResult`.

    ``power_cap_profiler.last_result`` (the result of the latest call, shared by the whole process) is
    deprecated: it warns, and goes in the next release.
    """

    def __init__(self) -> None:
        self._last: Optional[ProfileResult] = None
        # inspect.signature / help show profile_power_cap's arguments, returning the cap in W
        self.__signature__ = inspect.signature(profile_power_cap).replace(return_annotation="float")
        self.__name__ = self.__qualname__ = "power_cap_profiler"
        self.__module__ = __name__

    @renamed_keywords("power_cap_profiler", caps="caps_w", time_budget="time_budget_s")
    def __call__(self, *args: Any, **kwargs: Any) -> float:
        result = profile_power_cap(*args, **kwargs)
        self._last = result
        return result.cap_w

    @property
    def last_result(self) -> Optional[ProfileResult]:
        _warn_last_result()
        return self._last

    @last_result.setter
    def last_result(self, value: Optional[ProfileResult]) -> None:
        _warn_last_result()
        self._last = value

    def __repr__(self) -> str:
        return "<function power_cap_profiler>"


power_cap_profiler = _SeedProfiler()


def _profile_ranks(group: "_Group", runner: "_StepRunner", model: Any, optimizer: Any, train: bool,
                   info: Dict[str, Any], placement: List[str], out_file: OutFile,
                   kwargs: Dict[str, Any]) -> ProfileResult:
    """``profile_power_cap`` under torch.distributed: every rank runs the same steps on its own GPU and
    :class:`PowerCapOptimizer` makes the decisions on rank 0 and broadcasts them, so that the ranks of a DDP
    model step together and set the same caps; ranks sharing a GPU leave its cap to the lowest of them.  Rank 0
    writes the CSV."""
    f = group.agree(lambda: _open_out_file(out_file) if group.rank == 0 else None, "power_cap_profiler's out_file",
                    undo=lambda f: f.close() if f is not None else None)
    try:
        snapshot = _Snapshot(model, optimizer, train)
        try:
            with PowerCapOptimizer(info["index"], **kwargs) as pco:
                while not pco.done:
                    runner()
                    pco.step()
            result = pco.result
        finally:
            snapshot.restore()
        # Rank 0's doubts decide for every rank (the recommendation must be the same everywhere).
        why = group.broadcast_object(list(placement) + list(result.warnings) if group.rank == 0 else None)
        if why:
            result = _keep_default(result, why, info["max_limit_w"])
    except BaseException:
        if f is not None:
            f.close()
        raise
    if f is not None:
        with f:
            _write_csv(f, result)
    return result


# --------------------------------------------------------------------------------------------------------------
# Online mode


_CODE = {"run": 0.0, "set_cap": 1.0, "done": 2.0, "error": 3.0}
_KIND = {v: k for k, v in _CODE.items()}


class _Group:
    """torch.distributed when initialised with more than one rank, else a group of one."""

    def __init__(self, process_group: Any) -> None:
        self.dist = None
        self.group = process_group
        self.rank, self.size = 0, 1
        try:
            import torch.distributed as dist
        except ImportError:
            return
        if dist.is_available() and dist.is_initialized() and dist.get_world_size(process_group) > 1:
            import torch

            self.dist, self.torch = dist, torch
            self.rank = dist.get_rank(process_group)
            self.size = dist.get_world_size(process_group)
            backend = dist.get_backend(process_group)
            self.device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
            # The rank that decides: rank 0 of the group, as a global rank for broadcast's src.
            self.src = dist.get_global_rank(process_group, 0) if process_group is not None else 0

    def gather(self, t: float, e: float, ok: bool = True) -> Tuple[float, float, List[int]]:
        """(latest step end over the ranks, sum of the ranks' cumulative energies, ranks that are not ok)."""
        if self.dist is None:
            return t, e, ([] if ok else [0])
        out = [self.torch.zeros(3, dtype=self.torch.float64, device=self.device) for _ in range(self.size)]
        mine = self.torch.tensor([t, e, 1.0 if ok else 0.0], dtype=self.torch.float64, device=self.device)
        self.dist.all_gather(out, mine, group=self.group)
        vals = [o.tolist() for o in out]
        return max(v[0] for v in vals), sum(v[1] for v in vals), [r for r, v in enumerate(vals) if v[2] != 1.0]

    def broadcast(self, kind: str, cap: float) -> Tuple[str, float]:
        if self.dist is None:
            return kind, cap
        x = self.torch.tensor([_CODE[kind], cap], dtype=self.torch.float64, device=self.device)
        self.dist.broadcast(x, src=self.src, group=self.group)
        code, cap = x.tolist()
        return _KIND[code], cap

    def broadcast_object(self, obj: Any) -> Any:
        if self.dist is None:
            return obj
        box = [obj]
        self.dist.broadcast_object_list(box, src=self.src, group=self.group)
        return box[0]

    def all_objects(self, obj: Any) -> List[Any]:
        if self.dist is None:
            return [obj]
        out: List[Any] = [None] * self.size
        self.dist.all_gather_object(out, obj, group=self.group)
        return out

    def agree(self, fn: Callable[[], Any], what: str, undo: Optional[Callable[[Any], None]] = None) -> Any:
        """``fn()`` on every rank; where it raises on any, every rank raises (that rank its own error, the others a
        StateError naming it, after ``undo(fn's result)``), so that no rank waits in a later collective for one
        that gave up.  Collective."""
        out, err = None, None
        try:
            out = fn()
        except BaseException as e:  # noqa: BLE001 - every rank must learn of it
            err = e
        if self.size > 1:
            failed = [(r, m) for r, m in enumerate(self.all_objects(None if err is None else repr(err))) if m]
            if failed and err is None:
                if undo is not None:
                    undo(out)
                err = StateError("%s failed on rank %d: %s" % ((what,) + failed[0]))
        if err is not None:
            raise err
        return out


def _default_gpu(gpu_num: Optional[OneGpu], group: _Group, online: bool = False) -> OneGpu:
    """gpu_num with its default (RANK_GPU) resolved as the measurement tools resolve theirs: GPU 0, or under
    torch.distributed the GPU this rank uses (distributed.rank_gpu).  ``online``: PowerCapOptimizer, whose old
    default (and gpu_num=None) meant the current CUDA device; where that differs, it still does, and warns."""
    if gpu_num is None and online:
        cur = current_gpu()
        warnings.warn("PowerCapOptimizer(gpu_num=None) is deprecated and will be removed in the next release: pass "
                      "gpu_num='current' for the current CUDA device (here %d), or its number" % cur,
                      DeprecationWarning, stacklevel=user_stacklevel())
        return cur
    if gpu_num is not RANK_GPU:
        return gpu_num
    if group.size > 1:
        return rank_gpu()
    if online:
        cur = current_gpu()
        if cur != 0:  # the old default; the new one is 0, as for power_cap_profiler and the measurement tools
            warnings.warn("PowerCapOptimizer() without gpu_num profiles the current CUDA device (%d) in this release; "
                          "the next release profiles GPU 0 (outside torch.distributed), as power_cap_profiler and "
                          "the measurement tools do: pass gpu_num='current' (or %d) to keep this GPU" % (cur, cur),
                          DeprecationWarning, stacklevel=user_stacklevel())
            return cur
    return 0


class PowerCapOptimizer:
    """Chooses the power cap during the real training loop: call :meth:`step` once per training step.

    It profiles during the first steps (setting the caps the profiler asks for, as in
    :func:`power_cap_profiler`, but on the job's own steps, so none is wasted), then sets the recommended cap and
    keeps it; after that ``step()`` returns at once.  ``done``, ``cap_w`` (the cap in force, then the
    recommendation) and ``result`` (a :class:`ProfileResult` once done) tell where it is.  :meth:`close` (or the
    end of a ``with`` block, or the process's exit) puts back the limit found in force; the guardian does it if
    the process is killed.

    Arguments as :func:`profile_power_cap`'s, ``gpu_num`` by default as there and for the measurement tools:
    GPU 0, or under torch.distributed the GPU this rank uses; ``gpu_num="current"`` is torch's current CUDA
    device (``torch.cuda.current_device()``; 0 where torch sees no CUDA).  ``out_file`` gets the CSV when
    profiling ends (rank 0).  Deprecated, for one release: ``gpu_num=None`` and, outside torch.distributed where
    the current CUDA device is not 0, no ``gpu_num`` (both meant the current device, and still do, with a
    DeprecationWarning); ``caps`` and ``time_budget`` (now ``caps_w``, ``time_budget_s``).

    Under torch.distributed (initialised, more than one rank in ``process_group``, default the world) every rank
    creates its optimizer on its own GPU and calls ``step()`` at every step, as DDP requires of collectives.
    Rank 0 runs the state machine on all ranks' measurements (each step: the latest step end and the sum of the
    GPUs' energies, by all_gather) and broadcasts each decision; every rank sets the same cap on its own GPU.
    Ranks sharing a GPU (one machine by its boot id, one UUID): the lowest of them sets its cap and counts its
    energy, the others follow the decisions and leave the limit alone (docs/distributed.md).
    """

    @renamed_keywords(caps="caps_w", time_budget="time_budget_s")
    def __init__(
        self,
        gpu_num: Optional[OneGpu] = RANK_GPU,
        objective: str = "ed2p",
        *,
        max_slowdown: Optional[float] = None,
        caps_w: Optional[Sequence[float]] = None,
        time_budget_s: Optional[float] = None,
        out_file: OutFile = None,
        process_group: Optional[torch.distributed.ProcessGroup] = None,
        progress: Optional[bool] = None,
    ) -> None:
        self.objective, self.max_slowdown = _objective(objective, max_slowdown)
        self._budget = _time_budget(time_budget_s)
        self._group = _Group(process_group)

        def setup() -> Tuple[Dict[str, Any], List[float], Any]:
            info = _info(_default_gpu(gpu_num, self._group, online=True))
            return info, _caps(caps_w, info), _open_out_file(out_file) if self._group.rank == 0 else None

        self._info, self._caps, self._out = self._group.agree(
            setup, "PowerCapOptimizer's checks", undo=lambda r: r[2].close() if r and r[2] is not None else None)
        self.gpu_num: int = self._info["index"]
        self.done = False
        self.result: Optional[ProfileResult] = None
        self.cap_w: float = self._info["limit_w"]
        self.steps = 0
        self._closed = False
        self._prof = None
        self._meter = None
        self._hold = None
        self._started = False
        self._line: Optional[_Progress] = None
        self._progress = progress
        # Ranks sharing a GPU (same machine by its real boot id, same UUID): the lowest one owns its cap and
        # counts its energy; the others follow the decisions without touching the limit (distributed.py).
        self._owner = True
        if self._group.size > 1:
            from .distributed import boot_id

            keys = self._group.all_objects((boot_id(), self._info["uuid"]))
            self._owner = keys.index(keys[self._group.rank]) == self._group.rank
        # Each rank's clock counts from here (the collective above is a common instant), so that the latest step
        # end over the ranks means the same on hosts whose monotonic clocks differ.
        self._t0 = _joulecap.now_ns() * 1e-9
        err: Optional[BaseException] = None
        try:
            self._meter = _GpuMeter(self._info["uuid"])
            if self._group.rank == 0:
                self._prof = _new_profiler(
                    self._info, self.objective, self.max_slowdown, self._caps, self._budget, self._meter.counter_period
                )
            if self._owner:
                self._hold = _CapHold(self._info)  # PermissionDenied / Busy here, before any change
        except BaseException as e:  # noqa: BLE001 - under torch.distributed every rank must learn of it
            err = e
        if self._group.size > 1:
            # Every rank fails if one does (no rank may wait in a collective for a rank that gave up).
            failed = [(r, m) for r, m in enumerate(self._group.all_objects(None if err is None else repr(err))) if m]
            if failed and err is None:
                err = StateError("PowerCapOptimizer failed on rank %d: %s" % failed[0])
        if err is not None:
            self._release()
            raise err

    # -- the loop

    def step(self) -> float:
        """Call once at the end of every training step (after the step's work is done; on CUDA after
        ``torch.cuda.synchronize()`` for exact timing, though the next step's start is close enough).  Returns
        the cap in force (W)."""
        if self._closed:
            raise StateError("this PowerCapOptimizer is closed: its cap was put back; create a new one to profile again")
        self.steps += 1
        if self.done:
            return self.cap_w
        t, e = self._meter.read()
        t, e, _ = self._group.gather(t - self._t0, e if self._owner else 0.0)
        if not self._started:
            self._started = True
            kind, cap = self._decide(None, t, e)
        else:
            kind, cap = self._decide("step", t, e)
        while kind in ("set_cap", "done"):
            err = None
            try:
                if self._hold is not None:
                    self._hold.set(cap)
                self.cap_w = cap
            except Exception as ex:  # noqa: BLE001 - every rank must learn of it before raising
                err = ex
            t, e = self._meter.read()
            t, e, failed = self._group.gather(t - self._t0, e if self._owner else 0.0, err is None)
            if failed:
                if err is not None:
                    raise err
                raise StateError("setting the power cap failed on rank %d (see its error)" % failed[0])
            if kind == "done":
                self._finish()
                break
            kind, cap = self._decide("applied", t, e, cap)
        return self.cap_w

    on_step_end = step

    def _decide(self, what: Optional[str], t: float, e: float, cap: float = 0.0) -> Tuple[str, float]:
        """Rank 0: report the measurement and ask what comes next; broadcast it to the other ranks."""
        kind, next_cap, err = "error", 0.0, None
        if self._group.rank == 0:
            try:
                if self._line is None:
                    self._line = _Progress(self._prof, self.gpu_num, self._budget, self._progress)
                if what == "step":
                    self._prof.observe_step(t, e)
                    self._line.step(t)
                elif what == "applied":
                    self._prof.cap_applied(cap, t, e)
                    self._line.trial(cap, t)
                kind, next_cap = self._prof.next_action()
            except Exception as ex:  # noqa: BLE001 - tell the other ranks before raising
                err = ex
                kind, next_cap = "error", 0.0
        kind, next_cap = self._group.broadcast(kind, next_cap)
        if kind == "error":
            if err is not None:
                raise err
            raise StateError("the power-cap profiler failed on rank 0 (see its error)")
        return kind, next_cap

    def _finish(self) -> None:
        self.done = True
        if self._line is not None:
            self._line.close()
        payload = None
        if self._group.rank == 0:
            payload = (self._prof.result(), self._prof.trials())
        payload = self._group.broadcast_object(payload)
        idle = _idle_warnings(self._meter, self.gpu_num)
        self.result = ProfileResult._of(payload[0], payload[1], self.gpu_num, self._found_w,
                                        self._info["default_limit_w"], idle)
        if self._out is not None:
            with self._out:
                _write_csv(self._out, self.result)
            self._out = None
        if self._group.rank == 0:
            _report(self.result, idle)
        self._meter.close()
        self._meter = None

    # -- the end

    def close(self) -> None:
        """Puts back the limit found in force (also when profiling had not finished: the recommendation so far
        is then in ``result``).  Under torch.distributed call it on every rank."""
        if self._closed:
            return
        self._closed = True
        try:
            if not self.done and self._prof is not None and self._started:
                try:
                    self._prof.finish()
                    self.result = ProfileResult._of(self._prof.result(), self._prof.trials(), self.gpu_num,
                                                    self._found_w, self._info["default_limit_w"])
                except Exception:  # noqa: BLE001 - nothing measured: no result
                    pass
        finally:
            self._release()

    @property
    def _found_w(self) -> float:
        """The limit found in force (by the rank that owns the cap; the others read it at construction)."""
        return self._hold.found_w if self._hold is not None else self._info["limit_w"]

    def _release(self) -> None:
        if self._line is not None:
            self._line.close()
        try:
            if self._hold is not None:
                self._hold.restore()
                self._hold = None
        finally:
            if self._meter is not None:
                self._meter.close()
                self._meter = None
            if self._out is not None:
                self._out.close()
                self._out = None

    def __enter__(self) -> "PowerCapOptimizer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "done" if self.done else ("profiling" if self._started else "not started")
        return "PowerCapOptimizer(gpu_num=%d, objective=%r, %s, cap_w=%g)" % (self.gpu_num, self.objective, state, self.cap_w)

"""LayerwiseMeasurementTool: the user's object; start() hooks the model, stop() builds the result."""

from __future__ import annotations

import math
import warnings
from typing import Any, Dict, List, Optional

from .. import _joulecap
from .._deprecation import renamed_keywords
from .._common import _check_path, _create_file, _Devices, _gpu_selection, _open_context, _register
from ..errors import InvalidArgument, JoulecapWarning, StateError
from .clock import _CudaClock, _HostClock
from .layers import _import_torch, select_layers
from .replay import _Replayer
from .result import LayerwiseResult, _build_result, _write_csv
from .run import _Run
from .sampling import _OPEN_LEAD_NS

_MODES = ("attribute", "replay")
_COST_SAID = [False]  # the opening lead's cost is said at the first start() on a GPU of the process, not at each
SAMPLES = ("auto", "all")


class LayerwiseMeasurementTool:
    """Energy and time of each layer of a ``torch.nn`` model (the seed's ``LayerwiseMeasurementTool``).

    ``LayerwiseMeasurementTool(out_file, gpu_num=0)`` opens the sources at once (a GPU that does not exist, or
    an out_file that cannot be created, raise here).  ``model = tracker.start(model)`` right before the loop
    attaches hooks and returns the same model; train or run inference; ``tracker.stop()`` removes the hooks,
    writes the CSV and returns a :class:`LayerwiseResult`.

    * ``gpu_num``: the CUDA number of the GPU the model runs on (an int, ``"cuda:1"``, a ``torch.device``, a
      UUID), or ``None`` for a model on the CPU with no GPU measured.  One GPU.
    * ``depth``: ``None`` measures the modules that do work of their own (leaf modules, and modules holding
      parameters directly); an int measures the modules at that depth of the qualified names (``layer3.1`` is
      depth 2) and those doing work above it; 0 the whole model as one layer.
    * ``mode``: ``"attribute"`` (default) gives each layer the energy measured over its own intervals: a layer
      whose calls fill energy-counter steps (100 ms) of their own gets the power measured over them (inside a
      sampled burst, a fit to the counter's steps); layers shorter than that are replayed alone after the run,
      the largest first, within ``replay_budget`` (default 0.05: 5% of the run's time), and those not replayed
      share the power of their steps, split by time.  ``"replay"`` replays every layer above
      ``replay_min_share``, for ``replay_seconds`` each, whatever the budget, and splits the energy measured for
      the layers by time x the powers alone.  See docs/python.md.
    * ``sample``: ``"auto"`` (default) hooks the layers on sampled steps only, within ``max_overhead`` (default
      0.05: the sampled steps may add 5% to the run's time), never on the first ``warmup_steps`` (default 1) of
      each phase, and extends the sampled steps to the whole run; ``"all"`` hooks every step.  A step is a
      forward of the model itself up to the next one.
    * ``lead`` (default True) and ``burst_seconds`` (default 0.4): on a GPU, sampled steps come in bursts of
      about ``burst_seconds`` behind GPU-side leads, so that their kernels run back to back (see docs/python.md).
    * ``interval_s``: the sampler's period for the cheap reads (default 0.01 s).  ``interval`` and
      ``resolve_interval`` are the deprecated names of ``interval_s`` and ``resolve_interval_s``.

    Training and inference may be mixed in one measurement: a forward pass under ``torch.no_grad()`` or
    ``torch.inference_mode()`` is inference, any other training, and each layer gets a row per phase.
    """

    @renamed_keywords("LayerwiseMeasurementTool", interval="interval_s", resolve_interval="resolve_interval_s")
    def __init__(
        self,
        out_file: Any = None,
        gpu_num: Any = 0,
        *,
        depth: Optional[int] = None,
        mode: str = "attribute",
        sample: str = "auto",
        max_overhead: float = 0.05,
        warmup_steps: int = 1,
        lead: bool = True,
        burst_seconds: float = 0.4,
        interval_s: Optional[float] = None,
        replay_seconds: float = 1.0,
        replay_min_share: float = 0.005,
        replay_budget: float = 0.05,
        replay_capture_bytes: int = 4 << 20,
        resolve_interval_s: float = 0.5,
        max_pending: int = 8192,
        anchor_max_age: float = 10.0,
        _host_shadow: bool = False,
        _keep_run: bool = False,
        _knots: bool = True,
        _early_scale: bool = False,
    ):
        if mode not in _MODES:
            raise InvalidArgument("mode=%r: pass 'attribute' (default) or 'replay'" % (mode,))
        if sample not in SAMPLES:
            raise InvalidArgument("sample=%r: pass 'auto' (default: sampled steps within max_overhead) or 'all' "
                                  "(every step)" % (sample,))
        if isinstance(max_overhead, bool) or not isinstance(max_overhead, (int, float)) or \
                not (0.0 < max_overhead <= 10.0):
            raise InvalidArgument("max_overhead=%r: pass the fraction of the run's time the sampled steps may add, "
                                  "e.g. 0.05 (5%%), in (0, 10]" % (max_overhead,))
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise InvalidArgument("warmup_steps=%r: pass an int >= 0 (steps per phase never sampled)" % (warmup_steps,))
        if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 0):
            raise InvalidArgument("depth=%r: pass None (leaf modules) or an int >= 0 (0 is the whole model)" % (depth,))
        for name, v, lo in (("replay_seconds", replay_seconds, 0.0), ("resolve_interval_s", resolve_interval_s, 0.0),
                            ("burst_seconds", burst_seconds, 0.0),
                            ("anchor_max_age", anchor_max_age, 1.0)):
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < lo:
                raise InvalidArgument("%s=%r: pass a number of seconds >= %g" % (name, v, lo))
        if not (0.0 <= float(replay_min_share) < 1.0):
            raise InvalidArgument("replay_min_share=%r: pass a fraction of the layers' time in [0, 1)" % (
                replay_min_share,))
        if isinstance(replay_budget, bool) or not isinstance(replay_budget, (int, float)) or \
                not (0.0 <= replay_budget <= 10.0):
            raise InvalidArgument("replay_budget=%r: pass the share of the run's time that the default mode may "
                                  "spend after stop() replaying short layers, e.g. 0.05 (5%%), or 0 for none"
                                  % (replay_budget,))
        if not isinstance(max_pending, int) or max_pending < 16:
            raise InvalidArgument("max_pending=%r: pass an int >= 16" % (max_pending,))
        self.out_file = _check_path(out_file)
        self.gpu_num = gpu_num
        self.depth = depth
        self.mode = mode
        self.sample = sample
        self.max_overhead = float(max_overhead)
        self.warmup_steps = warmup_steps
        self.lead = bool(lead)
        self.burst_seconds = float(burst_seconds)
        self.replay_seconds = float(replay_seconds)
        self.replay_min_share = float(replay_min_share)
        self.replay_budget = float(replay_budget)
        self.start_note: Optional[str] = None  # what sampling will cost where a run's length decides it (start())
        # inputs are captured for replay in mode "replay", and in the default mode for its budgeted replay
        self._capture = mode == "replay" or self.replay_budget > 0
        self._knots = bool(_knots)
        # True: opening lead and first burst scaled to max_overhead x the time so far.  Off: on the H100 its
        # one-step first bursts were too short for the counter to resolve (BENCHMARKS.md, layer-wise).
        self._early_scale = bool(_early_scale)
        self.replay_capture_bytes = int(replay_capture_bytes)
        self.resolve_interval = float(resolve_interval_s)
        self.max_pending = max_pending
        self.anchor_max_age = float(anchor_max_age)
        self._host_shadow = _host_shadow
        self._keep_run = _keep_run
        self._last_run: Optional[_Run] = None
        self._want_gpu = _requested_gpu(gpu_num)
        kwargs = {} if interval_s is None else {"interval": float(interval_s)}
        # Intervals are measured after the fact (energy_between): the counter is read at every step throughout.
        kwargs["flags"] = _joulecap.EVERY_STEP
        self._ctx = _open_context(gpu_num, **kwargs)
        try:
            self._devices = _Devices(self._ctx)
            if len(self._devices.gpu_indices) > 1:
                raise InvalidArgument(
                    "gpu_num=%r selects %d GPUs: LayerwiseMeasurementTool measures the one GPU the model runs on; "
                    "pass its CUDA number, e.g. gpu_num=0" % (gpu_num, len(self._devices.gpu_indices))
                )
            if self.out_file is not None:
                _create_file(self.out_file)
        except BaseException:
            self._ctx.close()
            raise
        if self._devices.gpu_indices:
            self._want_gpu = self._devices.gpu_indices[0]
        self._run: Optional[_Run] = None
        self._used = False
        self._device_type = "cpu"
        self.result: Optional[LayerwiseResult] = None
        _register(self)

    # -- properties --------------------------------------------------------------------------------------------

    @property
    def gpus(self) -> List[int]:
        """CUDA numbers of the measured GPU (empty when none is measured)."""
        return list(self._devices.gpu_indices)

    @property
    def running(self) -> bool:
        return self._run is not None

    @property
    def closed(self) -> bool:
        return self._ctx.closed

    # -- start / stop ------------------------------------------------------------------------------------------

    def start(self, model: Any) -> Any:
        """Attaches the hooks to ``model`` and starts measuring; returns the same model (the seed's API:
        ``model = tracker.start(model)``).  Call it right before the training or inference loop."""
        if self._run is not None:
            raise StateError("start() called twice: the tool is already measuring a model; call stop() first")
        if self._used:
            raise StateError(
                "this tool already measured a run%s: create a new LayerwiseMeasurementTool to measure again"
                % (" and wrote " + self.out_file if self.out_file else "")
            )
        if self._ctx.closed:
            raise StateError("this tool is closed: create a new LayerwiseMeasurementTool")
        torch = _import_torch()
        layers = select_layers(model, self.depth)
        if not layers:
            if self.depth is None:
                why = "it has no submodules that do work (layers)"
                fix = "measure it whole with EnergyMeasurementTool, or pass depth=0 to treat it as one layer"
            else:
                why = "no module lies at depth %d of its qualified names" % self.depth
                fix = "pass a smaller depth (or depth=None for its leaf modules)"
            raise InvalidArgument("the model (%s) has no measurable layers: %s; %s" % (type(model).__name__, why, fix))
        device = _model_device(model, torch)
        cuda = self._check_device(device)
        self._device_type = "cuda" if cuda else "cpu"
        if cuda:
            clock: Any = _CudaClock(torch, device, anchor_max_age_s=self.anchor_max_age)
        else:
            clock = _HostClock()
        run = _Run(self, torch, model, layers, clock, self._ctx.device_count())
        run.begin(self._ctx, self.resolve_interval)
        try:
            run.install()
        except BaseException:
            run.remove_hooks()
            self._ctx.release(run.window)
            raise
        run.active = True
        self._run = run
        self._used = True
        self.start_note = self._cost_note(run)
        if self.start_note and not _COST_SAID[0]:
            _COST_SAID[0] = True
            warnings.warn(self.start_note, JoulecapWarning, stacklevel=2)
        return model

    def _cost_note(self, run: _Run) -> Optional[str]:
        """What sampling will cost where the run's length decides it: on a GPU, the first burst's opening lead,
        which a run too short for max_overhead to pay for pays anyway (the run's length is not known here)."""
        if not run.leads():
            return None
        lead_s = _OPEN_LEAD_NS * 1e-9
        return ("layer-wise sampling: the first sampled burst opens with a %.1f s GPU-side lead unless the loop is "
                "GPU-bound (the GPU a step behind the host), so a run shorter than %.0f s costs more than "
                "max_overhead (%.0f%%); result.clock['sampling_cost_share'] says what the run paid, and for a "
                "short GPU-bound run sample='all' (no leads, every step hooked) costs less"
                % (lead_s, lead_s / self.max_overhead, 100 * self.max_overhead))

    def _check_device(self, device: Any) -> bool:
        """True when the model is on a CUDA GPU (the one measured); raises when it is on another one."""
        if device is None or device.type != "cuda":
            if device is not None and device.type not in ("cpu", "meta"):
                raise InvalidArgument(
                    "the model is on %s: LayerwiseMeasurementTool times layers on CUDA GPUs and on the CPU only"
                    % device
                )
            return False
        idx = 0 if device.index is None else device.index
        want = self._want_gpu
        if want is None:
            raise InvalidArgument(
                "the model is on cuda:%d, but gpu_num=None measures no GPU: pass gpu_num=%d" % (idx, idx)
            )
        if idx != want:
            raise InvalidArgument(
                "the model is on cuda:%d, but this tool measures GPU %d (gpu_num=%r): pass gpu_num=%d, or move "
                "the model with model.to('cuda:%d')" % (idx, want, self.gpu_num, idx, want)
            )
        return True

    def stop(self) -> LayerwiseResult:
        """Removes the hooks, computes every layer's energy, writes the CSV and returns the result.

        On a GPU it waits for the queued work first (the run ends when the GPU is done), then about one
        energy-counter step (~0.1 s) for the samples after the end; in replay mode it then runs the layers alone
        (about ``replay_seconds`` per distinct layer)."""
        run = self._run
        if run is None:
            if self._used:
                raise StateError("stop() called twice: the run was already stopped (its result is tracker.result)")
            raise StateError("stop() called before start(): call model = tracker.start(model) before the loop")
        self._run = None
        t_end = run.end()
        ctx = self._ctx
        ctx.stop_at(run.window, t_end)
        whole = ctx.result(run.window, 10.0)
        ctx.release(run.window)
        replayed: List[Dict[str, Any]] = []
        replay_power: Dict[int, List[float]] = {}
        replay_info: Dict[str, Any] = {}
        if self.mode == "replay":
            replayed, replay_power = _Replayer(self, run).run()
        elif self.replay_budget > 0:
            # the default mode: the short layers the counter cannot tell apart, within the replay budget
            budget_s = self.replay_budget * (t_end - run.t_start) * 1e-9
            if run.captures:
                rp = _Replayer(self, run)
                replayed, replay_power = rp.run(budget_s=budget_s)
                replay_info = rp.info
            else:
                replay_info = {"budget_s": budget_s, "layers": 0, "seconds_each": 0.0, "note": (
                    "skipped: the budget (%.2f s, replay_budget x the run's time) is below one layer's shortest "
                    "replay, so no inputs were captured; the layers keep the counter's split (a longer run, or a "
                    "larger replay_budget, replays them)" % budget_s)}
        result = _build_result(run, self._devices, self.mode, self.out_file, whole, replayed, replay_power)
        if replay_info:
            result.clock["auto_replay"] = replay_info
        self.result = result
        run.tool = None  # type: ignore[assignment]
        if self._keep_run:  # the benchmark reuses the captured inputs
            self._last_run = run
        ctx.close()  # a tool measures one run: free the sampler now
        if self.out_file is not None:
            _write_csv(self.out_file, result)
        if not result.layer_rows() and not any(v["steps"] and not v["sampled_steps"] for v in result.sampling.values()):
            warnings.warn("no layer of the model ran between start() and stop()", JoulecapWarning, stacklevel=2)
        return result

    # -- convenience -------------------------------------------------------------------------------------------

    def to_pandas(self):
        """The last result's rows as a pandas DataFrame."""
        if self.result is None:
            raise StateError("no result yet: call stop() first")
        return self.result.to_pandas()

    def summary(self, top: int = 15, file: Any = None) -> str:
        """Prints (and returns) a short table of the last result."""
        if self.result is None:
            raise StateError("no result yet: call stop() first")
        return self.result.summary(top=top, file=file)

    def close(self) -> None:
        """Removes the hooks (a run not stopped is dropped) and closes the sources."""
        run, self._run = self._run, None
        if run is not None:
            run.active = False
            run.remove_hooks()
        self._ctx.close()

    def __enter__(self) -> "LayerwiseMeasurementTool":
        return self

    def __exit__(self, *exc: Any) -> bool:
        self.close()
        return False

    def __repr__(self) -> str:
        return "<LayerwiseMeasurementTool out_file=%r gpus=%r mode=%s%s>" % (
            self.out_file, self.gpus, self.mode, " running" if self.running else "")


def _requested_gpu(gpu_num: Any) -> Optional[int]:
    """The CUDA number gpu_num names, when it names one by number (else None; the devices tell later)."""
    if gpu_num is None:
        return None
    if isinstance(gpu_num, int) and not isinstance(gpu_num, bool):
        return gpu_num
    try:
        sel = _gpu_selection(gpu_num)
    except InvalidArgument:
        raise
    return int(sel) if sel.isdigit() else None


def _model_device(model: Any, torch: Any) -> Any:
    """The one device holding the model's parameters and buffers (None when it has neither)."""
    devs = {t.device for t in model.parameters()} | {t.device for t in model.buffers()}
    if not devs:
        return None
    if len(devs) > 1:
        raise InvalidArgument(
            "the model's parameters are on several devices (%s): LayerwiseMeasurementTool measures a model on one "
            "device; move it with model.to(device)" % ", ".join(sorted(str(d) for d in devs))
        )
    return next(iter(devs))

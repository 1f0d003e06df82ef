"""Energy per layer of a ``torch.nn`` model: :class:`LayerwiseMeasurementTool`.

    tracker = LayerwiseMeasurementTool("layers.csv", gpu_num=0)
    model = tracker.start(model)        # right before the loop
    for x, y in data:                   # train, or run inference
        ...
    result = tracker.stop()             # writes layers.csv; result.summary(), result.to_pandas()

How it works (docs/python.md, "Layer-wise", says it for users):

* **Timeline.**  Hooks put *markers* on one timeline: "from here on, the time belongs to X", where X is a layer's
  forward or backward (of the training or the inference phase) or one of the "outside layers" rows.  Forward
  markers come from forward pre/post hooks; backward markers from hooks on the autograd graph's nodes (the
  first node of a layer's backward and the last that hands its inputs a gradient), which, unlike
  ``register_full_backward_hook``, work with in-place ops such as ``ReLU(inplace=True)``.  The intervals between
  markers tile ``[start(), stop()]`` exactly, so the rows add up to the whole run.
* **Clocks.**  On the CPU a marker is ``time.perf_counter_ns()`` (CLOCK_MONOTONIC, the library's clock).  On a
  GPU it is a CUDA event recorded on the current stream: no synchronisation per layer.  Events are turned into
  CLOCK_MONOTONIC times lazily (at most every ``resolve_interval`` s, from a model forward pre-hook), relative to
  an *anchor* event whose host time is known (taken while the GPU is idle).  Durations are exact to the event
  resolution (~0.5 us); the anchor places them on the host clock to within a few us plus the drift since the
  anchor (re-anchored whenever the GPU is idle at a resolve point, and by one synchronisation at most every
  ``anchor_max_age`` s); ``result.clock`` reports both.
* **Energy.**  Each interval gets ``energy_between(t0, t1)`` from the C sampler's series: the power actually
  measured over that interval, per device.  Inside one 100 ms counter step the energy is interpolated linearly,
  so intervals sharing a step share its average power (``mode="attribute"``).  ``mode="replay"`` then runs each
  layer alone for ``replay_seconds`` to measure its own power and splits the layers' measured energy by
  time x replayed power.
* **Sampling** (``sample="auto"``, the default).  PyTorch's hook machinery alone can slow a host-bound step by
  tens of percent, so the layers' hooks are attached for sampled steps only, chosen so that their extra time
  stays within ``max_overhead`` of the run; a step not sampled costs one hook on the model and one marker, and
  its time and energy are given to the rows at the end (_extrapolate).  On a GPU, steps are sampled in *bursts*
  of about ``burst_seconds``: an opening lead (a 0.3 s GPU-side wait) then, every LEAD_EVERY markers, a short
  lead, so that the GPU runs the sampled kernels back to back although the hooks slow the host (the CUDA
  launch queue lets the host run only ~1000 commands ahead).  The counter measures the waiting GPU over the
  opening lead and the burst over its interior; the burst's work gets the difference (_finish_bursts).
"""

from __future__ import annotations

import collections
import csv
import functools
import io
import math
import statistics
import threading
import time
import warnings
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Tuple

from . import _joulecap
from .errors import InvalidArgument, JoulecapWarning, StateError
from ._common import _check_path, _create_file, _Devices, _gpu_selection, _open_context, _register, _source_notes

__all__ = ["LayerwiseMeasurementTool", "LayerwiseResult"]

PHASES = ("train", "infer")
TRAIN, INFER = 0, 1
FWD, BWD = 0, 1
OUTSIDE_FORWARD = "(outside) forward"
OUTSIDE_BACKWARD = "(outside) backward"
OUTSIDE_OTHER = "(outside) other"
OUTSIDE_LEAD = "(outside) joulecap lead"  # the GPU-side waits the tool puts in sampled bursts (_Run.open_burst)
OUTSIDE_UNSAMPLED = "(outside) not sampled"  # steps of a phase of which no step was sampled
SAMPLES = ("auto", "all")
_OUTSIDE_ORDER = [OUTSIDE_FORWARD, OUTSIDE_BACKWARD, OUTSIDE_OTHER, OUTSIDE_LEAD, OUTSIDE_UNSAMPLED]
ROOT_NAME = "(root)"

_MAX_SEQ = 2**64 - 1  # sequence number of AccumulateGrad nodes
_WALK_LIMIT = 2048  # autograd nodes inspected per layer call, at most
_COUNTER_STEP_NS = 100_000_000  # the GPU energy counter's step (NVML, measured on the H100: BENCHMARKS.md)
_MAX_IDLE_PER_BUSY = 1.0  # refine_work_power: the run's work power only where idle <= busy in the steps not sampled
_OPEN_LEAD_NS = 300_000_000  # a burst's opening lead: its interior (0.1 s in from both ends) measures a waiting GPU
_SETTLE_STEPS = 4  # steps not sampled after sampled ones that do not time a base (the GPU catches up first)
LEAD_EVERY = 256  # markers between short leads inside a burst (~500 CUDA commands: half the launch queue)
_GROUP_NS = 1_000_000  # intervals are given energy in groups spanning at least this (1 ms)
_ONE_NODE_FAST_PATH = True  # layer calls that made one autograd node skip the graph walk (tests turn it off)


def _import_torch():
    try:
        import torch
    except ImportError:
        raise InvalidArgument(
            "LayerwiseMeasurementTool measures torch.nn models, and PyTorch is not installed: "
            "pip install torch (or 'joulecap[torch]')"
        ) from None
    return torch


def _host_clock() -> Callable[[], int]:
    """CLOCK_MONOTONIC in ns, the clock of the C library's timestamps (jc_now_ns).

    time.perf_counter_ns is clock_gettime(CLOCK_MONOTONIC) on Linux (checked here); otherwise the library's own
    clock is used (slower by a call into the extension)."""
    impl = time.get_clock_info("perf_counter").implementation
    if "CLOCK_MONOTONIC" in impl and "RAW" not in impl:
        return time.perf_counter_ns
    return _joulecap.now_ns


# --------------------------------------------------------------------------------------------------------------
# Which modules are layers


def _is_container(m: Any, nn: Any) -> bool:
    return isinstance(m, (nn.ModuleList, nn.ModuleDict, nn.ParameterList, nn.ParameterDict))


def _owns_parameters(m: Any) -> bool:
    return any(p is not None for p in m._parameters.values())


def _does_work(m: Any, nn: Any) -> bool:
    """A module whose own forward does something: a leaf (not an empty container), or a module holding
    parameters of its own (MultiheadAttention computes its input projection itself, without its children)."""
    if _is_container(m, nn):
        return False
    has_children = next(iter(m.children()), None) is not None
    if not has_children:
        return not (isinstance(m, nn.Sequential))  # an empty Sequential is the identity
    return _owns_parameters(m)


def select_layers(model: Any, depth: Optional[int] = None) -> List[Tuple[str, Any]]:
    """The (qualified name, module) pairs measured for ``depth``, in the model's order.

    ``depth=None``: modules that do work of their own: leaf modules, and modules that hold parameters directly
    (their children, if called, are measured apart: times are exclusive).  ``depth=k``: the modules whose
    qualified name has k parts (``layer3.1`` has 2), plus modules doing work above that depth, so that the rows
    cover the model; ``depth=0`` is the whole model as one layer.  A module shared under several names is
    measured once, under its first name, with all its calls.
    """
    torch = _import_torch()
    nn = torch.nn
    if not isinstance(model, nn.Module):
        raise InvalidArgument("start(model): model must be a torch.nn.Module, not %s" % type(model).__name__)
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 0):
        raise InvalidArgument("depth=%r: pass None (leaf modules) or an int >= 0 (0 is the whole model)" % (depth,))
    named = list(model.named_modules())
    if depth == 0:
        return [("", model)]
    out = []
    for name, m in named:
        if name == "":
            # The root itself: only when it does work of its own besides its children (a ViT's class token).
            if depth is None and next(iter(m.children()), None) is not None and _owns_parameters(m):
                out.append((name, m))
            continue
        d = name.count(".") + 1
        if depth is None:
            if _does_work(m, nn):
                out.append((name, m))
        elif d == depth:
            if not _is_container(m, nn):
                out.append((name, m))
        elif d < depth and _does_work(m, nn):
            out.append((name, m))
    return out


def _graph_task_id(torch: Any) -> int:
    """The id of the backward pass running on this thread, -1 outside one.  (A torch without the call: 0, one id
    for every backward pass; nested ones, as in reentrant checkpointing, are then not told apart.)"""
    f = getattr(torch._C, "_current_graph_task_id", None)
    return f() if f is not None else 0


def _display_name(name: str) -> str:
    return name if name else ROOT_NAME


# --------------------------------------------------------------------------------------------------------------
# Clocks: a marker is an int (CLOCK_MONOTONIC ns) or a token that the clock converts later.


class _HostClock:
    """Markers are host times (models on the CPU)."""

    kind = "host"

    def __init__(self) -> None:
        self.mark = _host_clock()

    def begin(self) -> int:
        return self.mark()

    def convert(self, times: List[Any], k: int, force: bool) -> int:
        return len(times)

    def finish(self) -> int:
        return self.mark()

    def maybe_reanchor(self) -> None:
        pass

    has_lead = False

    def lead(self, seconds: float) -> bool:
        return False

    def reserve(self, n: int) -> None:
        pass

    def info(self) -> Dict[str, Any]:
        return {"kind": "host", "clock": "CLOCK_MONOTONIC (time.perf_counter_ns)"}


class _CudaClock:
    """Markers are CUDA events on the current stream, mapped to CLOCK_MONOTONIC through an anchor event.

    An anchor is an event recorded while the GPU is idle, so that the GPU stamps it within microseconds of the
    host time taken right after the record call.  ``host(e) = anchor_host + elapsed(anchor, e)``.  Durations
    between markers do not depend on the anchor at all; only their place on the host clock does, to within the
    anchor's uncertainty (measured, ``anchor_uncertainty_max_s``) plus the drift of the GPU timer against
    CLOCK_MONOTONIC since the anchor (measured at each re-anchoring, ``drift_max_s``).
    """

    kind = "cuda"
    PROBE_SPIN_NS = 50_000  # a resolve point's probe: the GPU is idle if it stamps an event this soon

    def __init__(
        self,
        torch: Any,
        device: Any,
        anchor_max_age_s: float = 10.0,
        event_factory: Optional[Callable[[], Any]] = None,
        synchronize: Optional[Callable[[], None]] = None,
        stream: Optional[Callable[[], Any]] = None,
        now: Optional[Callable[[], int]] = None,
        lead: Optional[Callable[[float], None]] = None,
    ) -> None:
        self.torch = torch
        self.device = device
        self.anchor_max_age_ns = int(anchor_max_age_s * 1e9)
        cuda = getattr(torch, "cuda", None)
        self._new_event = event_factory or (lambda: cuda.Event(enable_timing=True))
        self._synchronize = synchronize or (lambda: cuda.synchronize(device))
        self._stream = stream or (lambda: cuda.current_stream(device))
        self._real = event_factory is None and stream is None  # real CUDA events: the fast paths below apply
        self._elapsed: Optional[Callable[[Any, Any], float]] = None
        self.now = now or _host_clock()
        self._pool: List[Any] = []
        self.anchor: Any = None
        self.anchor_host = 0
        self.anchors = 0
        self.forced_syncs = 0
        self.drift_max_ns = 0
        self.uncertainty_max_ns = 0
        self.events = 0
        self.cycles_per_s: Optional[float] = None
        self._lead: Optional[Callable[[float], None]] = lead  # (fake GPUs in tests pass their own)

    POOL_WARM = 2048  # events created (and their CUDA events with them) at begin(), off the hot path

    # Hot path: one event per marker, no synchronisation.  begin() replaces this method by _fast_mark()'s closure.
    def mark(self) -> Any:
        pool = self._pool
        ev = pool.pop() if pool else self._new_event()
        ev.record(self._stream())
        return ev

    def _fast_mark(self) -> Callable[[], Any]:
        """The marker function: an event from the pool, recorded on the current stream.

        With real CUDA events it skips torch's Python wrappers: the stream current at begin() is cached, and a
        marker asks only for the raw handle of the current stream (one cheap call) to check it is still that one;
        when it is not (work under ``torch.cuda.stream(s)``), the marker goes on the current stream as before."""
        pool = self._pool
        pop = pool.pop
        new = self._new_event
        if not self._real:
            stream = self._stream

            def mark() -> Any:
                ev = pop() if pool else new()
                ev.record(stream())
                return ev

            return mark
        torch = self.torch
        base = torch._C._CudaEventBase
        record = base.record
        self._elapsed = base.elapsed_time
        cur = self._stream
        s0 = cur()
        raw = getattr(torch._C, "_cuda_getCurrentRawStream", None)
        idx = getattr(s0, "device_index", None)
        raw0 = getattr(s0, "cuda_stream", None)
        if raw is None or idx is None or raw0 is None or raw(idx) != raw0:
            def mark() -> Any:
                ev = pop() if pool else new()
                record(ev, cur())
                return ev

            return mark

        def mark() -> Any:
            ev = pop() if pool else new()
            if raw(idx) == raw0:
                record(ev, s0)
            else:
                record(ev, cur())
            return ev

        return mark

    def _try_anchor(self, spin_ns: int) -> bool:
        """Records an event and, if the GPU stamps it within spin_ns of the record call (it was idle), makes it the
        anchor; the event's time is then within [h0, h2] of the host clock, and h1 is taken for it."""
        ev = self._new_event()
        h0 = self.now()
        ev.record(self._stream())
        h1 = self.now()
        deadline = h0 + spin_ns
        while not ev.query():
            if self.now() > deadline:
                return False
        h2 = self.now()
        if h2 > deadline:
            return False
        if self.anchor is not None:
            predicted = self.anchor_host + int(round(self.anchor.elapsed_time(ev) * 1e6))
            self.drift_max_ns = max(self.drift_max_ns, abs(h1 - predicted))
        self.uncertainty_max_ns = max(self.uncertainty_max_ns, h2 - h0)
        self.anchor, self.anchor_host = ev, h1
        self.anchors += 1
        return True

    def begin(self) -> int:
        self.reserve(self.POOL_WARM)
        self.mark = self._fast_mark()  # type: ignore[method-assign]
        self._synchronize()
        if self._real:
            self.calibrate_lead()
            self._synchronize()
        if not self._try_anchor(10**9):
            raise StateError("the GPU did not stamp an event within 1 s of a synchronisation: is it busy elsewhere?")
        return self.now()

    def reserve(self, n: int) -> None:
        """Makes the pool hold at least n events: created, and their CUDA events with them (made at the first
        record), here rather than in the hooks."""
        if not self._real:
            return
        pool = self._pool
        if len(pool) >= n:
            return
        stream = self._stream()
        for _ in range(n - len(pool)):
            ev = self._new_event()
            ev.record(stream)
            pool.append(ev)

    def calibrate_lead(self) -> None:
        """Measures the rate of ``torch.cuda._sleep`` (a kernel that spins a number of GPU clock cycles), which the
        lead of a sampled step uses; without it (or with fake events) there is no lead."""
        self.cycles_per_s = None
        f = getattr(getattr(self.torch, "cuda", None), "_sleep", None)
        if f is None or not self._real:
            return
        stream = self._stream()
        e0, e1 = self._new_event(), self._new_event()
        f(1000)
        e0.record(stream)
        f(2_000_000)
        e1.record(stream)
        e1.synchronize()
        ms = e0.elapsed_time(e1)
        if ms > 0:
            rate = self.cycles_per_s = 2_000_000 / (ms * 1e-3)
            self._lead = lambda seconds: f(int(seconds * rate))

    @property
    def has_lead(self) -> bool:
        return self._lead is not None

    def lead(self, seconds: float) -> bool:
        """Enqueues ``seconds`` of GPU-side delay on the current stream (no host wait); False without a lead."""
        if self._lead is None:
            return False
        self._lead(seconds)
        return True

    def maybe_reanchor(self) -> None:
        age = self.now() - self.anchor_host
        if age < 1_000_000_000:
            return
        if self._try_anchor(self.PROBE_SPIN_NS):
            return
        if age >= self.anchor_max_age_ns:
            self._synchronize()
            self.forced_syncs += 1
            self._try_anchor(10**9)

    def convert(self, times: List[Any], k: int, force: bool) -> int:
        """Replaces completed events times[k:] by host ns, in order; returns the index of the first left.

        force: wait (on one event) until at least half of the pending events are complete, which bounds them.
        """
        n = len(times)
        if k >= n:
            return k
        if force:
            j = k + (n - k) // 2
            tok = times[j]
            if not isinstance(tok, int):
                tok.synchronize()
        # Events of one stream complete in order: find the first one not complete by bisection (a few queries,
        # not one per event).
        last = times[n - 1]
        if not (isinstance(last, int) or last.query()):
            lo, hi = k, n - 1
            while lo < hi:
                mid = (lo + hi) // 2
                t = times[mid]
                if isinstance(t, int) or t.query():
                    lo = mid + 1
                else:
                    hi = mid
            n = hi
        anchor, base = self.anchor, self.anchor_host
        prev = times[k - 1] if k > 0 else 0
        pool = self._pool
        elapsed = self._elapsed or type(anchor).elapsed_time
        events = 0
        while k < n:
            tok = times[k]
            if not isinstance(tok, int):
                try:
                    h = base + round(elapsed(anchor, tok) * 1e6)
                except RuntimeError:  # an event of another stream, not complete yet
                    break
                pool.append(tok)
                events += 1
                tok = h
            elif tok < prev:
                # A host marker (start, stop) is exact: mapped event times past it come from the anchor's
                # uncertainty or drift; pull them back to it.
                j = k - 1
                while j >= 1 and times[j] > tok:  # (times[0] may already carry energy: left alone)
                    times[j] = tok
                    j -= 1
                prev = tok
            if tok < prev:
                tok = prev  # markers of one stream are ordered; clamp the mapping's jitter
            times[k] = prev = tok
            k += 1
        self.events += events
        return k

    def finish(self) -> int:
        self._synchronize()
        return self.now()

    def info(self) -> Dict[str, Any]:
        return {
            "kind": "cuda",
            "clock": "CUDA events mapped to CLOCK_MONOTONIC through anchor events",
            "events": self.events,
            "anchors": self.anchors,
            "forced_syncs": self.forced_syncs,
            "anchor_uncertainty_max_s": self.uncertainty_max_ns * 1e-9,
            "drift_max_s": self.drift_max_ns * 1e-9,
            "lead": self._lead is not None,
        }


# --------------------------------------------------------------------------------------------------------------
# The state of one measurement


def _walk_call_nodes(roots: List[Any], b: int, leaf: bool = True) -> Tuple[List[Any], int, int, Any]:
    """The autograd nodes one layer call created, from its outputs' nodes (roots): those with sequence numbers
    above b (created after its inputs' nodes).  Returns (roots among them, lowest and highest number, the node
    whose end is the end of the call's backward).

    That end node is the last of them to run that hands a gradient to the layer's inputs (an edge to a node
    numbered b or below), the engine running the highest ready number first; where no input takes a gradient,
    the last of them to run (the lowest number).  Not simply the lowest number: under autocast a layer whose
    input is already in the autocast dtype first creates its weight's cast node, which runs after the node that
    computes the input's gradient, and in between the engine adds that gradient to the others the input gets
    (the residual path): a whole tensor-sized add that is not the layer's (ResNet's first 1x1 convolution of
    each block measured +60% on the H100, the size of that add).  A post-hook runs before the engine adds the
    node's outputs.  For a module with children (leaf False) the end stays the lowest number: the merges of the
    gradients its own branches give its inputs (a residual block's) are its work.

    Every node object seen is kept until the walk ends: torch makes a node's Python object on demand and drops
    it with its last reference, so the id() of a dropped one can come back for another node, which a set of
    ids would then skip (it cut multi-head attention's backward short, to its output projection, on the H100)."""
    lo, hi, last = _MAX_SEQ, -1, None
    end, end_s = None, _MAX_SEQ
    firsts = []
    stack = []
    for n in roots:
        s = n._sequence_nr()
        if b < s < _MAX_SEQ:
            firsts.append(n)
            stack.append((n, s))
    seen: Dict[int, Tuple[Any, int]] = {}
    while stack:
        n, s = stack.pop()
        if s < lo:
            lo, last = s, n
        if s > hi:
            hi = s
        for nxt, _ in n.next_functions:
            if nxt is not None:
                i = id(nxt)
                got = seen.get(i)
                if got is None:
                    s2 = nxt._sequence_nr()
                    seen[i] = (nxt, s2)
                    if b < s2 < _MAX_SEQ:
                        stack.append((nxt, s2))
                else:
                    s2 = got[1]
                if s2 <= b and s < end_s:  # n hands a gradient to an input
                    end, end_s = n, s
        if len(seen) > _WALK_LIMIT:
            break
    return firsts, lo, hi, (end if end is not None and leaf else last)


class _Burst:
    """Consecutive sampled steps after one opening lead: the lead [t_open, t_a], the work up to t_b (time and
    interpolated energy per slot, with the short leads inside it apart)."""

    __slots__ = ("lead_slot", "t_open", "t_a", "t_b", "slots", "lead_e", "inner", "inner_t", "inner_e", "marks",
                 "index", "work_t", "lead_win", "work_win", "p_lead", "p_work", "total", "q")

    def __init__(self, lead_slot: int, t_open: int, t_a: int, ndev: int, index: int):
        self.lead_slot, self.t_open, self.t_a, self.t_b = lead_slot, t_open, t_a, 0
        self.slots: Dict[int, List[Any]] = {}
        self.lead_e = [0.0] * ndev  # the opening lead's energy (interpolated, then what _apply_burst_power gave)
        self.inner: List[Tuple[int, int]] = []
        self.inner_t = 0
        self.inner_e = [0.0] * ndev  # the short leads' energy, likewise
        self.marks = 0
        self.index = index  # the n-th burst opened (_Run.burst_steps[index])
        self.work_t = 0  # time of its work intervals, set when it closes
        # set by _finish_bursts: the interior's lead and work time (0 without an interior), the powers measured
        self.lead_win = 0
        self.work_win = 0
        self.p_lead = [float("nan")] * ndev
        self.p_work = [float("nan")] * ndev
        self.total: List[Optional[float]] = [None] * ndev  # the burst's whole energy, kept by every correction
        self.q: List[Optional[float]] = [None] * ndev  # the work's power as applied (None: interpolated)


class _Row:
    __slots__ = ("name", "type", "phase", "kind", "layer")

    def __init__(self, name: str, type_: str, phase: Optional[int], kind: str, layer: int):
        self.name, self.type, self.phase, self.kind, self.layer = name, type_, phase, kind, layer


class _Call:
    """One call of a layer, seen from its backward: the autograd nodes it created span sequence numbers
    [lo, hi].  Its methods are the node hooks that mark the start and the end of its backward."""

    __slots__ = ("run", "slot", "lo", "hi", "active", "capture", "where")

    def __init__(self, run: "_Run", slot: int, lo: int, hi: int, capture: Any = None, where: Any = None):
        self.run, self.slot, self.lo, self.hi, self.capture, self.where = run, slot, lo, hi, capture, where
        self.active = False

    def on_start(self, grad_outputs: Any, node_id: int = 0) -> None:
        run = self.run
        if not run.active:
            return None
        tid = run.graph_task_id()
        if tid not in run.bw_tasks:
            run._enter_graph_task(tid)
        if self.capture is not None and node_id:
            run.capture_grads(self.capture, node_id, grad_outputs, self.where)
        if self.active:
            return None
        self.active = True
        bst = run.bstack
        lo, hi = self.lo, self.hi
        while bst and not (bst[-1].lo <= lo and hi <= bst[-1].hi):
            bst.pop().active = False  # ended without its end marker (interleaved branches)
        bst.append(self)
        slot = self.slot
        run.calls[slot] += 1
        run.mark(slot)
        return None

    def on_end(self, grad_inputs: Any, grad_outputs: Any) -> None:
        run = self.run
        if not run.active or not self.active:
            return None
        self.active = False
        bst = run.bstack
        if bst and bst[-1] is self:
            bst.pop()
        else:
            for i in range(len(bst) - 1, -1, -1):
                if bst[i] is self:
                    for c in bst[i + 1 :]:
                        c.active = False
                    del bst[i:]
                    break
        if bst and not run.fstack and run.bw_tasks:
            run.mark(bst[-1].slot)  # back to the enclosing layer's backward (idle_slot(), its common case)
        else:
            run.mark(run.idle_slot())
        return None


class _TensorSpec:
    """A tensor argument seen by a layer: its shape, its memory layout and a sample of its values (a slice along
    dim 0)."""

    __slots__ = ("shape", "dtype", "requires_grad", "sample", "order")

    def __init__(self, t: Any, max_bytes: int, torch: Any):
        self.shape = tuple(t.shape)
        self.dtype = t.dtype
        self.requires_grad = bool(t.requires_grad)
        self.order = _memory_order(t, torch)
        d = t.detach()
        nbytes = d.numel() * d.element_size()
        if nbytes > max_bytes and d.dim() > 0 and d.shape[0] > 1:
            rows = max(1, int(d.shape[0] * max_bytes // nbytes))
            d = d[:rows]
        self.sample = d.clone()

    def make(self, torch: Any) -> Any:
        """A tensor of the seen shape and memory layout: a layer's kernels run at another speed on a transposed
        (MultiheadAttention's output with batch_first) or channels_last input than on a contiguous one."""
        s = self.sample
        if tuple(s.shape) != self.shape:
            reps = -(-self.shape[0] // s.shape[0])
            s = s.repeat((reps,) + (1,) * (s.dim() - 1))[: self.shape[0]]
        if self.order is None:
            s = s.contiguous()
        else:
            inverse = [0] * len(self.order)
            for pos, dim in enumerate(self.order):
                inverse[dim] = pos
            s = s.permute(self.order).contiguous().permute(inverse)
        return s.clone() if s.data_ptr() == self.sample.data_ptr() else s


def _memory_order(t: Any, torch: Any) -> Optional[Tuple[int, ...]]:
    """The dimensions of a strided tensor from the outermost in memory to the innermost, or None when that is
    the contiguous order.  Dimensions of size 1 (any stride, no bearing on the layout) go innermost; gaps (a
    slice of a larger tensor) and repeats (expand) are not kept."""
    if t.dim() < 2 or t.layout != torch.strided or t.is_contiguous():
        return None
    dims = range(t.dim())
    order = tuple(sorted(dims, key=lambda i: (-t.stride(i) if t.shape[i] > 1 else 0, i)))
    return None if order == tuple(dims) else order


class _Capture:
    """What replay needs to run a layer alone: its inputs, output gradients, mode and autocast state."""

    __slots__ = ("args", "kwargs", "training", "autocast", "grads", "nout", "key")

    def __init__(self) -> None:
        self.args: Any = None
        self.kwargs: Any = None
        self.training = False
        self.autocast: Tuple[bool, Any] = (False, None)
        self.grads: Dict[int, Any] = {}
        self.nout = 0
        self.key: Any = None


def _flatten_tensors(obj: Any, torch: Any, out: List[Any], depth: int = 0) -> None:
    if isinstance(obj, torch.Tensor):
        out.append(obj)
    elif depth < 3 and isinstance(obj, (tuple, list)):
        for o in obj:
            _flatten_tensors(o, torch, out, depth + 1)
    elif depth < 3 and isinstance(obj, dict):
        for o in obj.values():
            _flatten_tensors(o, torch, out, depth + 1)


def _spec_of(obj: Any, torch: Any, max_bytes: int, memo: Dict[int, Any], depth: int = 0) -> Any:
    """Tensors -> _TensorSpec, the rest kept.  The same tensor passed twice (self-attention's query, key, value)
    gives the same spec, so that replay passes one tensor twice too (MultiheadAttention takes another path
    otherwise)."""
    if isinstance(obj, torch.Tensor):
        spec = memo.get(id(obj))
        if spec is None:
            spec = memo[id(obj)] = _TensorSpec(obj, max_bytes, torch)
        return spec
    if depth < 3 and isinstance(obj, tuple):
        return tuple(_spec_of(o, torch, max_bytes, memo, depth + 1) for o in obj)
    if depth < 3 and isinstance(obj, list):
        return [_spec_of(o, torch, max_bytes, memo, depth + 1) for o in obj]
    if depth < 3 and isinstance(obj, dict):
        return {k: _spec_of(v, torch, max_bytes, memo, depth + 1) for k, v in obj.items()}
    return obj


def _key_of(obj: Any, memo: Optional[Dict[int, int]] = None) -> Any:
    """A hashable description of captured arguments: shapes, dtypes, which tensors are the same one."""
    if memo is None:
        memo = {}
    if isinstance(obj, _TensorSpec):
        alias = memo.setdefault(id(obj), len(memo))
        return ("T", obj.shape, str(obj.dtype), obj.requires_grad, obj.order, alias)
    if isinstance(obj, (tuple, list)):
        return tuple(_key_of(o, memo) for o in obj)
    if isinstance(obj, dict):
        return tuple((k, _key_of(v, memo)) for k, v in obj.items())
    try:
        hash(obj)
        return obj
    except TypeError:
        return ("id", id(obj))


def _make(obj: Any, torch: Any, leaves: List[Any], memo: Dict[int, Any]) -> Any:
    """Builds the replay inputs from specs (the same spec twice gives the same tensor twice)."""
    if isinstance(obj, _TensorSpec):
        t = memo.get(id(obj))
        if t is None:
            t = obj.make(torch)
            if obj.requires_grad and (t.is_floating_point() or t.is_complex()):
                t.requires_grad_(True)
                leaves.append(t)
            memo[id(obj)] = t
        return t
    if isinstance(obj, tuple):
        return tuple(_make(o, torch, leaves, memo) for o in obj)
    if isinstance(obj, list):
        return [_make(o, torch, leaves, memo) for o in obj]
    if isinstance(obj, dict):
        return {k: _make(v, torch, leaves, memo) for k, v in obj.items()}
    return obj


class _Run:
    """One measurement between start() and stop(): markers, accumulators, hook state."""

    def __init__(self, tool: "LayerwiseMeasurementTool", torch: Any, model: Any, layers: List[Tuple[str, Any]],
                 clock: Any, ndev: int):
        self.tool = tool
        self.torch = torch
        self.Tensor = torch.Tensor
        self.model = model
        self.layers = layers
        # leaf modules' backward ends where their inputs get their gradient; a module with children keeps the
        # gradient merges of its own inputs (a residual block's branches) in its backward (_walk_call_nodes)
        self.leaf = [next(iter(m.children()), None) is None for _, m in layers]
        self.clock = clock
        self.ndev = ndev
        self.active = False
        self.rows: List[_Row] = []
        self.acc_t: List[int] = []
        self.acc_e: List[List[float]] = []
        self.calls: List[int] = []
        self.layer_rows: List[List[Optional[int]]] = [[None, None] for _ in layers]
        self.outside: Dict[Tuple[str, Optional[int]], int] = {}
        # markers: times (host ns, or clock tokens not converted yet from index k on) and slots
        self.mt: List[Any] = []
        self.ms: List[int] = []
        self.mh: Optional[List[int]] = [] if tool._host_shadow else None
        self.acc_th: List[int] = []
        self.k = 0
        self.last_slot = -1
        self.fstack: List[Any] = []
        self.bstack: List[_Call] = []
        self.bw_tasks: List[int] = []
        self.cur_phase: Optional[int] = None
        self.first_phase: Optional[int] = None
        self.last_seq: Dict[int, int] = {}
        f = getattr(torch._C, "_current_graph_task_id", None)
        self.graph_task_id: Callable[[], int] = f if f is not None else (lambda: 0)  # see _graph_task_id
        self.lock = threading.Lock()
        self.next_pass_ns = 0
        self.check_at = tool.max_pending
        self.keep_win: Optional[Tuple[int, int]] = None  # (window id, start ns) opened at mt[0]
        self.captures: Dict[int, _Capture] = {}
        # replay: a phase's first warm-up step runs the layers' hooks with the markers muted, to capture inputs
        # and output gradients outside the sampled steps (begin_capture)
        self.captured = [False, False]
        self.muted = False
        self.calls_before_capture: Optional[List[int]] = None
        self.handles: List[Any] = []
        self.t_start = 0
        self.t_end = 0
        self.window = 0
        self.passes = 0
        self.resolve_ns = 0  # host time spent in resolve passes while measuring
        self.pre_first = self._outside_row(OUTSIDE_OTHER, None)
        # Step sampling (see step_pre): a step is a forward of the model itself, up to the next one.
        self.sample_all = tool.sample == "all"
        self.steps = [0, 0]  # per phase
        self.sampled = [0, 0]
        # host ns of the recent sampled steps (sample="auto"), for plan_burst
        self.dur_sampled: List[Deque[int]] = [collections.deque(maxlen=32), collections.deque(maxlen=32)]
        self.dur_plain: List[List[int]] = [[], []]  # host ns of recent steps not sampled (warm-up excluded)
        self.unbilled: List[List[int]] = [[], []]  # sampled steps' host ns not yet compared with a base
        self.extra_ns = [0.0, 0.0]  # what the sampled steps cost beyond steps not sampled, per phase
        self.billed = [0, 0]
        self.since_sampled = 0
        self.n_plain = [0, 0]
        self._base: List[Optional[float]] = [None, None]
        self._base_n = [-1, -1]
        self.lead_ns = 0  # opening leads enqueued, in total (counted in the overhead budget)
        self.lead_inner_ns = 0  # short leads enqueued inside bursts, in total
        self.unit: Optional[Tuple[int, bool, int, bool]] = None  # (phase, sampled, t0 host ns, warm-up)
        self.attached = False
        self.stopped = False
        self.layer_hooks: List[Tuple[Any, Callable, Callable]] = []  # (module, pre, post) attached when sampling
        self.layer_handles: List[Any] = []
        self.t_start_host = time.perf_counter_ns()
        # bursts: consecutive sampled steps behind one lead (see make_step_pre, _accumulate, _finish_bursts)
        self.open_lead_slots: set = set()  # slots of opening leads (a lead row's forward half)
        self.plain_slots: set = set()
        self.burst_left = 0
        self.burst_phase = TRAIN
        self.burst_mark0: Optional[Tuple[int, int]] = None
        self.marks_per_step = 5.0 * len(layers)  # a guess until a burst has been counted
        self.burst: Optional[_Burst] = None
        self.bursts_closed: List[_Burst] = []
        self.bursts_done: List[_Burst] = []  # measured (see _finish_bursts, refine_work_power)
        self.n_bursts = 0  # bursts seen by _accumulate
        self.burst_steps: List[int] = []  # sampled steps of each burst opened, in order
        self.work_power: Dict[str, Any] = {}  # per phase: the work's power from the bursts and from the whole run
        self.work_per_mark: Optional[float] = None  # GPU ns of work per marker, measured on the last burst
        self.lead_host_ns = 0
        self.host_per_mark_min: Optional[float] = None  # the burst's least host time per marker (_inner_lead)
        self.lead_end: Any = None  # the marker after the burst's last lead (an event: has the GPU got there?)
        self.leads_skipped = 0
        self.first_unit_ns = 50_000_000  # the warm-up step's host time, once known

    # -- rows and slots ----------------------------------------------------------------------------------------

    def _new_row(self, row: _Row) -> int:
        self.rows.append(row)
        for _ in range(2):
            self.acc_t.append(0)
            self.acc_th.append(0)
            self.acc_e.append([0.0] * self.ndev)
            self.calls.append(0)
        return len(self.rows) - 1

    def layer_row(self, li: int, phase: int) -> int:
        r = self.layer_rows[li][phase]
        if r is None:
            name, m = self.layers[li]
            r = self._new_row(_Row(_display_name(name), type(m).__name__, phase, "layer", li))
            self.layer_rows[li][phase] = r
        return r

    def _outside_row(self, name: str, phase: Optional[int]) -> int:
        key = (name, phase)
        r = self.outside.get(key)
        if r is None:
            r = self._new_row(_Row(name, "outside", phase, "outside", -1))
            self.outside[key] = r
        return r

    def other_slot(self) -> int:
        if self.cur_phase is None:
            return 2 * self.pre_first
        return 2 * self._outside_row(OUTSIDE_OTHER, self.cur_phase)

    def idle_slot(self) -> int:
        """Who owns the time when no layer runs: the enclosing forward, the backward, or 'other'."""
        if self.fstack:
            return self.fstack[-1][0]
        if self.bw_tasks:
            if self.bstack:
                return self.bstack[-1].slot
            return 2 * self._outside_row(OUTSIDE_BACKWARD, TRAIN) + 1
        return self.other_slot()

    # -- markers -----------------------------------------------------------------------------------------------

    def mark(self, slot: int) -> None:
        """Time from now on belongs to slot (2 x row + forward 0 / backward 1).  install() replaces it by the
        closure of _make_mark(), which does the same with fewer lookups."""
        if slot == self.last_slot or self.muted:
            return
        self.last_slot = slot
        self.mt.append(self.clock.mark())
        self.ms.append(slot)
        if self.mh is not None:
            self.mh.append(time.perf_counter_ns())
        if len(self.mt) >= self.check_at:
            self._check_pending()

    def _check_pending(self) -> None:
        if self.burst_left > 0 or self.burst_mark0 is not None:
            self._inner_lead()  # inside a burst: no resolve pass, a short lead every LEAD_EVERY markers
            return
        n = len(self.mt)
        self.resolve(force=n - self.k >= self.tool.max_pending)
        self.check_at = len(self.mt) + max(64, self.tool.max_pending // 2)

    def _make_mark(self) -> Callable[[int], None]:
        run = self
        cmark = self.clock.mark
        mt, mh = self.mt, self.mh
        mt_append, ms_append = mt.append, self.ms.append
        if mh is None:
            def mark(slot: int) -> None:
                if slot != run.last_slot and not run.muted:
                    run.last_slot = slot
                    mt_append(cmark())
                    ms_append(slot)
                    if len(mt) >= run.check_at:
                        run._check_pending()
        else:
            mh_append, host_ns = mh.append, time.perf_counter_ns

            def mark(slot: int) -> None:
                if slot != run.last_slot and not run.muted:
                    run.last_slot = slot
                    mt_append(cmark())
                    ms_append(slot)
                    mh_append(host_ns())
                    if len(mt) >= run.check_at:
                        run._check_pending()
        return mark

    def maybe_resolve(self) -> None:
        if self.burst_left > 0 or self.burst_mark0 is not None:
            return  # inside a burst the host must stay ahead of the GPU: resolve after it
        now = time.perf_counter_ns()
        if now >= self.next_pass_ns:
            self.next_pass_ns = now + int(self.tool.resolve_interval * 1e9)
            self.resolve(force=False)

    def resolve(self, force: bool = False, final_timeout: Optional[float] = None) -> None:
        """Converts completed markers to host times, then gives each interval whose samples exist its energy.

        final_timeout: at stop(), wait that long for the samples after the last marker."""
        if not self.lock.acquire(final_timeout is not None):  # a pass already running elsewhere is enough
            return
        t_in = time.perf_counter_ns()
        try:
            self.passes += 1
            mt, ms, mh = self.mt, self.ms, self.mh
            if final_timeout is None:
                self.clock.maybe_reanchor()
            self.k = self.clock.convert(mt, self.k, force or final_timeout is not None)
            k = self.k
            ctx = self.tool._ctx
            acc_t, acc_e, acc_th = self.acc_t, self.acc_e, self.acc_th
            timeout = 0.0 if final_timeout is None else final_timeout
            ndev = self.ndev
            group = _GROUP_NS
            j = 0
            while j + 1 < k:
                # A group: consecutive intervals spanning >= 1 ms (or the last ones).  Its energy comes from one
                # energy_between; inside it, energy is split by time, as the sampler's linear interpolation does
                # anyway between its knots (10 ms for RAPL and instant power, 100 ms for the GPU counter).
                tj = mt[j]
                g = j + 1
                while g < k - 1 and mt[g] - tj < group:
                    g += 1
                tg = mt[g]
                if tg > tj:
                    r = ctx.energy_between(tj, tg, timeout)
                    if not r["resolved"]:
                        break
                    e = r["energy_j"]
                    if j == 0 and self.keep_win is not None and self.keep_win[1] == tj:
                        e = self._gone_fallback(e, r["source"], tg)
                    span = tg - tj
                    t0 = tj
                    if ndev == 2 and not self.open_lead_slots:  # the usual case (CPU + one GPU), unrolled
                        p0, p1 = e[0] / span, e[1] / span
                        for i in range(j, g):
                            t1 = mt[i + 1]
                            dt = t1 - t0
                            if dt:
                                sl = ms[i]
                                acc_t[sl] += dt
                                row = acc_e[sl]
                                row[0] += p0 * dt
                                row[1] += p1 * dt
                            t0 = t1
                    else:  # any number of devices, and the bursts followed
                        self._accumulate(j, g, [v / span for v in e])
                if mh is not None:
                    for i in range(j, g):
                        acc_th[ms[i]] += mh[i + 1] - mh[i]
                j = g
            if j:
                del mt[:j]
                del ms[:j]
                if mh is not None:
                    del mh[:j]
                self.k -= j
            if final_timeout is not None and self.burst is not None and len(mt) == 1:
                self._close_burst(self.burst, mt[0])  # stop() during a burst
            if self.bursts_closed:
                self._finish_bursts(timeout)
            if final_timeout is None:
                self._keep(ctx, mt[0])
        finally:
            if final_timeout is None:  # (the pass at stop() waits for the last samples: not counted)
                self.resolve_ns += time.perf_counter_ns() - t_in
            self.lock.release()

    def _accumulate(self, j: int, g: int, rates: List[float]) -> None:
        """The intervals j..g-1 of one group, with the group's power per device: their time and energy added to
        their slots, and, once leads were enqueued, followed through the bursts: an opening lead opens one, the
        intervals after it belong to it (short leads apart), the next step not sampled closes it."""
        mt, ms = self.mt, self.ms
        acc_t, acc_e = self.acc_t, self.acc_e
        ndev = self.ndev
        open_slots, plain_slots = self.open_lead_slots, self.plain_slots
        b = self.burst
        t0 = mt[j]
        for i in range(j, g):
            t1 = mt[i + 1]
            dt = t1 - t0
            sl = ms[i]
            if sl in open_slots:
                if b is not None:
                    self._close_burst(b, t0)
                b = self.burst = _Burst(sl, t0, t1, ndev, self.n_bursts)
                self.n_bursts += 1
                for d in range(ndev):
                    b.lead_e[d] += rates[d] * dt
            elif b is not None:
                if sl in plain_slots:
                    self._close_burst(b, t0)
                    b = None
                elif sl - 1 in open_slots:  # a short lead
                    b.inner.append((t0, t1))
                    b.inner_t += dt
                    for d in range(ndev):
                        b.inner_e[d] += rates[d] * dt
                else:
                    rec = b.slots.get(sl)
                    if rec is None:
                        rec = b.slots[sl] = [0, [0.0] * ndev]
                    rec[0] += dt
                    er = rec[1]
                    for d in range(ndev):
                        er[d] += rates[d] * dt
                    b.marks += 1
            if dt:
                acc_t[sl] += dt
                row = acc_e[sl]
                for d in range(ndev):
                    row[d] += rates[d] * dt
            t0 = t1

    def _close_burst(self, b: "_Burst", t_b: int) -> None:
        b.t_b = t_b
        self.burst = None
        self.bursts_closed.append(b)
        work = b.work_t = sum(rec[0] for rec in b.slots.values())
        if b.marks and work > 0:
            self.work_per_mark = work / b.marks

    def _finish_bursts(self, timeout: float) -> None:
        """Gives each closed burst the power of its work, measured by the counter over the burst's interior.

        The linear interpolation gives every interval the average power of the counter steps around it, which
        inside a burst mixes the work with the leads (a waiting GPU draws far less) and, at its ends, with the
        neighbouring steps.  Here: the opening lead's interior (0.1 s, one counter step, in from both ends)
        gives the power of a waiting GPU, P_lead; the burst's interior (the same margin) holds only the burst,
        work and short leads, so its energy is P_lead x (short leads' time in it) + P_work x (the rest), which
        gives P_work.  The burst's work intervals get P_work, its short leads P_lead, and the opening lead what
        the interpolation had given the whole burst beyond that (never below zero: the work is scaled down
        instead), so the rows still add up.  A burst too short for an interior keeps the interpolation here;
        refine_work_power gives it the work's power measured over the whole run at stop() where it can.  Without
        the opening lead's interior either, it keeps the interpolation (``clock["bursts_uncorrected"]``)."""
        ctx = self.tool._ctx
        left = []
        margin = _COUNTER_STEP_NS
        for b in self.bursts_closed:
            a, z = b.t_a + margin, b.t_b - margin
            la, lz = b.t_open + margin, b.t_a - margin
            if lz - la < margin // 2:
                continue
            lead_win = sum(max(0, min(t1, z) - max(t0, a)) for t0, t1 in b.inner)
            work_win = (z - a) - lead_win
            interior = z - a >= margin // 2 and work_win > 0
            rl = ctx.energy_between(la, lz, timeout)
            r = ctx.energy_between(a, z, timeout) if interior and rl["resolved"] else rl
            if not (r["resolved"] and rl["resolved"]):
                left.append(b)
                continue
            if b.work_t <= 0:
                continue
            if interior:
                b.lead_win, b.work_win = lead_win, work_win
            for d in range(self.ndev):
                p_lead = rl["energy_j"][d] / (lz - la)
                if math.isnan(p_lead):
                    continue
                b.p_lead[d] = p_lead
                if interior:
                    p_work = (r["energy_j"][d] - p_lead * lead_win) / work_win
                    if not math.isnan(p_work):
                        b.p_work[d] = p_work
                        self._apply_burst_power(b, d, p_work)
            self.bursts_done.append(b)
        self.bursts_closed = left

    def burst_counts(self) -> Tuple[int, int]:
        """Bursts whose work got a measured power (from their interior or the whole run), and the others."""
        done = sum(1 for b in self.bursts_done if any(q is not None for q in b.q))
        return done, max(0, self.n_bursts - done)

    def _apply_burst_power(self, b: "_Burst", d: int, p_work: float) -> None:
        """Gives a burst's work intervals the power p_work (in J per ns, as times are in ns here), its short leads
        P_lead, its opening lead the rest of the burst's energy (the interpolation's, kept: the rows still add
        up; never below zero: the work and short leads are scaled down instead).  Can be applied again with
        another p_work (refine_work_power)."""
        if b.total[d] is None:
            b.total[d] = sum(rec[1][d] for rec in b.slots.values()) + b.inner_e[d] + b.lead_e[d]
        total = b.total[d]
        new_work, new_inner = max(0.0, p_work) * b.work_t, b.p_lead[d] * b.inner_t
        if new_work + new_inner > total > 0:
            f = total / (new_work + new_inner)
            new_work, new_inner = new_work * f, new_inner * f
        q, q_old = new_work / b.work_t, b.q[d]
        acc_e = self.acc_e
        for sl, rec in b.slots.items():
            acc_e[sl][d] += q * rec[0] - (rec[1][d] if q_old is None else q_old * rec[0])
        acc_e[b.lead_slot + 1][d] += new_inner - b.inner_e[d]
        acc_e[b.lead_slot][d] += (total - new_work - new_inner) - b.lead_e[d]
        b.q[d], b.inner_e[d], b.lead_e[d] = q, new_inner, total - new_work - new_inner

    def refine_work_power(self) -> None:
        """At stop(): the power of the bursts' work measured over the whole run, where that is better conditioned.

        A burst's interior holds work and short leads, E = P_work x work + P_wait x leads, and P_wait is taken
        from the opening lead: an error in it moves P_work by (leads / work) times as much, and where the hooks
        slow the host a lot the short leads fill most of the burst (2/3 on a transformer layer: P_work came out
        above the card's power limit).  The steps not sampled do the same work without the tool: their energy
        is P_work x busy + P_wait x idle, busy = their number x the GPU time of a sampled step (the bursts'
        work per step, leads apart), idle = their time beyond it.  Where idle / busy is the smaller ratio (a
        GPU-bound job: no idle time), P_work from those steps, measured over most of the run, replaces the
        bursts' own, and a burst too short for an interior gets it in any case; otherwise the bursts' stays.
        Never where idle exceeds busy (_MAX_IDLE_PER_BUSY): a short run whose only step not sampled is a slow
        warm-up gave 2.3 times the card's power that way.  ``result.clock["work_power"]`` gives both per phase."""
        for ph in (TRAIN, INFER):
            bursts = [b for b in self.bursts_done if self.rows[b.lead_slot // 2].phase == ph]
            u = self.outside.get((OUTSIDE_UNSAMPLED, ph))
            if not bursts or u is None:
                continue
            steps = sum(self.burst_steps[b.index] for b in bursts if b.index < len(self.burst_steps))
            work_t = sum(b.work_t for b in bursts)
            n_u, t_u = self.calls[2 * u], self.acc_t[2 * u]
            if steps <= 0 or n_u <= 0 or t_u <= 0:
                continue
            busy = min(t_u, n_u * work_t / steps)
            idle = t_u - busy
            work_win = sum(b.work_win for b in bursts)
            rho_bursts = sum(b.lead_win for b in bursts) / work_win if work_win else math.inf
            rho_run = idle / busy
            info: Dict[str, Any] = {"busy_share_not_sampled": busy / t_u,
                                    "lead_share_bursts": (rho_bursts / (1.0 + rho_bursts) if work_win else None),
                                    "from": "bursts", "bursts_w": [], "run_w": []}
            p_run = []
            for d in range(self.ndev):
                # P_wait: the opening leads' power, weighted by the bursts' work
                pl = [(b.p_lead[d], b.work_t) for b in bursts if not math.isnan(b.p_lead[d])]
                p_wait = sum(x * w for x, w in pl) / sum(w for _, w in pl) if pl else math.nan
                # (the bursts with an interior: the others have no power of their own)
                p_b = sum(b.p_work[d] * b.work_win for b in bursts if b.work_win) / work_win if work_win else math.nan
                p = (self.acc_e[2 * u][d] - (p_wait * idle if idle else 0.0)) / busy
                info["bursts_w"].append(p_b * 1e9)
                info["run_w"].append(p * 1e9)
                p_run.append(p)
            # The run's estimate only where the waiting power's error is not amplified (idle <= busy): a run
            # whose steps not sampled are mostly idle (a host-bound job, or only a slow warm-up step) says little.
            run_ok = rho_run <= _MAX_IDLE_PER_BUSY
            run_better = run_ok and rho_run < rho_bursts
            if run_better:
                info["from"] = "steps not sampled"
            for d in range(self.ndev):
                if not run_ok or math.isnan(p_run[d]) or p_run[d] <= 0:
                    continue  # (or a device that measured nothing)
                for b in bursts:
                    # the run's power where better conditioned, and for bursts too short for an interior
                    if not math.isnan(b.p_lead[d]) and (run_better or b.q[d] is None):
                        self._apply_burst_power(b, d, p_run[d])
            if run_ok and not run_better and any(b.q[d] is None for b in bursts for d in range(self.ndev)):
                info["from"] = "bursts, steps not sampled for the bursts without an interior"
            self.work_power[PHASES[ph]] = info

    def _keep(self, ctx: Any, t0: int) -> None:
        """Keeps a library window open at the start of the oldest open interval: if no marker comes for longer
        than the sampler's history (minutes), energy_between cannot go back that far, but the window can."""
        if self.keep_win is not None and self.keep_win[1] == t0:
            return
        self._drop_keep(ctx)
        try:
            self.keep_win = (ctx.start_at(t0), t0)
        except Exception:
            self.keep_win = None

    def _drop_keep(self, ctx: Any) -> None:
        if self.keep_win is not None:
            try:
                ctx.release(self.keep_win[0])
            except Exception:
                pass
            self.keep_win = None

    def _gone_fallback(self, e: List[float], sources: List[str], t1: int) -> List[float]:
        if not any(math.isnan(v) and s != "none" for v, s in zip(e, sources)):
            return e
        ctx = self.tool._ctx
        w = self.keep_win[0]  # type: ignore[index]
        self.keep_win = None
        try:
            ctx.stop_at(w, t1)
            r = ctx.result(w, 10.0)
            return [a if math.isnan(b) else b for a, b in zip(e, r["energy_j"])]
        finally:
            ctx.release(w)

    # -- hooks -------------------------------------------------------------------------------------------------

    def install(self) -> None:
        torch = self.torch
        grad_enabled = torch.is_grad_enabled
        Tensor = torch.Tensor
        run = self
        root = self.model
        root_selected = any(m is root for _, m in self.layers)
        replay = self.tool.mode == "replay"
        get_ident = threading.get_ident
        last_seq = self.last_seq
        last_seq_get = last_seq.get
        # Hot-path state, bound once: these lists are only ever changed in place.
        self.mark = mark = self._make_mark()  # type: ignore[method-assign]
        fstack, calls, captures = self.fstack, self.calls, self.captures
        fstack_append, fstack_pop = fstack.append, fstack.pop
        register_backward = self.register_backward
        leaf = self.leaf
        one_node = _ONE_NODE_FAST_PATH

        def input_seq(args: Any, kwargs: Any) -> int:
            b = last_seq_get(get_ident(), -1)
            for a in args:
                if isinstance(a, Tensor):
                    gf = a.grad_fn
                    if gf is not None:
                        s = gf._sequence_nr()
                        if s > b:
                            b = s
            if kwargs:
                for a in kwargs.values():
                    if isinstance(a, Tensor):
                        gf = a.grad_fn
                        if gf is not None:
                            s = gf._sequence_nr()
                            if s > b:
                                b = s
            return b

        def make_pre(li: int, module: Any) -> Callable:
            lrows = self.layer_rows[li]

            def pre(mod: Any, args: Any, kwargs: Any) -> None:
                if not run.active:
                    return None
                if grad_enabled():
                    ph = TRAIN
                    b = input_seq(args, kwargs)
                else:
                    ph = INFER
                    b = -1
                if not fstack:
                    run.outermost_forward(ph)
                r = lrows[ph]
                if r is None:
                    r = run.layer_row(li, ph)
                slot = 2 * r
                calls[slot] += 1
                cap = None
                if replay and r not in captures:
                    cap = run.capture_inputs(r, module, args, kwargs)
                fstack_append((slot, li, ph, b, cap))
                mark(slot)
                return None

            return pre

        def make_post(li: int) -> Callable:
            def post(mod: Any, args: Any, kwargs: Any, output: Any) -> None:
                if not run.active:
                    return None
                fs = fstack
                if fs and fs[-1][1] == li:
                    entry = fstack_pop()
                else:  # an exception unwound inner calls
                    idx = next((i for i in range(len(fs) - 1, -1, -1) if fs[i][1] == li), None)
                    if idx is None:
                        return None
                    entry = fs[idx]
                    del fs[idx:]
                mark(fs[-1][0] if fs else run.idle_slot())
                if entry[2] == TRAIN:
                    if one_node and entry[4] is None and isinstance(output, Tensor):
                        # register_backward's fast path, inlined: one node created by the call
                        gf = output.grad_fn
                        if gf is None:
                            return None
                        s = gf._sequence_nr()
                        if s == entry[3] + 1:
                            tid = get_ident()
                            if s > last_seq_get(tid, -1):
                                last_seq[tid] = s
                            call = _Call(run, entry[0] + 1, s, s)
                            gf.register_prehook(call.on_start)
                            gf.register_hook(call.on_end)
                            return None
                    register_backward(entry[0] + 1, output, entry[3], entry[4], leaf[entry[1]])
                return None

            return post

        def root_pre(mod: Any, args: Any, kwargs: Any) -> None:
            if not run.active:
                return None
            ph = TRAIN if grad_enabled() else INFER
            if not run.fstack:
                run.outermost_forward(ph)
            slot = 2 * run._outside_row(OUTSIDE_FORWARD, ph)
            run.calls[slot] += 1
            run.fstack.append((slot, -1, ph, -1, None))
            run.mark(slot)
            return None

        def root_post(mod: Any, args: Any, kwargs: Any, output: Any) -> None:
            if not run.active:
                return None
            fs = run.fstack
            idx = next((i for i in range(len(fs) - 1, -1, -1) if fs[i][1] == -1), None)
            if idx is None:
                return None
            ph = fs[idx][2]
            del fs[idx:]
            run.mark(run.idle_slot())
            if ph == TRAIN:
                run.register_root_backward(output)
            return None

        # Hooks of the model itself stay for the whole run (a few calls per step); the layers' hooks are attached
        # for the sampled steps only (attach/detach), since PyTorch's hook machinery alone is what costs.
        handles = self.handles
        handles.append(root.register_forward_pre_hook(self.make_step_pre(), with_kwargs=True, prepend=True))
        if not root_selected:
            handles.append(root.register_forward_pre_hook(root_pre, with_kwargs=True))
        for li, (name, m) in enumerate(self.layers):
            if m is root:
                handles.append(m.register_forward_pre_hook(make_pre(li, m), with_kwargs=True))
                handles.append(m.register_forward_hook(make_post(li), with_kwargs=True, always_call=True))
            else:
                self.layer_hooks.append((m, make_pre(li, m), make_post(li)))
        if not root_selected:
            handles.append(root.register_forward_hook(root_post, with_kwargs=True, always_call=True))
        if not self.layer_hooks:
            self.sample_all = True  # the model is the only layer: its hooks run anyway, sampling saves nothing
        self.attach()  # until the model itself is first called (layers called directly are all measured)

    def attach(self) -> None:
        hs = self.layer_handles
        for m, pre, post in self.layer_hooks:
            hs.append(m.register_forward_pre_hook(pre, with_kwargs=True))
            hs.append(m.register_forward_hook(post, with_kwargs=True, always_call=True))
        self.attached = True

    def detach(self) -> None:
        for h in self.layer_handles:
            h.remove()
        self.layer_handles = []
        self.attached = False

    def remove_hooks(self) -> None:
        self.stopped = True
        for h in self.handles:
            h.remove()
        self.handles = []
        if self.layer_handles:
            self.detach()

    # -- step sampling -----------------------------------------------------------------------------------------

    def make_step_pre(self) -> Callable:
        """The model's first forward pre-hook: a forward of the model that no measured forward or backward encloses
        begins a step (it lasts until the next one).  Decides whether the step is sampled: the layers' hooks are
        attached for it, and on a GPU a lead is enqueued first; a step not sampled has only this hook and one
        marker, its time and energy go to the phase's "not sampled" slot and are split at the end like those of
        the sampled steps (see LayerwiseMeasurementTool._extrapolate)."""
        run = self
        grad_enabled = self.torch.is_grad_enabled
        host_ns = time.perf_counter_ns

        def step_pre(mod: Any, args: Any, kwargs: Any) -> None:
            if run.stopped or run.fstack:
                return None
            if run.bw_tasks and _graph_task_id(run.torch) != -1:
                return None  # a recomputation inside a backward (activation checkpointing of the whole model)
            now = host_ns()
            ph = TRAIN if grad_enabled() else INFER
            run.end_unit(now)
            warm = run.steps[ph] < run.tool.warmup_steps and not run.sample_all
            if run.burst_left > 0 and run.burst_phase == ph:
                run.burst_left -= 1
                run.burst_steps[-1] += 1
                sample = True
            else:
                run.burst_left = 0
                sample = run.decide(ph, now, warm)
                if sample and run.leads():
                    steps = run.plan_burst(ph)
                    run.burst_left, run.burst_phase = steps - 1, ph
                    run.open_burst(ph, steps)
            run.steps[ph] += 1
            if sample:
                run.sampled[ph] += 1
                if not run.attached:
                    run.attach()
                run.active = True
            else:
                run.active = False
                if run.burst_mark0 is not None:  # a burst ended: markers per sampled step
                    n0, steps = run.burst_mark0
                    run.burst_mark0 = run.lead_end = None
                    if len(run.mt) > n0:
                        run.marks_per_step = (len(run.mt) - n0) / steps
                    run.check_at = len(run.mt) + max(64, run.tool.max_pending // 2)
                capture = warm and run.tool.mode == "replay" and not run.captured[ph]
                if run.attached and not capture:
                    run.detach()
                run.outermost_forward(ph)  # (no measured forward is open: fstack is empty here)
                slot = 2 * run._outside_row(OUTSIDE_UNSAMPLED, ph)
                run.plain_slots.add(slot)
                run.calls[slot] += 1
                run.mark(slot)
                if capture:
                    run.begin_capture(ph)
            run.unit = (ph, sample, now, warm)
            return None

        return step_pre

    def begin_capture(self, ph: int) -> None:
        """Replay needs each layer's inputs and output gradients.  Taking them costs host time (a graph walk per
        call, copies) and GPU time (the copies) in the step that takes them, and a sampled step is what the rows
        are made of: with few sampled steps (5-6 in 30 s of ResNet-50 training on the H200) one such step is a
        fifth of them.  So they are taken in the phase's first warm-up step, which is never sampled anyway: the
        layers' hooks run with the markers muted (the step keeps its one "not sampled" interval, its extra time
        goes to "(outside) other" like the rest of the warm-up's), and the calls they count are taken back at
        the step's end (end_capture).  Without a warm-up step (warmup_steps=0, sample="all") the first sampled
        call of each layer captures, as before."""
        self.captured[ph] = True
        if not self.attached:
            self.attach()
        self.calls_before_capture = list(self.calls)
        self.muted = True
        self.active = True

    def end_capture(self) -> None:
        saved = self.calls_before_capture
        if saved is None:
            return
        self.calls_before_capture = None
        self.muted = False
        calls = self.calls  # changed in place: the hooks hold it
        calls[: len(saved)] = saved
        for i in range(len(saved), len(calls)):
            calls[i] = 0
        self.drop_backward_stack()

    def end_unit(self, now: int) -> None:
        self.end_capture()
        if self.unit is None:
            return
        ph, sampled, t0, warm = self.unit
        self.unit = None
        if sampled:
            self.since_sampled = 0
            if not self.sample_all:
                self.dur_sampled[ph].append(now - t0)
                self.unbilled[ph].append(now - t0)
        elif warm:
            self.first_unit_ns = now - t0
        else:
            self.since_sampled += 1
            # The first steps after sampled ones also wait for the GPU to work off the leads: not a base.
            if self.since_sampled > _SETTLE_STEPS:
                d = self.dur_plain[ph]
                d.append(now - t0)
                self.n_plain[ph] += 1
                if len(d) > 32:
                    del d[0]

    def decide(self, ph: int, now: int, warm: bool) -> bool:
        """Sample this step?  Every step with sample="all".  Otherwise not the warm-up steps (cuDNN autotuning,
        allocations, lazy initialisation make them unlike the others), then the phase's first step, then whenever
        the extra time spent on sampled steps (their duration beyond a step not sampled, plus their leads) stays
        within max_overhead of the time elapsed, counting the step about to be sampled."""
        if self.sample_all:
            return True
        if warm:
            return False
        if self.sampled[ph] == 0:
            return True
        base = self.base_ns()
        if base[ph] is None:
            return False  # no step of the phase was timed without the hooks yet: time one first
        for p in (TRAIN, INFER):  # a sampled step costs its time beyond a step not sampled, never less than 0
            if base[p] is not None and self.unbilled[p]:
                self.extra_ns[p] += sum(max(0.0, d - base[p]) for d in self.unbilled[p])
                self.billed[p] += len(self.unbilled[p])
                self.unbilled[p] = []
        spent = self.lead_ns + self.extra_ns[TRAIN] + self.extra_ns[INFER]
        per_step = self.extra_ns[ph] / self.billed[ph] if self.billed[ph] else base[ph]
        steps, lead_ns = (self.plan_burst(ph), _OPEN_LEAD_NS) if self.leads() else (1, 0)
        expect = steps * per_step + lead_ns
        return spent + expect <= self.tool.max_overhead * (now - self.t_start_host + steps * base[ph])

    def base_ns(self) -> List[Optional[float]]:
        """Host time of a step not sampled, per phase: the median of the recent ones (recomputed every 8)."""
        cached = self._base
        for p in (TRAIN, INFER):
            d = self.dur_plain[p]
            if d and (cached[p] is None or self._base_n[p] != self.n_plain[p] // 8):
                cached[p] = statistics.median(d)
                self._base_n[p] = self.n_plain[p] // 8
        return cached

    def leads(self) -> bool:
        return self.tool.lead and not self.sample_all and self.clock.has_lead

    def plan_burst(self, ph: int) -> int:
        """On a GPU, steps are sampled in bursts of consecutive steps lasting about ``burst_seconds`` (several
        100 ms counter steps, so that the counter can measure the burst's power: _finish_bursts).  Returns the
        number of steps.  A sampled step lasts about its host time (the short leads fill the GPU's wait for the
        slowed host): the median of the recent ones, since the first steps of a burst also hold the host's wait
        on a launch queue filled behind the opening lead; before one was timed, 2.5 steps not sampled stand for
        it."""
        base = self.base_ns()[ph] or self.first_unit_ns
        d = self.dur_sampled[ph]
        host = statistics.median(d) if d else 2.5 * base
        return max(1, min(256, int(math.ceil(self.tool.burst_seconds * 1e9 / max(host, 1.0)))))

    def open_burst(self, ph: int, steps: int) -> None:
        """A burst starts with an opening lead: a kernel that keeps the GPU waiting, long enough (0.3 s) for
        the counter to measure the power of a waiting GPU, which the short leads inside the burst draw
        (_finish_bursts).  The events for the burst are made just before it, and the pending markers are not
        resolved until the burst ends: inside it, every LEAD_EVERY markers, _inner_lead enqueues a short lead
        instead.  The leads' time and energy go to the row "(outside) joulecap lead"."""
        r = self._outside_row(OUTSIDE_LEAD, ph)
        self.open_lead_slots.add(2 * r)  # short leads use the row's other half, 2 * r + 1
        self.calls[2 * r] += 1
        self.burst_steps.append(1)
        # events first: recording them while the GPU waits would fill the launch queue and stall the host
        self.clock.reserve(min(int(1.2 * steps * self.marks_per_step) + 64, 1 << 17))
        self.mark(2 * r)
        if not self.clock.lead(_OPEN_LEAD_NS * 1e-9):
            return
        self.lead_ns += _OPEN_LEAD_NS
        self.mark(self.fstack[-1][0] if self.fstack else self.idle_slot())
        self.lead_end, self.host_per_mark_min = self.mt[-1], None
        self.burst_mark0 = (len(self.mt), steps)
        self.check_at = len(self.mt) + LEAD_EVERY
        self.lead_host_ns = time.perf_counter_ns()

    def _inner_lead(self) -> None:
        """A short lead inside a burst: the CUDA launch queue holds about a thousand commands, so the host can be
        ahead of the GPU by about that much; every LEAD_EVERY markers (a few hundred commands) the GPU waits
        for about the host time those markers took beyond their GPU time, so that it runs the next ones back to
        back instead of waiting on the host between kernels.

        No lead while the GPU has not reached the end of the previous one (its marker's event is not done): it
        is behind the host already, and a lead then would fill the launch queue, block the host, and the
        blocked time would make the next lead longer still (a feedback seen on the H100: short leads grew to
        their 0.1 s cap and cost more than the sampled steps).  For the same reason the host time per marker
        used is the least seen in the burst: blocking only ever adds to it."""
        now = time.perf_counter_ns()
        n = len(self.mt)
        per_mark = (now - self.lead_host_ns) / LEAD_EVERY
        self.lead_host_ns = now
        self.check_at = n + LEAD_EVERY
        low = self.host_per_mark_min
        low = self.host_per_mark_min = per_mark if low is None else min(low, per_mark)
        ev = self.lead_end
        query = getattr(ev, "query", None)
        if query is not None and not query():
            self.leads_skipped += 1
            return
        work = self.work_per_mark if self.work_per_mark else 0.5 * (self.base_ns()[self.burst_phase] or
                                                                     self.first_unit_ns) / self.marks_per_step
        secs = min(0.1, max(0.0005, 1.2 * LEAD_EVERY * (low - work) * 1e-9))
        slot = self.ms[-1] if self.ms else self.idle_slot()
        r = self._outside_row(OUTSIDE_LEAD, self.burst_phase)
        self.mark(2 * r + 1)
        ok = self.clock.lead(secs)
        if ok:
            self.lead_inner_ns += int(secs * 1e9)  # (paid by the hooks' host time already: not in the budget)
        self.calls[2 * r + 1] += 1
        self.mark(slot)
        self.lead_end = self.mt[-1] if ok else None
        self.check_at = len(self.mt) + LEAD_EVERY

    def outermost_forward(self, phase: int) -> None:
        """A forward begins that no other measured forward encloses.  Outside a backward (activation
        checkpointing recomputes forwards inside one) that is a new step: forget the backward state that a
        backward which raised may have left, and resolve markers now and then."""
        if self.bw_tasks:
            if _graph_task_id(self.torch) != -1:
                return
            self.bw_tasks.clear()
        self.cur_phase = phase
        if self.first_phase is None:
            self.first_phase = phase
        self.drop_backward_stack()
        self.maybe_resolve()

    def drop_backward_stack(self) -> None:
        for c in self.bstack:
            c.active = False
        self.bstack.clear()

    # -- backward ----------------------------------------------------------------------------------------------

    def _enter_graph_task(self, tid: Optional[int] = None) -> None:
        torch = self.torch
        if tid is None:
            tid = self.graph_task_id()
        if tid in self.bw_tasks:
            return
        if not self.bw_tasks:
            self.calls[2 * self._outside_row(OUTSIDE_BACKWARD, TRAIN) + 1] += 1  # backward passes
        self.bw_tasks.append(tid)
        run = self

        def task_done() -> None:
            if tid in run.bw_tasks:
                run.bw_tasks.remove(tid)
            if not run.bw_tasks:
                run.drop_backward_stack()
            if run.active:
                run.mark(run.idle_slot())

        torch.autograd.Variable._execution_engine.queue_callback(task_done)

    def register_backward(self, slot: int, output: Any, b: int, cap: Optional[_Capture], leaf: bool = True) -> None:
        """Hooks the autograd nodes that this layer call created: the first to run in the backward (its outputs'
        nodes) marks the start of its backward, the last to run that gives its inputs their gradient marks its
        end (_walk_call_nodes)."""
        if isinstance(output, self.Tensor):
            if cap is None and _ONE_NODE_FAST_PATH:
                gf = output.grad_fn
                if gf is None:
                    return
                s = gf._sequence_nr()
                if s == b + 1:
                    # The call created exactly one node, its output's (nothing else was made on this thread since
                    # its inputs' nodes): the walk below would find that node alone.  The common case (a conv
                    # without autocast, a norm, an activation, in place or not), without next_functions.
                    tid = threading.get_ident()
                    if s > self.last_seq.get(tid, -1):
                        self.last_seq[tid] = s
                    call = _Call(self, slot, s, s)
                    gf.register_prehook(call.on_start)
                    gf.register_hook(call.on_end)
                    return
            outs: Sequence[Any] = (output,)
        else:
            outs = []
            _flatten_tensors(output, self.torch, outs)  # type: ignore[arg-type]
        roots: List[Any] = []
        where: List[Tuple[int, int, int]] = []  # (id(node), output_nr, position) for gradient capture
        for pos, t in enumerate(outs):
            gf = t.grad_fn
            if gf is not None:
                if gf not in roots:
                    roots.append(gf)
                if cap is not None:
                    where.append((id(gf), t.output_nr, pos))
        if cap is not None:
            cap.nout = len(outs)
        if not roots:
            return
        firsts, lo, hi, end = _walk_call_nodes(roots, b, leaf)
        if end is None:
            return  # the layer returned its input (Identity, Dropout in eval): no backward work of its own
        tid = threading.get_ident()
        if hi > self.last_seq.get(tid, -1):
            self.last_seq[tid] = hi
        call = _Call(self, slot, lo, hi, cap, where)
        # Bound methods of the call: no autograd node is referenced (a node -> hook -> node cycle would keep
        # graphs alive).
        if cap is None:
            for n in firsts:
                n.register_prehook(call.on_start)
        else:
            for n in firsts:
                n.register_prehook(functools.partial(call.on_start, node_id=id(n)))
        end.register_hook(call.on_end)

    def register_root_backward(self, output: Any) -> None:
        outs: List[Any] = []
        _flatten_tensors(output, self.torch, outs)
        run = self
        bslot = 2 * self._outside_row(OUTSIDE_BACKWARD, TRAIN) + 1
        seen: List[Any] = []
        root_call = _Call(self, bslot, -1, _MAX_SEQ)

        def on_root(grad_outputs: Any) -> None:
            if not run.active:
                return None
            run._enter_graph_task()
            if root_call.active:
                return None
            root_call.active = True
            if not run.bstack:
                run.bstack.append(root_call)
                run.mark(bslot)
            return None

        for t in outs:
            if t.requires_grad and t.grad_fn is not None and not any(t.grad_fn is n for n in seen):
                seen.append(t.grad_fn)
                t.grad_fn.register_prehook(on_root)

    # -- replay capture ----------------------------------------------------------------------------------------

    def capture_inputs(self, r: int, module: Any, args: Any, kwargs: Any) -> _Capture:
        torch = self.torch
        cap = _Capture()
        mb = self.tool.replay_capture_bytes
        memo: Dict[int, Any] = {}
        cap.args = _spec_of(tuple(args), torch, mb, memo)
        cap.kwargs = _spec_of(dict(kwargs or {}), torch, mb, memo)
        cap.training = bool(module.training)
        dev_type = self.tool._device_type
        try:
            cap.autocast = (torch.is_autocast_enabled(dev_type), torch.get_autocast_dtype(dev_type))
        except (AttributeError, TypeError):  # older torch
            cap.autocast = (False, None)
        self.captures[r] = cap
        return cap

    def capture_grads(self, cap: _Capture, node_id: int, grad_outputs: Any, where: List[Tuple[int, int, int]]) -> None:
        mb = self.tool.replay_capture_bytes
        for nid, nr, pos in where:
            if nid == node_id and pos not in cap.grads and nr < len(grad_outputs):
                g = grad_outputs[nr]
                if g is not None:
                    cap.grads[pos] = _TensorSpec(g, mb, self.torch)


# --------------------------------------------------------------------------------------------------------------
# Results


class LayerwiseResult:
    """What :meth:`LayerwiseMeasurementTool.stop` returns; the CSV holds the same rows.

    * ``rows``: list of dicts, one per (layer, phase) that ran and one per "outside layers" row, keyed by
      ``columns``; energies in J, times in s.  Every energy column adds up over the rows to ``total_energy_j``.
    * ``total_energy_j``: ``{"cpu": J, "gpu0": J}`` measured for the whole run (start() to stop());
      ``coverage`` the share of the run each covers (below 1: the device stalled or was lost, and ``estimates``
      says so), ``states`` the devices' worst health during the run.
    * ``elapsed_s``, ``mode``, ``clock`` (how layer times were taken and how precise they are), ``replayed``
      (replay mode: the layers run alone and their power), ``sources`` and ``estimates`` as for
      :class:`~joulecap.Measurement`.
    * ``to_pandas()``, ``summary(top=15)``.
    """

    def __init__(self, columns: List[str], rows: List[Dict[str, Any]], total: Dict[str, float], elapsed_s: float,
                 mode: str, clock: Dict[str, Any], replayed: List[Dict[str, Any]], sources: Dict[str, str],
                 estimates: Dict[str, str], labels: List[str], csv_path: Optional[str]):
        self.columns = columns
        self.rows = rows
        self.total_energy_j = total
        self.elapsed_s = elapsed_s
        self.mode = mode
        self.clock = clock
        self.replayed = replayed
        self.sources = sources
        self.estimates = estimates
        self.labels = labels
        self.csv_path = csv_path
        self.sampling: Dict[str, Dict[str, Any]] = {}  # per phase: steps, sampled_steps, extrapolated
        self.coverage: Dict[str, float] = {label: 1.0 for label in labels}  # share of the run each total covers
        self.states: Dict[str, str] = {label: "ok" for label in labels}  # worst device health in the run

    @property
    def total_j(self) -> float:
        """CPU plus GPU energy of the whole run (a device that cannot be measured counts 0)."""
        return sum(v for v in self.total_energy_j.values() if not math.isnan(v))

    def layer_rows(self) -> List[Dict[str, Any]]:
        return [r for r in self.rows if r["type"] != "outside"]

    def row(self, layer: str, phase: Optional[str] = None) -> Dict[str, Any]:
        """The row of a layer (qualified name); phase "train"/"infer" when both occur."""
        found = [r for r in self.rows if r["layer"] == layer and (phase is None or r["phase"] == phase)]
        if not found:
            raise KeyError("no row for layer %r%s" % (layer, "" if phase is None else " in phase %r" % phase))
        if len(found) > 1:
            raise KeyError("layer %r has rows for several phases: pass phase='train' or 'infer'" % layer)
        return found[0]

    def to_pandas(self):
        """The rows as a pandas DataFrame with the CSV's columns (needs pandas)."""
        from .io import _pandas

        pd = _pandas("LayerwiseResult.to_pandas()")
        return pd.DataFrame(self.rows, columns=self.columns)

    def summary(self, top: int = 15, file: Any = None, print_it: bool = True) -> str:
        """A short table: the ``top`` layers by energy, the outside rows and the total.  Printed (to file, default
        stdout) unless print_it is False; returned as a string."""
        gpus = [lab for lab in self.labels if lab != "cpu"]
        layers = sorted(self.layer_rows(), key=lambda r: -_nz(r["energy_j"]))
        shown = layers[:top]
        outside = [r for r in self.rows if r["type"] == "outside"]
        buf = io.StringIO()
        w = max([len(r["layer"]) for r in shown + outside] + [12])
        w = min(w, 40)
        head = "%-*s %-16s %-5s %7s %10s" % (w, "layer", "type", "phase", "calls", "time (s)")
        for g in gpus:
            head += " %11s" % ("%s (J)" % g.upper())
        head += " %11s %7s" % ("CPU (J)", "share")
        buf.write(head + "\n")

        def line(r: Dict[str, Any]) -> str:
            name = r["layer"] if len(r["layer"]) <= w else "..." + r["layer"][-(w - 3):]
            s = "%-*s %-16s %-5s %7s %10.4f" % (w, name, r["type"][:16], r["phase"], r["calls"] if r["calls"] != ""
                                                 else "", r["time_s"])
            for g in gpus:
                s += " %11s" % _fmt(r["%s_energy_j" % g])
            s += " %11s %6.1f%%" % (_fmt(r["cpu_energy_j"]), _nz(r["share_pct"]))
            return s

        for r in shown:
            buf.write(line(r) + "\n")
        if len(layers) > len(shown):
            rest = layers[len(shown):]
            buf.write("%-*s %-16s %-5s %7s %10.4f" % (w, "(%d more layers)" % len(rest), "", "", "",
                                                     sum(r["time_s"] for r in rest)))
            for g in gpus:
                buf.write(" %11s" % _fmt(sum(_nz(r["%s_energy_j" % g]) for r in rest)))
            buf.write(" %11s %6.1f%%\n" % (_fmt(sum(_nz(r["cpu_energy_j"]) for r in rest)),
                                          sum(_nz(r["share_pct"]) for r in rest)))
        for r in outside:
            buf.write(line(r) + "\n")
        partial = [k for k, v in self.coverage.items() if v < 1 and self.sources.get(k) != "none"]
        label = "total (PARTIAL)" if partial else "total (measured)"
        tot = "%-*s %-16s %-5s %7s %10.4f" % (w, label, "", "", "", self.elapsed_s)
        for g in gpus:
            tot += " %11s" % _fmt(self.total_energy_j.get(g, float("nan")))
        tot += " %11s %6.1f%%" % (_fmt(self.total_energy_j.get("cpu", float("nan"))), 100.0)
        buf.write(tot + "\n")
        note = "mode %s; layer times from %s" % (self.mode, "CUDA events" if self.clock.get("kind") == "cuda"
                                                   else "the host clock")
        sampled = [(ph, v) for ph, v in self.sampling.items() if v["sampled_steps"] < v["steps"]]
        if sampled:
            note += "; layers measured on %s, the rest of the run given by those" % ", ".join(
                "%d of %d %s steps" % (v["sampled_steps"], v["steps"], ph) for ph, v in sampled)
        if self.mode == "attribute" and layers:
            note += "; the layers of a step share its measured power, split by time (mode='replay' measures " \
                    "each layer's own)"
        if partial:
            note += "; PARTIAL: %s" % "; ".join("%s %s" % ("CPU" if k == "cpu" else k.upper(), self.estimates.get(k, ""))
                                               for k in partial)
        rest = [k for k in self.estimates if k not in partial]
        if rest:
            note += "; estimated: %s (see .estimates)" % ", ".join("CPU" if k == "cpu" else k.upper() for k in rest)
        buf.write(note + "\n")
        text = buf.getvalue()
        if print_it:
            print(text, end="", file=file)
        return text

    def __repr__(self) -> str:
        return "<LayerwiseResult %d layer rows, %.3f s, %s J, mode=%s>" % (
            len(self.layer_rows()), self.elapsed_s,
            ", ".join("%s=%.3f" % kv for kv in self.total_energy_j.items()), self.mode)


def _nz(v: Any) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return 0.0
    return 0.0 if math.isnan(f) else f


def _fmt(v: Any) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return ""
    if math.isnan(f):
        return "n/a"
    return "%.4g" % f if abs(f) < 1000 else "%.1f" % f


# --------------------------------------------------------------------------------------------------------------
# The tool


_MODES = ("attribute", "replay")


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
    * ``mode``: ``"attribute"`` (default) gives each layer the energy measured over its own intervals; inside one
      100 ms energy-counter step the layers share the step's average power, so the split is by time there.
      ``"replay"`` additionally runs each layer alone after the run, for ``replay_seconds``, to measure its own
      power, and splits the energy measured for the layers by time x that power.  See docs/python.md.
    * ``sample``: ``"auto"`` (default) hooks the layers on sampled steps only, within ``max_overhead`` (default
      0.05: the sampled steps may add 5% to the run's time), never on the first ``warmup_steps`` (default 1) of
      each phase, and extends the sampled steps to the whole run; ``"all"`` hooks every step.  A step is a
      forward of the model itself up to the next one.
    * ``lead`` (default True) and ``burst_seconds`` (default 0.4): on a GPU, sampled steps come in bursts of
      about ``burst_seconds`` behind GPU-side leads, so that their kernels run back to back (see docs/python.md).
    * ``interval``: the sampler's period for the cheap reads (default 0.01 s).

    Training and inference may be mixed in one measurement: a forward pass under ``torch.no_grad()`` or
    ``torch.inference_mode()`` is inference, any other training, and each layer gets a row per phase.
    """

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
        interval: Optional[float] = None,
        replay_seconds: float = 1.0,
        replay_min_share: float = 0.005,
        replay_capture_bytes: int = 4 << 20,
        resolve_interval: float = 0.5,
        max_pending: int = 8192,
        anchor_max_age: float = 10.0,
        _host_shadow: bool = False,
        _keep_run: bool = False,
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
        for name, v, lo in (("replay_seconds", replay_seconds, 0.0), ("resolve_interval", resolve_interval, 0.0),
                            ("burst_seconds", burst_seconds, 0.0),
                            ("anchor_max_age", anchor_max_age, 1.0)):
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < lo:
                raise InvalidArgument("%s=%r: pass a number of seconds >= %g" % (name, v, lo))
        if not (0.0 <= float(replay_min_share) < 1.0):
            raise InvalidArgument("replay_min_share=%r: pass a fraction of the layers' time in [0, 1)" % (
                replay_min_share,))
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
        self.replay_capture_bytes = int(replay_capture_bytes)
        self.resolve_interval = float(resolve_interval)
        self.max_pending = max_pending
        self.anchor_max_age = float(anchor_max_age)
        self._host_shadow = _host_shadow
        self._keep_run = _keep_run
        self._last_run: Optional[_Run] = None
        self._want_gpu = _requested_gpu(gpu_num)
        kwargs = {} if interval is None else {"interval": float(interval)}
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
        t0 = clock.begin()
        run.t_start = t0
        run.window = self._ctx.start_at(t0, "layerwise run")
        run.mt.append(t0)
        run.ms.append(2 * run.pre_first)
        if run.mh is not None:
            run.mh.append(time.perf_counter_ns())
        run.k = 1
        run.last_slot = 2 * run.pre_first
        run.next_pass_ns = time.perf_counter_ns() + int(self.resolve_interval * 1e9)
        try:
            run.install()
        except BaseException:
            run.remove_hooks()
            self._ctx.release(run.window)
            raise
        run.active = True
        self._run = run
        self._used = True
        return model

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
        run.remove_hooks()
        run.end_capture()
        try:
            t_end = run.clock.finish()
        finally:
            run.active = False
        run.t_end = t_end
        run.mt.append(t_end)
        run.ms.append(-1)
        if run.mh is not None:
            run.mh.append(time.perf_counter_ns())
        run.resolve(final_timeout=10.0)
        run.refine_work_power()
        run._drop_keep(self._ctx)
        ctx = self._ctx
        ctx.stop_at(run.window, t_end)
        whole = ctx.result(run.window, 10.0)
        ctx.release(run.window)
        replayed: List[Dict[str, Any]] = []
        replay_power: Dict[int, List[float]] = {}
        if self.mode == "replay":
            replayed, replay_power = _Replayer(self, run).run()
        result = self._build_result(run, whole, replayed, replay_power)
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

    # -- results -----------------------------------------------------------------------------------------------

    def _build_result(self, run: _Run, whole: Dict[str, Any], replayed: List[Dict[str, Any]],
                      replay_power: Dict[int, List[float]]) -> LayerwiseResult:
        labels = self._devices.labels
        ndev = len(labels)
        # Time before the first forward pass belongs to the phase of that pass.
        first = run.pre_first
        target_phase = run.first_phase
        rows = run.rows
        if target_phase is None:
            rows[first].phase = None
        else:
            tgt = run._outside_row(OUTSIDE_OTHER, target_phase)
            if tgt != first:
                for d in (0, 1):
                    s, t = 2 * first + d, 2 * tgt + d
                    run.acc_t[t] += run.acc_t[s]
                    run.acc_th[t] += run.acc_th[s]
                    for i in range(ndev):
                        run.acc_e[t][i] += run.acc_e[s][i]
                    run.calls[t] += run.calls[s]
                    run.acc_t[s] = 0
                    run.acc_th[s] = 0
                    run.acc_e[s] = [0.0] * ndev
                    run.calls[s] = 0
        total = dict(zip(labels, whole["energy_j"]))
        energies = {r: [list(run.acc_e[2 * r]), list(run.acc_e[2 * r + 1])] for r in range(len(rows))}
        attribution = {r: "interval" for r in range(len(rows))}
        replay_scale = _apply_replay(run, energies, replay_power, attribution, ndev) if replay_power else {}
        sampling = _extrapolate(run, energies, attribution, ndev)
        # Order: layers in the model's order (train, then infer), then the outside rows.
        order = sorted(
            (r for r in range(len(rows)) if rows[r].kind == "layer"),
            key=lambda r: (rows[r].layer, rows[r].phase),
        )
        out_order = [
            run.outside[k]
            for k in sorted(run.outside, key=lambda k: (_OUTSIDE_ORDER.index(k[0]),
                                                        -1 if k[1] is None else k[1]))
        ]
        total_j = sum(v for v in total.values() if not math.isnan(v))
        columns = _columns(labels)
        result_rows = []
        for r in order + out_order:
            row = rows[r]
            if run.calls[2 * r] == 0 and run.calls[2 * r + 1] == 0 and run.acc_t[2 * r] + run.acc_t[2 * r + 1] == 0:
                continue  # a row that never ran: an outside row unused, a layer seen only in a replay capture step
            result_rows.append(_row_dict(run, r, row, energies[r], labels, total_j, attribution[r], whole))
        sources = dict(zip(labels, whole["source"]))
        estimates = _source_notes(labels, whole["source"], self._devices.info)
        # A device that stalled or was lost during the run: its total covers part of it and its layers have none.
        coverage = dict(zip(labels, whole.get("coverage", [1.0] * len(labels))))
        states = dict(zip(labels, whole.get("state", ["ok"] * len(labels))))
        for label, info in zip(labels, self._devices.info):
            if sources.get(label) != "none" and coverage[label] < 1:
                estimates.setdefault(label, "partial: the total covers %.1f%% of the run (%s: %s)" % (
                    100 * coverage[label], states[label], info.get("state_note", "") or "see devices"))
        clock = run.clock.info()
        clock["resolve_passes"] = run.passes
        clock["resolve_host_s"] = run.resolve_ns * 1e-9
        if run.mh is not None:
            clock["host_time_s"] = {rows[r].name + "|" + (PHASES[rows[r].phase] if rows[r].phase is not None else ""):
                                    (run.acc_th[2 * r] * 1e-9, run.acc_th[2 * r + 1] * 1e-9)
                                    for r in range(len(rows))}
        for d in result_rows:
            ph = d["phase"]
            if ph:
                d["steps"] = run.steps[PHASES.index(ph)]
                d["sampled_steps"] = run.sampled[PHASES.index(ph)]
        clock["lead_s"] = (run.lead_ns + run.lead_inner_ns) * 1e-9
        clock["short_leads_skipped"] = run.leads_skipped
        clock["bursts_corrected"], clock["bursts_uncorrected"] = run.burst_counts()
        if run.work_power:
            clock["work_power"] = run.work_power
        if replay_scale:
            clock["replay_scale"] = {ph: dict(zip(labels, ks)) for ph, ks in replay_scale.items()}
        result = LayerwiseResult(columns, result_rows, total, (run.t_end - run.t_start) * 1e-9, self.mode, clock,
                                 replayed, sources, estimates, labels, self.out_file)
        result.sampling = sampling
        result.coverage = coverage
        result.states = states
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


# --------------------------------------------------------------------------------------------------------------
# Rows


def _columns(labels: List[str]) -> List[str]:
    cols = ["layer", "type", "phase", "steps", "sampled_steps", "calls", "backward_calls", "time_s", "forward_time_s",
            "backward_time_s"]
    for lab in labels[1:] + labels[:1]:  # GPUs first, then the CPU
        cols += ["%s_energy_j" % lab, "%s_forward_energy_j" % lab, "%s_forward_energy_j_per_call" % lab,
                 "%s_backward_energy_j" % lab, "%s_backward_energy_j_per_call" % lab, "%s_power_w" % lab]
    cols += ["energy_j", "energy_j_per_call", "share_pct", "attribution"]
    cols += ["%s_energy_source" % lab for lab in labels]
    return cols


def _row_dict(run: _Run, r: int, row: _Row, e: List[List[float]], labels: List[str], total_j: float,
              attribution: str, whole: Dict[str, Any]) -> Dict[str, Any]:
    tf, tb = run.acc_t[2 * r] * 1e-9, run.acc_t[2 * r + 1] * 1e-9
    cf, cb = run.calls[2 * r], run.calls[2 * r + 1]
    outside = row.kind == "outside"
    d: Dict[str, Any] = {
        "layer": row.name,
        "type": row.type,
        "phase": "" if row.phase is None else PHASES[row.phase],
        "steps": "",
        "sampled_steps": "",
        "calls": cf if not (outside and row.name == OUTSIDE_OTHER) else "",
        "backward_calls": cb if not outside else (cb if row.name == OUTSIDE_BACKWARD else ""),
        "time_s": tf + tb,
        "forward_time_s": tf,
        "backward_time_s": tb,
    }
    if outside and row.name in (OUTSIDE_OTHER, OUTSIDE_LEAD):  # (the lead row's halves: opening / short leads)
        d["forward_time_s"] = d["backward_time_s"] = ""
    if outside and row.name == OUTSIDE_BACKWARD:
        d["calls"] = ""
    tot = 0.0
    for i, lab in enumerate(labels):
        ef, eb = e[0][i], e[1][i]
        d["%s_energy_j" % lab] = ef + eb
        d["%s_forward_energy_j" % lab] = ef
        d["%s_forward_energy_j_per_call" % lab] = ef / cf if cf and not outside else ""
        d["%s_backward_energy_j" % lab] = eb
        d["%s_backward_energy_j_per_call" % lab] = eb / cb if cb and not outside else ""
        d["%s_power_w" % lab] = (ef + eb) / (tf + tb) if tf + tb > 0 else float("nan")
        if not math.isnan(ef + eb):
            tot += ef + eb
    if outside and row.name in (OUTSIDE_OTHER, OUTSIDE_LEAD):
        for lab in labels:
            d["%s_forward_energy_j" % lab] = d["%s_backward_energy_j" % lab] = ""
    d["energy_j"] = tot
    d["energy_j_per_call"] = tot / cf if cf and not outside else ""
    d["share_pct"] = 100.0 * tot / total_j if total_j > 0 else float("nan")
    d["attribution"] = attribution if attribution == "not sampled" or not outside else "measured"
    for lab, src in zip(labels, whole["source"]):
        d["%s_energy_source" % lab] = src
    return d


def _write_csv(path: str, result: LayerwiseResult) -> None:
    try:
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(result.columns)
            for row in result.rows:
                w.writerow([_cell(row[c]) for c in result.columns])
    except PermissionError as e:
        from .errors import PermissionDenied

        raise PermissionDenied("permission denied: cannot write %s: %s" % (path, e.strerror)) from None
    except OSError as e:
        from .errors import FileError

        raise FileError("input/output error: cannot write %s: %s" % (path, e.strerror)) from None


def _cell(v: Any) -> Any:
    if isinstance(v, float):
        if math.isnan(v):
            return ""
        return "%.10g" % v
    return v


# --------------------------------------------------------------------------------------------------------------
# Replay


def _extrapolate(run: _Run, energies: Dict[int, List[List[float]]], attribution: Dict[int, str],
                 ndev: int) -> Dict[str, Any]:
    """Gives the steps that were not sampled to the rows, per phase, and returns what was done.

    A step not sampled has one interval (its "not sampled" slot) with its measured time and energy.  Each layer
    row, and the forward / backward outside rows, get the steps not sampled times their time, energy and calls
    per sampled step: the same kernels do the same work in every step, and in a sampled step (run back to back
    behind the lead) their intervals hold that work.  What the steps not sampled measured beyond that goes to
    "(outside) other" of the phase: the host gaps, optimizer, data loading and idle time of those steps, and
    the warm-up's extra work.  Where the sampled steps' share exceeds what was measured, the outside rows' share
    is scaled down first, then, only if that is not enough, the layers' (_fit): a sampled step longer on the GPU
    than a step not sampled holds gaps, where the GPU waited for the host slowed by the hooks, and those fall
    between the layers' intervals, into the outside rows (a layer's interval holds its own kernels, launched
    between its two markers).  The rows still add up to the whole run.  A phase with no sampled step keeps a
    "(outside) not sampled" row."""
    out: Dict[str, Any] = {}
    for ph in (TRAIN, INFER):
        u = run.outside.get((OUTSIDE_UNSAMPLED, ph))
        k = run.sampled[ph]
        info = {"steps": run.steps[ph], "sampled_steps": k, "extrapolated": False}
        if run.steps[ph]:
            out[PHASES[ph]] = info
        if u is None:
            continue
        n = run.calls[2 * u]
        if k == 0:
            attribution[u] = "not sampled"
            warnings.warn(
                "no %s step was sampled layer by layer (%d step(s), %d warm-up): its energy stays in the row %r; "
                "run more steps, or pass warmup_steps=0 or sample='all'"
                % (PHASES[ph], n, run.tool.warmup_steps if run.tool else 0, OUTSIDE_UNSAMPLED),
                JoulecapWarning, stacklevel=4)
            continue
        info["extrapolated"] = True
        f = n / k
        rows = [r for r, row in enumerate(run.rows) if row.phase == ph and r != u and
                (row.kind == "layer" or row.name in (OUTSIDE_FORWARD, OUTSIDE_BACKWARD))]
        other = run._outside_row(OUTSIDE_OTHER, ph)
        if other not in energies:
            energies[other] = [[0.0] * ndev, [0.0] * ndev]
            attribution[other] = "interval"
        ut, ue = run.acc_t[2 * u], energies[u][0]
        is_layer = [run.rows[r].kind == "layer" for r in rows]

        def share(values: List[float]) -> Tuple[float, float]:
            return (sum(v for v, lay in zip(values, is_layer) if lay) * f,
                    sum(v for v, lay in zip(values, is_layer) if not lay) * f)

        st = _fit(ut, *share([run.acc_t[2 * r] + run.acc_t[2 * r + 1] for r in rows]))
        se = [_fit(ue[i], *share([energies[r][0][i] + energies[r][1][i] for r in rows])) for i in range(ndev)]
        for r, lay in zip(rows, is_layer):
            for d in (0, 1):
                sl = 2 * r + d
                t = run.acc_t[sl] * f * st[0 if lay else 1]
                run.acc_t[sl] += int(t)
                ut -= int(t)
                run.calls[sl] += int(round(run.calls[sl] * f))
                for i in range(ndev):
                    e = energies[r][d][i] * f * se[i][0 if lay else 1]
                    energies[r][d][i] += e
                    ue[i] -= e
        run.acc_t[2 * other] += ut
        for i in range(ndev):
            energies[other][0][i] += ue[i]
        run.acc_t[2 * u] = 0
        run.calls[2 * u] = 0
        energies[u][0] = [0.0] * ndev
        info["not_sampled_steps"] = n
    return out


def _fit(measured: float, layers: float, outside: float) -> Tuple[float, float]:
    """Factors for the layers' and the outside rows' extrapolated shares so that together they fit in what the
    steps not sampled measured: the outside rows give way first (see _extrapolate)."""
    if math.isnan(layers) or math.isnan(outside):
        return 0.0, 0.0
    if math.isnan(measured) or layers + outside <= measured:  # (nothing measured to fit in: as sampled)
        return 1.0, 1.0
    if layers <= measured:
        return 1.0, (measured - layers) / outside
    return (max(0.0, measured) / layers if layers > 0 else 0.0), 0.0


def _apply_replay(run: _Run, energies: Dict[int, List[List[float]]], power: Dict[int, List[float]],
                  attribution: Dict[int, str], ndev: int) -> Dict[str, List[Optional[float]]]:
    """Gives the replayed layers their replayed power, scaled to what was measured, per phase and device.

    The pool is every layer row of the phase: its measured (interval) energy, summed, is kept, and split by
    time x power, where a replayed row's power is its replayed power and a row not replayed keeps its measured
    power.  So one factor k maps the powers alone onto the network (a GEMM alone at the power limit runs at lower
    clocks than among lighter layers), estimated from as much of the pool as was replayed: where every layer
    was replayed this is the replayed rows' split of their own energy, and where only a few were (a ResNet's
    layers above replay_min_share), they get about their own power instead of absorbing the whole pool's
    difference from it (the split among the replayed rows alone gave ResNet-50's 19 replayed layers of 161 a
    scale of ~0.8 on the H200, and them a 20% error; this one 0.94-0.96 and 6.5-7.3%).  The outside rows keep
    their measured energy, so every column still adds up to the whole run.  Returns k per phase and device
    (None: not applied)."""
    scale: Dict[str, List[Optional[float]]] = {}
    for r in power:
        attribution[r] = "replay"
    for ph in (TRAIN, INFER):
        if not any(run.rows[r].phase == ph for r in power):
            continue
        ks: List[Optional[float]] = scale.setdefault(PHASES[ph], [None] * ndev)
        pool = [r for r, row in enumerate(run.rows) if row.kind == "layer" and row.phase == ph]
        for i in range(ndev):
            measured = 0.0
            weights = {}
            for r in pool:
                e = energies[r][0][i] + energies[r][1][i]
                measured += e
                if r in power:
                    t = (run.acc_t[2 * r] + run.acc_t[2 * r + 1]) * 1e-9
                    weights[r] = t * power[r][i]
                else:
                    weights[r] = e  # its time x its measured power
            wsum = sum(weights.values())
            if not (wsum > 0) or math.isnan(measured) or math.isnan(wsum):
                continue
            k = ks[i] = measured / wsum
            for r in pool:
                if r not in power:
                    energies[r][0][i] *= k
                    energies[r][1][i] *= k
                    continue
                tf, tb = run.acc_t[2 * r], run.acc_t[2 * r + 1]
                if tf + tb > 0:
                    e = k * weights[r]
                    energies[r][0][i] = e * tf / (tf + tb)
                    energies[r][1][i] = e * tb / (tf + tb)
    return scale


class _Replayer:
    """Runs each layer alone on its captured inputs (after the run, hooks removed) to measure its power."""

    def __init__(self, tool: LayerwiseMeasurementTool, run: _Run):
        self.tool = tool
        self.run_ = run
        self.torch = run.torch
        self.last_graph = False  # the last layer ran as a CUDA graph

    def run(self) -> Tuple[List[Dict[str, Any]], Dict[int, List[float]]]:
        run, torch, tool = self.run_, self.torch, self.tool
        layer_ns = sum(run.acc_t[2 * r] + run.acc_t[2 * r + 1] for r, row in enumerate(run.rows) if row.kind == "layer")
        if layer_ns <= 0:
            return [], {}
        chosen = []
        for r, row in enumerate(run.rows):
            t = run.acc_t[2 * r] + run.acc_t[2 * r + 1]
            if row.kind == "layer" and r in run.captures and t > 0 and t >= tool.replay_min_share * layer_ns:
                chosen.append(r)
        cuda = tool._device_type == "cuda"
        dev = run.clock.device if cuda else None
        rng_cpu = torch.get_rng_state()
        rng_cuda = torch.cuda.get_rng_state(dev) if cuda else None
        by_key: Dict[Any, List[float]] = {}
        out: List[Dict[str, Any]] = []
        power: Dict[int, List[float]] = {}
        try:
            for r in chosen:
                row = run.rows[r]
                name, module = run.layers[row.layer]
                cap = run.captures[r]
                backward = row.phase == TRAIN and run.calls[2 * r + 1] > 0 and bool(cap.grads)
                key = (_module_key(module), _key_of(cap.args), _key_of(cap.kwargs), cap.training, cap.autocast,
                       row.phase, backward, tuple(sorted((k, _key_of(v)) for k, v in cap.grads.items())))
                info = {"layer": row.name, "phase": PHASES[row.phase], "backward": backward}
                if key in by_key:
                    p = by_key[key]
                    info["same_as"] = next(o["layer"] for o in out if o.get("key") == key and "same_as" not in o)
                else:
                    try:
                        p, secs, iters = self._measure(module, cap, row.phase, backward)
                    except Exception as e:  # a layer that cannot run alone keeps its measured energy
                        warnings.warn("replay of %s failed (%s: %s); it keeps its interval energy"
                                      % (row.name, type(e).__name__, e), JoulecapWarning, stacklevel=3)
                        continue
                    by_key[key] = p
                    info.update(seconds=secs, iterations=iters, graph=self.last_graph)
                info["key"] = key
                info.update({"%s_power_w" % lab: v for lab, v in zip(tool._devices.labels, p)})
                out.append(info)
                power[r] = p
        finally:
            torch.set_rng_state(rng_cpu)
            if cuda:
                torch.cuda.set_rng_state(rng_cuda, dev)
        for o in out:
            o.pop("key", None)
        return out, power

    def _measure(self, module: Any, cap: _Capture, phase: int, backward: bool) -> Tuple[List[float], float, int]:
        tool = self.tool
        m = measure_alone(self.torch, tool._ctx, module, cap, phase, backward, tool.replay_seconds,
                          tool._device_type, self.run_.clock.device if tool._device_type == "cuda" else None,
                          graph=True)
        self.last_graph = bool(m["graph"])
        return m["power_w"], m["seconds"], m["iterations"]


def measure_alone(torch: Any, ctx: Any, module: Any, cap: _Capture, phase: int, backward: bool, seconds: float,
                  device_type: str, device: Any = None, graph: bool = False) -> Dict[str, Any]:
    """Runs one layer alone on its captured inputs (forward, plus backward when asked) for ``seconds`` after a
    short warm-up, and measures the energy of that stretch with a window of ``ctx``.

    Returns ``power_w`` and ``energy_j`` (lists per device of ctx), ``seconds``, ``iterations``.  The module is
    left as it was: its buffers (BatchNorm statistics) and train/eval mode are restored, gradients are taken
    with torch.autograd.grad (no .grad is touched).  The caller restores the random number generators.

    graph (CUDA): capture the forward and backward (8 of them) in a CUDA graph and replay it, so that the layer's
    kernels run back to back however short they are (a Python loop launching a layer of a few µs leaves the GPU
    idle most of the time); falls back to the Python loop, with ``graph`` False in the result, when capture
    fails (ops that synchronise or allocate on the host)."""
    cuda = device_type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    saved = [(b, b.detach().clone()) for b in module.buffers()]
    was_training = module.training
    params = [p for p in module.parameters() if p.requires_grad]
    enabled, dtype = cap.autocast
    leaves: List[Any] = []
    memo: Dict[int, Any] = {}
    args = _make(cap.args, torch, leaves, memo)
    kwargs = _make(cap.kwargs, torch, leaves, memo)
    grads = {pos: spec.make(torch) for pos, spec in cap.grads.items()}
    wrt = leaves + params
    state = {"clone": False, "graph": False}

    def step() -> None:
        a, k = args, kwargs
        if state["clone"]:  # the layer works in place on an input that requires grad: give it a non-leaf
            clones: Dict[int, Any] = {}
            a, k = _clone_grad_tensors(args, torch, clones), _clone_grad_tensors(kwargs, torch, clones)
        grad_ctx = torch.enable_grad() if phase == TRAIN else torch.no_grad()
        if enabled:  # (CUDA graphs need autocast's cast cache off)
            ac: Any = torch.autocast(device_type, dtype=dtype, enabled=True, cache_enabled=not state["graph"])
        else:
            ac = _nullcontext()
        with grad_ctx, ac:
            out = module(*a, **k)
        if backward:
            outs: List[Any] = []
            _flatten_tensors(out, torch, outs)
            ys, gs = [], []
            for pos, t in enumerate(outs):
                g = grads.get(pos)
                if g is not None and t.requires_grad:
                    if g.dtype != t.dtype:
                        g = grads[pos] = g.to(dtype=t.dtype)
                    ys.append(t)
                    gs.append(g)
            if ys and wrt:
                torch.autograd.grad(ys, wrt, grad_outputs=gs, allow_unused=True)

    try:
        module.train(cap.training)
        try:
            step()
        except RuntimeError:
            state["clone"] = True  # e.g. an in-place op on a leaf that requires grad
            step()
        sync()
        # Warm up (caches, allocator, kernel selection), then run for `seconds` (>= 10 counter steps for the
        # default 1 s): the window's energy over its time is the layer's power.
        t0 = time.perf_counter_ns()
        for i in range(1000):
            step()
            if i >= 1:
                sync()
                if time.perf_counter_ns() - t0 >= min(0.05, seconds / 4) * 1e9:
                    break
        run_once, per = step, 1
        if graph and cuda:
            captured = _capture_graph(torch, device, step, state, 8)
            if captured is not None:
                run_once, per = captured.replay, 8
                for _ in range(3):
                    run_once()
                sync()
        t_a = _joulecap.now_ns()
        w = ctx.start_at(t_a)
        def record() -> Any:
            ev = torch.cuda.Event()
            ev.record(torch.cuda.current_stream(device))
            return ev

        iters = _run_until(run_once, per, t_a + int(seconds * 1e9), _joulecap.now_ns, record if cuda else None)
        sync()
        t_b = _joulecap.now_ns()
        ctx.stop_at(w, t_b)
        res = ctx.result(w, 10.0)
        ctx.release(w)
    finally:
        module.train(was_training)
        with torch.no_grad():
            for b, v in saved:
                b.copy_(v)
    secs = (t_b - t_a) * 1e-9
    return {
        "power_w": [e / secs if secs > 0 else float("nan") for e in res["energy_j"]],
        "energy_j": list(res["energy_j"]),
        "seconds": secs,
        "iterations": iters,
        "graph": state["graph"],
    }


def _run_until(run_once: Callable[[], None], per: int, end_ns: int, now: Callable[[], int],
               record: Optional[Callable[[], Any]] = None, ahead: int = 4) -> int:
    """Calls run_once (``per`` layer calls each) until ``end_ns`` (at least twice) and returns the layer calls.

    On a GPU (``record``: records an event after a launch and returns it) the host keeps at most ``ahead`` launches queued: a launch
    returns at once, so without that the host queued launches until the CUDA launch queue was full, and the
    GPU then worked that off after the deadline (on the H200, ResNet-50's stem convolution, 7 ms a graph
    launch, ran 7.2 s for a 1 s replay, and the whole replay took 35 s for 10 layers).  With ``ahead`` queued
    the GPU still runs them back to back."""
    queued: Deque[Any] = collections.deque()
    calls = 0
    while calls < 2 or now() < end_ns:
        if len(queued) == ahead:
            queued.popleft().synchronize()  # the GPU has finished the launch of `ahead` ago
        run_once()
        if record is not None:
            queued.append(record())
        calls += per
    return calls


def _capture_graph(torch: Any, device: Any, step: Callable[[], None], state: Dict[str, Any], n: int) -> Any:
    """A CUDA graph of n calls of step (warmed up on a side stream, as torch.cuda.graph asks), or None."""
    state["graph"] = True
    try:
        side = torch.cuda.Stream(device)
        cur = torch.cuda.current_stream(device)
        side.wait_stream(cur)
        with torch.cuda.stream(side):
            for _ in range(3):
                step()
        cur.wait_stream(side)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            for _ in range(n):
                step()
        return g
    except Exception:
        state["graph"] = False
        torch.cuda.synchronize(device)
        return None


def _clone_grad_tensors(obj: Any, torch: Any, memo: Dict[int, Any]) -> Any:
    if isinstance(obj, torch.Tensor):
        if not obj.requires_grad:
            return obj
        c = memo.get(id(obj))
        if c is None:
            c = memo[id(obj)] = obj.clone()
        return c
    if isinstance(obj, tuple):
        return tuple(_clone_grad_tensors(o, torch, memo) for o in obj)
    if isinstance(obj, list):
        return [_clone_grad_tensors(o, torch, memo) for o in obj]
    if isinstance(obj, dict):
        return {k: _clone_grad_tensors(v, torch, memo) for k, v in obj.items()}
    return obj


class _nullcontext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> bool:
        return False


def _module_key(m: Any) -> Any:
    """Layers with this key do the same work: same type, configuration and parameter shapes."""
    try:
        has_children = next(iter(m.children()), None) is not None
    except Exception:
        has_children = True
    if has_children:
        return ("id", id(m))
    params = tuple((tuple(p.shape), str(p.dtype), bool(p.requires_grad)) for p in m.parameters())
    return (type(m).__name__, repr(m), params)

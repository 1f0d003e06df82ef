"""What replay needs to run a layer alone, taken during the run: its inputs (shapes, memory layout, a sample of
the values), its output gradients, its mode and autocast state.  Taken in a phase's first warm-up step."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple


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


_FIRST_REPLAY_S = 0.35  # the shortest budgeted replay of one layer (replay.py: _MIN_REPLAY_S + _REPLAY_SETUP_S)


class _Capturing:
    """Part of _Run: the captures per layer row, and the warm-up step that takes them with the markers muted."""

    def _init_capture(self) -> None:
        self.captures: Dict[int, _Capture] = {}
        self.captured = [False, False]  # per phase: its warm-up step took the captures
        self.calls_before_capture: Optional[List[int]] = None
        # the hooks capture a layer's first call while this holds True: always in mode "replay" (its warm-up step,
        # or without one its first sampled calls); in the default mode only in the step begin_capture chose
        self.capture_on = [self.tool.mode == "replay"]

    def begin_capture(self, ph: int) -> None:
        """Replay needs each layer's inputs and output gradients.  Taking them costs host time (a graph walk per
        call, copies) and GPU time (the copies) in the step that takes them, and a sampled step is what the rows are
        made of, and with few sampled steps one such step weighs much.  So they are taken in the phase's first
        warm-up step, which is never sampled anyway: the layers' hooks run with the markers muted (the step keeps
        its one "not sampled" interval, its extra time goes to "(outside) other" like the rest of the warm-up's),
        and the calls they count are taken back at the step's end (end_capture).  Without a warm-up step
        (warmup_steps=0, sample="all") the first sampled call of each layer captures.

        The default mode's budgeted replay captures in a step not sampled too, but only once the run has lasted
        long enough for its budget to replay one layer (capture_due): a short run, which could not replay
        anything, does not pay for the capture."""
        self.captured[ph] = True
        self.capture_on[0] = True
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
        self.capture_on[0] = self.tool.mode == "replay"
        calls = self.calls  # changed in place: the hooks hold it
        calls[: len(saved)] = saved
        for i in range(len(saved), len(calls)):
            calls[i] = 0
        self.drop_backward_stack()

    def capture_due(self, ph: int, warm: bool, now: int) -> bool:
        """Take the captures in this step (one not sampled)?  Mode "replay": the phase's first warm-up step.
        The default mode (replay_budget > 0): the first step not sampled after the warm-up once replay_budget x
        the time so far pays for one layer's shortest replay (replay.py: 0.35 s, so after about 7 s at 5%)."""
        tool = self.tool
        if self.captured[ph] or not tool._capture:
            return False
        if tool.mode == "replay":
            return warm
        return not warm and tool.replay_budget * (now - self.t_start_host) * 1e-9 >= _FIRST_REPLAY_S

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

"""Forward and backward hooks: where each layer call's time starts and ends.

Forward markers come from forward pre/post hooks.  Backward markers come from hooks on the autograd nodes that
a layer call created (the first to run in the backward, and the last that hands its inputs a gradient), which,
unlike ``register_full_backward_hook``, work with in-place ops such as ``ReLU(inplace=True)``.  The model's own
hooks stay for the whole run; the layers' hooks are attached for sampled steps only (sampling.py).
"""

from __future__ import annotations

import functools
import threading
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .capture import _Capture, _flatten_tensors
from .rows import INFER, OUTSIDE_BACKWARD, OUTSIDE_FORWARD, OUTSIDE_OTHER, TRAIN

_MAX_SEQ = 2**64 - 1  # sequence number of AccumulateGrad nodes
_WALK_LIMIT = 2048  # autograd nodes inspected per layer call, at most
_ONE_NODE_FAST_PATH = True  # layer calls that made one autograd node skip the graph walk (tests turn it off)


def _graph_task_id(torch: Any) -> int:
    """The id of the backward pass running on this thread, -1 outside one.  (A torch without the call: 0, one id
    for every backward pass; nested ones, as in reentrant checkpointing, are then not told apart.)"""
    f = getattr(torch._C, "_current_graph_task_id", None)
    return f() if f is not None else 0


def _walk_call_nodes(roots: List[Any], b: int, leaf: bool = True) -> Tuple[List[Any], int, int, Any]:
    """The autograd nodes one layer call created, from its outputs' nodes (roots): those with sequence numbers
    above b (created after its inputs' nodes).  Returns (roots among them, lowest and highest number, the node
    whose end is the end of the call's backward).

    That end node is the last of them to run that hands a gradient to the layer's inputs (an edge to a node numbered
    b or below), the engine running the highest ready number first; where no input takes a gradient, the last of
    them to run (the lowest number).  Not simply the lowest number: under autocast a layer whose input is already in
    the autocast dtype first creates its weight's cast node, which runs after the node that computes the input's
    gradient, and in between the engine adds that gradient to the others the input gets (the residual path): a whole
    tensor-sized add that is not the layer's.  A post-hook runs before the engine adds the node's outputs.  For a
    module with children (leaf False) the end stays the lowest number: the merges of the gradients its own branches
    give its inputs (a residual block's) are its work.

    Every node object seen is kept until the walk ends: torch makes a node's Python object on demand and drops
    it with its last reference, so the id() of a dropped one can come back for another node, which a set of
    ids would then skip (cutting a backward short)."""
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


class _Call:
    """One call of a layer, seen from its backward: the autograd nodes it created span sequence numbers
    [lo, hi].  Its methods are the node hooks that mark the start and the end of its backward."""

    __slots__ = ("run", "slot", "lo", "hi", "active", "capture", "where")

    def __init__(self, run: Any, slot: int, lo: int, hi: int, capture: Any = None, where: Any = None):
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


class _Hooks:
    """Part of _Run: the hooks and the state they share.  ``fstack`` holds the forwards open (slot, layer index,
    phase, the inputs' highest autograd sequence number, capture), ``bstack`` the layer backwards open,
    ``bw_tasks`` the backward passes running; ``active`` is False outside sampled steps (the hooks then do
    nothing)."""

    def _init_hooks(self, torch: Any, model: Any, layers: List[Tuple[str, Any]]) -> None:
        self.torch = torch
        self.Tensor = torch.Tensor
        self.model = model
        # leaf modules' backward ends where their inputs get their gradient; a module with children keeps the
        # gradient merges of its own inputs (a residual block's branches) in its backward (_walk_call_nodes)
        self.leaf = [next(iter(m.children()), None) is None for _, m in layers]
        self.active = False
        self.fstack: List[Any] = []
        self.bstack: List[_Call] = []
        self.bw_tasks: List[int] = []
        self.cur_phase: Optional[int] = None
        self.first_phase: Optional[int] = None
        self.last_seq: Dict[int, int] = {}
        f = getattr(torch._C, "_current_graph_task_id", None)
        self.graph_task_id: Callable[[], int] = f if f is not None else (lambda: 0)  # see _graph_task_id
        self.handles: List[Any] = []
        self.layer_hooks: List[Tuple[Any, Callable, Callable]] = []  # (module, pre, post) attached when sampling
        self.layer_handles: List[Any] = []
        self.attached = False
        self.stopped = False

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

    # -- installing and removing -------------------------------------------------------------------------------

    def install(self) -> None:
        torch = self.torch
        grad_enabled = torch.is_grad_enabled
        Tensor = torch.Tensor
        run = self
        root = self.model
        root_selected = any(m is root for _, m in self.layers)
        capture_on = self.capture_on  # [bool], changed in place (capture.py)
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
                if capture_on[0] and r not in captures:
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

    # -- steps -------------------------------------------------------------------------------------------------

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

"""Replay (``mode="replay"``): after the run, each layer runs alone on its captured inputs to measure its own
power (measure_alone); attribution.py then splits the layers' measured energy by time x that power."""

from __future__ import annotations

import collections
import contextlib
import time
import warnings
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

from .. import _joulecap
from ..errors import JoulecapWarning
from .capture import _Capture, _flatten_tensors, _key_of, _make
from .knots import _GRID_NS, counter_steps
from .rows import PHASES, TRAIN


_COUNTER_STEP_S = 0.1  # the GPU energy counter's step: longer calls get their own power from it (knots.py)
_MIN_REPLAY_S = 0.25  # a budgeted replay runs a layer at least this long (one whole counter step inside, always)
_REPLAY_SETUP_S = 0.1  # a replay's warm-up and graph capture, about
# A counter step gives a replayed layer's power where it lies inside the layer's stretch, this far in from its
# start (the counter may report a step's energy a few ms late: the step then still holds only the layer).
_STEP_MARGIN_NS = 20_000_000


class _Replayer:
    """Runs each layer alone on its captured inputs (after the run, hooks removed) to measure its power."""

    def __init__(self, tool: Any, run: Any):
        self.tool = tool
        self.run_ = run
        self.torch = run.torch
        self.last_graph = False  # the last layer ran as a CUDA graph
        self.seconds = tool.replay_seconds
        self.info: Dict[str, Any] = {}

    def run(self, budget_s: Optional[float] = None) -> Tuple[List[Dict[str, Any]], Dict[int, List[float]]]:
        """Replays the layers above replay_min_share (mode "replay"), or, with ``budget_s`` (the default mode),
        those the counter cannot tell apart (calls shorter than a counter step), the largest first, for as many
        as fit in budget_s (each for replay_seconds, shortened down to _MIN_REPLAY_S to fit more): ``info``
        says what was done and, when nothing fit, why."""
        run, torch, tool = self.run_, self.torch, self.tool
        layer_ns = sum(run.acc_t[2 * r] + run.acc_t[2 * r + 1] for r, row in enumerate(run.rows) if row.kind == "layer")
        if layer_ns <= 0:
            return [], {}
        chosen = []
        for r, row in enumerate(run.rows):
            t = run.acc_t[2 * r] + run.acc_t[2 * r + 1]
            if row.kind == "layer" and r in run.captures and t > 0 and t >= tool.replay_min_share * layer_ns:
                chosen.append(r)
        seconds = tool.replay_seconds
        deadline = None
        if budget_s is not None:
            chosen, seconds, note = self._plan(chosen, budget_s)
            self.info = {"budget_s": budget_s, "layers": len(chosen), "seconds_each": seconds, "note": note}
            if not chosen:
                return [], {}
            deadline = time.perf_counter() + budget_s
        self.seconds = seconds
        cuda = tool._device_type == "cuda"
        dev = run.clock.device if cuda else None
        rng_cpu = torch.get_rng_state()
        rng_cuda = torch.cuda.get_rng_state(dev) if cuda else None
        by_key: Dict[Any, Dict[str, Any]] = {}  # key -> the first replay of that work (measure_alone, deferred)
        done: List[Tuple[int, Dict[str, Any], Any]] = []  # (row, info, key)
        keyed = [(r,) + self._key(r) for r in chosen]  # (row, backward, key)
        todo = len({key for _, _, key in keyed})  # distinct replays still to run
        try:
            for r, backward, key in keyed:
                row = run.rows[r]
                name, module = run.layers[row.layer]
                cap = run.captures[r]
                info = {"layer": row.name, "phase": PHASES[row.phase], "backward": backward}
                if key in by_key:
                    info["same_as"] = by_key[key]["layer"]
                else:
                    if deadline is not None:
                        self.seconds = self._fit(seconds, deadline - time.perf_counter(), todo)
                        if not self.seconds:
                            self.info["note"] = "budget spent after %d distinct layers" % len(by_key)
                            break
                    todo -= 1
                    try:
                        m = self._measure(module, cap, row.phase, backward)
                    except Exception as e:  # a layer that cannot run alone keeps its measured energy
                        warnings.warn("replay of %s failed (%s: %s); it keeps its interval energy"
                                      % (row.name, type(e).__name__, e), JoulecapWarning, stacklevel=3)
                        continue
                    m["layer"] = row.name
                    by_key[key] = m
                    info.update(seconds=m["seconds"], iterations=m["iterations"], graph=m["graph"])
                done.append((r, info, key))
        finally:
            torch.set_rng_state(rng_cpu)
            if cuda:
                torch.cuda.set_rng_state(rng_cuda, dev)
            for m in by_key.values():
                finish_alone(tool._ctx, m)
        self._step_powers(list(by_key.values()))
        out: List[Dict[str, Any]] = []
        power: Dict[int, List[float]] = {}
        for r, info, key in done:
            m = by_key[key]
            p = m["power_w"]
            if "same_as" not in info:
                info["power_from"] = m["power_from"]
            info.update({"%s_power_w" % lab: v for lab, v in zip(tool._devices.labels, p)})
            out.append(info)
            power[r] = p
        return out, power

    def _step_powers(self, replays: List[Dict[str, Any]]) -> None:
        """Each replay's GPU power from the energy counter's whole steps inside its stretch, where there are any
        (``power_from`` "counter steps"): exact energies, where the window's ends take the power of the counter
        steps they cut, which mix the layer with what ran before and after it (warm-up, capture, idle).  Else
        the window's ("window")."""
        for m in replays:
            m["power_from"] = ["window"] * len(m["power_w"])
        live = [m for m in replays if m.get("t_b", 0) > m.get("t_a", 0)]
        gpus = [d for d, lab in enumerate(self.tool._devices.labels) if lab.startswith("gpu")]
        if not live or not gpus:
            return
        lo, hi = min(m["t_a"] for m in live), max(m["t_b"] for m in live)
        grid = list(range(lo - 2 * _GRID_NS, hi + 2 * _GRID_NS, _GRID_NS))
        try:
            energy, _ = self.tool._ctx.energy_at(grid, 1.0)
        except Exception:
            return
        for d in gpus:
            steps = counter_steps(grid, [row[d] for row in energy])
            for m in live:
                a, b = m["t_a"] + _STEP_MARGIN_NS, m["t_b"]
                inside = [(s0, s1, p) for s0, s1, p in steps if s0 >= a and s1 <= b]
                t = sum(s1 - s0 for s0, s1, _ in inside)
                if t > 0:
                    m["power_w"][d] = sum(p * (s1 - s0) for s0, s1, p in inside) / t * 1e9
                    m["power_from"][d] = "counter steps"

    @staticmethod
    def _fit(planned: float, left: float, todo: int) -> float:
        """A budgeted replay's length: as planned, shortened (not below _MIN_REPLAY_S) where the replays before
        it overran, so that the ``todo`` still to run share the ``left`` seconds; 0 when not even that fits."""
        secs = max(min(_MIN_REPLAY_S, planned), min(planned, left / max(todo, 1) - _REPLAY_SETUP_S))
        return secs if secs <= left else 0.0

    def _key(self, r: int) -> Tuple[bool, Any]:
        """Whether row r's replay includes its backward, and the key of the work it replays (rows with the same
        key are replayed once)."""
        run = self.run_
        row = run.rows[r]
        module = run.layers[row.layer][1]
        cap = run.captures[r]
        backward = row.phase == TRAIN and run.calls[2 * r + 1] > 0 and bool(cap.grads)
        key = (_module_key(module), _key_of(cap.args), _key_of(cap.kwargs), cap.training, cap.autocast,
               row.phase, backward, tuple(sorted((k, _key_of(v)) for k, v in cap.grads.items())))
        return backward, key

    def _plan(self, candidates: List[int], budget_s: float) -> Tuple[List[int], float, str]:
        """The default mode's budgeted replay: among the candidates, the layers whose calls are shorter than a
        counter step (longer ones get their own power from the counter's steps), the largest first; each
        distinct one costs its replay time plus _REPLAY_SETUP_S (warm-up, capture); replay_seconds is shortened
        (not below _MIN_REPLAY_S) so that as many as can fit.  Returns (rows, seconds each, note)."""
        run = self.run_
        short = []
        for r in candidates:
            calls = run.calls[2 * r]
            t = run.acc_t[2 * r] + run.acc_t[2 * r + 1]
            if calls > 0 and t / calls < _COUNTER_STEP_S * 1e9:
                short.append(r)
        short.sort(key=lambda r: -(run.acc_t[2 * r] + run.acc_t[2 * r + 1]))
        keys: Dict[Any, List[int]] = {}
        for r in short:
            keys.setdefault(self._key(r)[1], []).append(r)
        if not keys:
            return [], 0.0, "no layer shorter than a counter step to replay"
        per = self.tool.replay_seconds
        n = len(keys)
        if n * (per + _REPLAY_SETUP_S) > budget_s:
            per = max(_MIN_REPLAY_S, budget_s / n - _REPLAY_SETUP_S)
        fit = int(budget_s // (per + _REPLAY_SETUP_S))
        if fit < 1:
            return [], per, ("skipped: the budget (%.2f s, replay_budget x the run's time) is below the %.2f s one "
                             "layer's replay takes; the layers keep the counter's split (a longer run, or a larger "
                             "replay_budget, replays them)" % (budget_s, per + _REPLAY_SETUP_S))
        rows = [r for rs in list(keys.values())[:fit] for r in rs]
        note = "all %d distinct short layers" % n if fit >= n else "the %d largest of %d distinct short layers" % (
            fit, n)
        return rows, per, note

    def _measure(self, module: Any, cap: _Capture, phase: int, backward: bool) -> Dict[str, Any]:
        tool = self.tool
        m = measure_alone(self.torch, tool._ctx, module, cap, phase, backward, self.seconds,
                          tool._device_type, self.run_.clock.device if tool._device_type == "cuda" else None,
                          graph=True, wait=False)
        self.last_graph = bool(m["graph"])
        return m


def measure_alone(torch: Any, ctx: Any, module: Any, cap: _Capture, phase: int, backward: bool, seconds: float,
                  device_type: str, device: Any = None, graph: bool = False, wait: bool = True) -> Dict[str, Any]:
    """Runs one layer alone on its captured inputs (forward, plus backward when asked) for ``seconds`` after a
    short warm-up, and measures the energy of that stretch with a window of ``ctx``.

    Returns ``power_w`` and ``energy_j`` (lists per device of ctx), ``seconds``, ``iterations``, and ``t_a``,
    ``t_b`` (the timed stretch, host ns: the GPU runs the layer all through it).  wait=False: returns at once
    after the stretch, with the energy window still open on the library's side (``window``), so that the next
    layer's replay need not wait for the counter; finish_alone() then fills ``power_w`` and ``energy_j``.  The module is
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
            ac = contextlib.nullcontext()
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
        call_ns = (time.perf_counter_ns() - t0) / (i + 1)  # a call's time, synchronised: at most what it is
        run_once, per = step, 1
        if graph and cuda:
            captured = _capture_graph(torch, device, step, state, 8)
            if captured is not None:
                run_once, per = captured.replay, 8
                run_once()  # (warms the graph; the layer also runs right up to the stretch)
                sync()
        def record() -> Any:
            ev = torch.cuda.Event()
            ev.record(torch.cuda.current_stream(device))
            return ev

        t_a = _joulecap.now_ns()
        w = ctx.start_at(t_a)
        try:
            iters = _run_until(run_once, per, t_a + int(seconds * 1e9), _joulecap.now_ns, record if cuda else None,
                               launch_ns=per * call_ns)
            sync()
            t_b = _joulecap.now_ns()
            ctx.stop_at(w, t_b)
        except BaseException:
            ctx.release(w)
            raise
    finally:
        module.train(was_training)
        with torch.no_grad():
            for b, v in saved:
                b.copy_(v)
    m = {"window": w, "t_a": t_a, "t_b": t_b, "seconds": (t_b - t_a) * 1e-9, "iterations": iters,
         "graph": state["graph"]}
    if wait:
        finish_alone(ctx, m)
    return m


def finish_alone(ctx: Any, m: Dict[str, Any]) -> None:
    """Fetches the energy of a measure_alone(wait=False) window (waits for the counter to pass its end) into
    ``energy_j`` and ``power_w``, and releases the window."""
    w = m.pop("window", None)
    if w is None:
        return
    try:
        res = ctx.result(w, 10.0)
    finally:
        ctx.release(w)
    secs = m["seconds"]
    m["energy_j"] = list(res["energy_j"])
    m["power_w"] = [e / secs if secs > 0 else float("nan") for e in res["energy_j"]]


def _run_until(run_once: Callable[[], None], per: int, end_ns: int, now: Callable[[], int],
               record: Optional[Callable[[], Any]] = None, ahead: int = 4, launch_ns: float = 0.0) -> int:
    """Calls run_once (``per`` layer calls each) until ``end_ns`` (at least twice) and returns the layer calls.

    On a GPU (``record``: records an event after a launch and returns it) the host keeps at most ``ahead``
    launches queued: a launch returns at once, so the host would otherwise fill the CUDA launch queue and the
    GPU work it off long after the deadline.  With ``ahead`` queued the GPU still runs them back to back.  And
    it stops launching once the queued launches (``launch_ns`` each, about) reach the deadline, so that a
    budgeted replay lasts what its budget planned."""
    queued: Deque[Any] = collections.deque()
    calls = 0
    while calls < 2 or now() + len(queued) * launch_ns < end_ns:
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

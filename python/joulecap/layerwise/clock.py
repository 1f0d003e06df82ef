"""Markers and clocks.  A marker says "from here on, the time belongs to this slot"; its time is an int
(CLOCK_MONOTONIC ns, the library's clock) or, on a GPU, a CUDA event that the clock converts later.

* ``_HostClock``: markers are host times (a model on the CPU).
* ``_CudaClock``: markers are CUDA events on the current stream, no synchronisation per layer, placed on the
  host clock through an anchor event; it also enqueues the GPU-side waits (leads) of sampled bursts.
* ``_Markers``: the part of a run that records markers and starts resolve passes as they pile up.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, Optional

from .. import _joulecap
from ..errors import StateError


def _host_clock() -> Callable[[], int]:
    """CLOCK_MONOTONIC in ns, the clock of the C library's timestamps (jc_now_ns).

    time.perf_counter_ns is clock_gettime(CLOCK_MONOTONIC) on Linux (checked here); otherwise the library's own
    clock is used (slower by a call into the extension)."""
    impl = time.get_clock_info("perf_counter").implementation
    if "CLOCK_MONOTONIC" in impl and "RAW" not in impl:
        return time.perf_counter_ns
    return _joulecap.now_ns



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

    def probe(self) -> None:
        pass

    def probe_pending(self) -> bool:
        return False

    def probe_lag_ns(self) -> Optional[int]:
        return None

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
        self._probe: Any = None  # probe(): one event, recorded again at each step not sampled
        self._probe_host = 0  # host ns of its last record

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
        when it is not (work under ``torch.cuda.stream(s)``), the marker goes on that stream."""
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

    def probe(self) -> None:
        """Records the probe event on the current stream (see probe_pending)."""
        if self._probe is None:
            self._probe = self._new_event()
        self._probe_host = self.now()
        self._probe.record(self._stream())

    def probe_pending(self) -> bool:
        """True while the GPU has not reached the probe's last record: the host is ahead of the GPU by the work
        queued since (no host wait: one query)."""
        return self._probe is not None and not self._probe.query()

    def probe_lag_ns(self) -> Optional[int]:
        """How far the GPU was behind the host when the probe was last recorded: its GPU time on the host clock
        less the record's host time.  None before a record or while the probe is pending.  (The first records
        of a run follow start()'s synchronisation and the warm-up: an idle GPU, whatever the loop; the caller
        reads the lag only from the third step after the warm-up.)"""
        if self._probe is None or self.anchor is None or not self._probe.query():
            return None
        return self.anchor_host + int(round(self.anchor.elapsed_time(self._probe) * 1e6)) - self._probe_host

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


class _Markers:
    """Part of _Run: the markers not yet given energy.  ``mt[i]`` is a marker's time (host ns, or a clock token
    from index ``k`` on, not converted yet), ``ms[i]`` the slot that owns the time up to the next marker, ``mh[i]``
    its host time (with the tool's _host_shadow option).  Every ``check_at`` markers, a resolve pass (or, inside
    a burst, a short lead) keeps their number bounded."""

    def _init_markers(self, clock: Any, host_shadow: bool, max_pending: int) -> None:
        self.clock = clock
        self.mt: List[Any] = []
        self.ms: List[int] = []
        self.mh: Optional[List[int]] = [] if host_shadow else None
        self.k = 0
        self.last_slot = -1
        self.check_at = max_pending
        self.muted = False  # markers off while the hooks only capture replay inputs (capture.py)

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

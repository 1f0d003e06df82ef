"""Resolve passes: the markers' times and energies, and the intervals between them given to their slots.

A pass converts the completed markers to host times (clock.py), asks the library for the cumulative energy of
every device at each of them in one call (``energy_at``, interpolated as the library's windows are), and adds
each interval's time and energy (the difference of two instants) to the slot that owns it.  The marker that
starts the oldest interval still open stays, for the next pass.  Passes run at most every ``resolve_interval``
(from the model's forward pre-hook) or when markers pile up, never inside a burst, and once at stop().
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any, List, Optional

from .bursts import _Burst


class _Resolver:
    """Part of _Run: the resolve passes, and the library window kept at the oldest open interval."""

    def _init_resolver(self, devices_info: List[Any]) -> None:
        self.lock = threading.Lock()
        self.next_pass_ns = 0
        self.passes = 0
        self.resolve_ns = 0  # host time spent in resolve passes while measuring
        self.keep_win: Optional[Any] = None  # (window id, start ns) opened at mt[0]
        # the devices with an energy source (a device without one has NaN everywhere: nothing to wait for)
        self.measured = [i for i, d in enumerate(devices_info) if d.get("energy_source") != "none"]

    def maybe_resolve(self) -> None:
        if self.burst_left > 0 or self.burst_mark0 is not None:
            return  # inside a burst the host must stay ahead of the GPU: resolve after it
        now = time.perf_counter_ns()
        if now >= self.next_pass_ns:
            self.next_pass_ns = now + int(self.tool.resolve_interval * 1e9)
            self.resolve(force=False)

    def resolve(self, force: bool = False, final_timeout: Optional[float] = None) -> None:
        """Converts completed markers to host times, then gives each interval whose energies are known its time
        and energy.

        force: wait for half of the markers pending on the GPU (bounds them).  final_timeout: at stop(), wait that
        long for the samples after the last marker."""
        if not self.lock.acquire(final_timeout is not None):  # a pass already running elsewhere is enough
            return
        t_in = time.perf_counter_ns()
        try:
            self.passes += 1
            mt, ms, mh = self.mt, self.ms, self.mh
            if final_timeout is None:
                self.clock.maybe_reanchor()
            k = self.k = self.clock.convert(mt, self.k, force or final_timeout is not None)
            ctx = self.tool._ctx
            timeout = 0.0 if final_timeout is None else final_timeout
            j = 0
            if k > 1:
                energy, complete = ctx.energy_at(mt[:k], timeout)
                n = self._known(energy, ctx)
                if n > 1:
                    if self.keep_win is not None and self.keep_win[1] == mt[0]:
                        self._gone_fallback(energy)
                    if self.open_lead_slots:
                        self._accumulate_bursts(energy, n)
                    else:
                        self._accumulate(energy, n)
                    if mh is not None:
                        acc_th = self.acc_th
                        for sl, h0, h1 in zip(ms, mh, mh[1:n]):
                            acc_th[sl] += h1 - h0
                    j = n - 1
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

    def _known(self, energy: List[List[float]], ctx: Any) -> int:
        """How many markers, from the first, have their energies for good.  A device's energy is NaN past its
        latest sample: a device still sampled will have it, so the markers there wait for the next pass; a
        stalled or lost device will not, and holds nothing back (the library's windows give up on it likewise).
        NaN at the start is history no longer kept; NaN everywhere, a device with no sample after the markers
        yet, or a base energy not known yet (see resolve): nothing is known."""
        k = n = len(energy)
        last = energy[k - 1]
        states = None
        for d in self.measured:
            if last[d] == last[d]:  # (not NaN: every marker is known for d)
                continue
            if states is None:
                states = [info["state"] for info in ctx.devices()]
            if states[d] in ("stalled", "lost"):
                continue
            lo = 0
            while lo < n and energy[lo][d] != energy[lo][d]:
                lo += 1
            if lo >= n:
                return 0  # no sample of d after any marker yet
            hi = n  # energy[lo][d] is known, energy[hi][d] (or beyond the list) is not: bisect the first NaN
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if energy[mid][d] == energy[mid][d]:
                    lo = mid
                else:
                    hi = mid
            n = hi
        return n

    def _accumulate(self, energy: List[List[float]], n: int) -> None:
        """The intervals between markers 0..n-1: their time and energy added to their slots."""
        mt = self.mt
        acc_t, acc_e = self.acc_t, self.acc_e
        devices = range(self.ndev)
        for sl, t0, t1, e0, e1 in zip(self.ms, mt, mt[1:n], energy, energy[1:n]):
            if t1 != t0:
                acc_t[sl] += t1 - t0
                row = acc_e[sl]
                for d in devices:
                    row[d] += e1[d] - e0[d]

    def _accumulate_bursts(self, energy: List[List[float]], n: int) -> None:
        """_accumulate, once leads were enqueued, following the bursts: an opening lead opens one, the intervals
        after it belong to it (short leads apart), the next step not sampled closes it."""
        mt, ms = self.mt, self.ms
        acc_t, acc_e = self.acc_t, self.acc_e
        ndev = self.ndev
        open_slots, plain_slots = self.open_lead_slots, self.plain_slots
        b = self.burst
        knots = bool(self.knot_devices)
        for sl, t0, t1, e0, e1 in zip(ms, mt, mt[1:n], energy, energy[1:n]):
            dt = t1 - t0
            de = [e1[d] - e0[d] for d in range(ndev)]
            if sl in open_slots:
                if b is not None:
                    self._close_burst(b, t0)
                b = self.burst = _Burst(sl, t0, t1, ndev, self.n_bursts)
                self.n_bursts += 1
                for d in range(ndev):
                    b.lead_e[d] += de[d]
            elif b is not None:
                if sl in plain_slots:
                    self._close_burst(b, t0)
                    b = None
                elif sl - 1 in open_slots:  # a short lead
                    b.inner.append((t0, t1))
                    b.inner_t += dt
                    for d in range(ndev):
                        b.inner_e[d] += de[d]
                else:
                    rec = b.slots.get(sl)
                    if rec is None:
                        rec = b.slots[sl] = [0, [0.0] * ndev]
                    rec[0] += dt
                    er = rec[1]
                    for d in range(ndev):
                        er[d] += de[d]
                    b.marks += 1
                    if dt and knots:
                        b.ivs.append((sl, t0, t1))
            if dt:
                acc_t[sl] += dt
                row = acc_e[sl]
                for d in range(ndev):
                    row[d] += de[d]

    def _keep(self, ctx: Any, t0: int) -> None:
        """Keeps a library window open at the start of the oldest open interval: if no marker comes for longer
        than the sampler's history (minutes), energy_at cannot go back that far, but the window can."""
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

    def _gone_fallback(self, energy: List[List[float]]) -> None:
        """Where the energy at the first marker (the kept window's start) is no longer in the history, takes the
        first interval's energy from the window instead: energy[0] becomes energy[1] less it."""
        first, second = energy[0], energy[1]
        gone = [d for d in self.measured if math.isnan(first[d])]
        if not gone:
            return
        ctx = self.tool._ctx
        w = self.keep_win[0]  # type: ignore[index]
        self.keep_win = None
        try:
            ctx.stop_at(w, self.mt[1])
            r = ctx.result(w, 10.0)
        finally:
            ctx.release(w)
        first = energy[0] = list(first)
        for d in gone:
            first[d] = second[d] - r["energy_j"][d]

"""Resolve passes: the markers' times and energies, and the intervals between them given to their slots.

A pass converts the completed markers to host times (clock.py), gives the intervals energy in groups spanning at
least 1 ms (one ``energy_between`` each, split by time inside the group), and adds each interval's time and
energy to the slot that owns it.  The marker that starts the oldest interval still open stays, for the next pass.
Passes run at most every ``resolve_interval`` (from the model's forward pre-hook) or when markers pile up, never
inside a burst, and once at stop().
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any, List, Optional

from .bursts import _Burst

_GROUP_NS = 1_000_000  # intervals are given energy in groups spanning at least this (1 ms)


class _Resolver:
    """Part of _Run: the resolve passes, and the library window kept at the oldest open interval."""

    def _init_resolver(self, devices_info: List[Any]) -> None:
        self.lock = threading.Lock()
        self.next_pass_ns = 0
        self.passes = 0
        self.resolve_ns = 0  # host time spent in resolve passes while measuring
        self.keep_win: Optional[Any] = None  # (window id, start ns) opened at mt[0]

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

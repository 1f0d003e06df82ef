"""The power of a burst's work, measured over the burst.

Interpolating the counter gives every interval the average power of the counter steps around it, which inside a
burst mixes the work with the leads (a waiting GPU draws far less) and, at its ends, with the neighbouring steps.
Here the opening lead's interior gives the power of a waiting GPU and the burst's interior the work's; at stop()
the steps not sampled can give the work's power too, where that is better conditioned (refine_work_power).
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Tuple

from .knots import _GRID_NS, counter_steps, fit_powers
from .rows import INFER, OUTSIDE_UNSAMPLED, PHASES, TRAIN

_COUNTER_STEP_NS = 100_000_000  # the GPU energy counter's step (NVML's)
_MAX_IDLE_PER_BUSY = 1.0  # refine_work_power: the run's work power only where idle <= busy in the steps not sampled


class _Burst:
    """Consecutive sampled steps after one opening lead: the lead [t_open, t_a], the work up to t_b (time and
    interpolated energy per slot, with the short leads inside it apart)."""

    __slots__ = ("lead_slot", "t_open", "t_a", "t_b", "slots", "lead_e", "inner", "inner_t", "inner_e", "marks",
                 "index", "work_t", "lead_win", "work_win", "p_lead", "p_work", "total", "q", "ivs", "rel", "applied")

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
        self.ivs: List[Tuple[int, int, int]] = []  # its work intervals (slot, t0, t1), for the knots (knots.py)
        # per device, each work slot's power relative to the work's (from the counter's steps), or None: alike
        self.rel: List[Optional[Dict[int, float]]] = [None] * ndev
        self.applied: List[Optional[Dict[int, float]]] = [None] * ndev  # each work slot's energy as applied


class _Bursts:
    """Part of _Run: the bursts seen by the resolve passes (resolve.py follows them), their measured powers."""

    def _init_bursts(self) -> None:
        self.burst: Optional[_Burst] = None  # the burst open at the last resolved marker
        self.bursts_closed: List[_Burst] = []  # closed, not yet measured
        self.bursts_done: List[_Burst] = []  # measured (see _finish_bursts, refine_work_power)
        self.n_bursts = 0  # bursts seen by the resolve passes
        self.work_power: Dict[str, Any] = {}  # per phase: the work's power from the bursts and from the whole run
        self.work_per_mark: Optional[float] = None  # GPU ns of work per marker, measured on the last burst
        # the GPUs, whose counter steps (knots.py) give the layers of a burst their own powers (tool's _knots)
        labels = self.tool._devices.labels
        self.knot_devices = {d for d, lab in enumerate(labels) if lab.startswith("gpu")} if self.tool._knots else set()
        self.knots_fitted = 0  # bursts x devices whose slots got powers from the knots

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
                # an opening lead too short to measure a waiting GPU (a short run's first bursts): the counter's
                # steps may still tell the burst's slots apart, the leads' power fitted with them
                if self.knot_devices and b.ivs and b.work_t > 0:
                    if not ctx.energy_between(b.t_open, b.t_b, timeout)["resolved"]:
                        left.append(b)
                        continue
                    if self._fit_knots_whole(b, timeout):
                        self.bursts_done.append(b)
                b.ivs = []
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
                p_work = math.nan
                if interior:
                    p_work = (r["energy_j"][d] - p_lead * lead_win) / work_win
                if d in self.knot_devices:
                    self._fit_knots(b, d, p_work, timeout)
                if not math.isnan(p_work):
                    b.p_work[d] = p_work
                    self._apply_burst_power(b, d, p_work)
                elif b.rel[d] is not None:  # no interior: the interpolated work energy, split by the knots
                    self._apply_burst_power(b, d, sum(rec[1][d] for rec in b.slots.values()) / b.work_t)
                    b.q[d] = None  # (no power of its own: refine_work_power may still give it the run's)
            b.ivs = []
            self.bursts_done.append(b)
        self.bursts_closed = left

    def _fit_knots(self, b: "_Burst", d: int, p_work: float, timeout: float) -> None:
        """Each work slot's power relative to the burst's work power, from the counter's steps inside the burst
        (knots.py), in b.rel[d]; left None where the steps say nothing (no step inside the burst's work)."""
        if not b.ivs or b.work_t <= 0:
            return
        prior = p_work
        if math.isnan(prior) or prior <= 0:
            prior = sum(rec[1][d] for rec in b.slots.values()) / b.work_t
        if math.isnan(prior) or prior <= 0:
            return
        grid = list(range(b.t_open, b.t_b + 1, _GRID_NS))
        energy, _ = self.tool._ctx.energy_at(grid, timeout)
        steps = counter_steps(grid, [row[d] for row in energy])
        steps = [s for s in steps if s[1] > b.t_a]  # (steps inside the opening lead say nothing of the work)
        if not steps:
            return
        known = [(b.t_open, b.t_a, b.p_lead[d])] + [(t0, t1, b.p_lead[d]) for t0, t1 in b.inner]
        powers = fit_powers(steps, known, b.ivs, prior)
        if powers:
            b.rel[d] = {sl: p / prior for sl, p in powers.items()}
            self.knots_fitted += 1

    def _fit_knots_whole(self, b: "_Burst", timeout: float) -> bool:
        """A burst without an opening lead's interior: its whole energy (interpolated) split among its slots,
        the leads included, by time x the powers fitted to the counter's steps inside it (knots.py), the prior
        the burst's average power.  True where some device got a fit."""
        lead_t = b.t_a - b.t_open
        intervals = b.ivs + [(b.lead_slot, b.t_open, b.t_a)] + [(b.lead_slot + 1, t0, t1) for t0, t1 in b.inner]
        times = {sl: rec[0] for sl, rec in b.slots.items()}
        times[b.lead_slot] = lead_t
        if b.inner_t:
            times[b.lead_slot + 1] = b.inner_t
        grid = list(range(b.t_open, b.t_b + 1, _GRID_NS))
        energy = None
        done = False
        for d in self.knot_devices:
            old = {sl: rec[1][d] for sl, rec in b.slots.items()}
            old[b.lead_slot] = b.lead_e[d]
            if b.inner_t:
                old[b.lead_slot + 1] = b.inner_e[d]
            total = sum(old.values())
            t_all = sum(times.values())
            if not (total > 0) or t_all <= 0:
                continue
            if energy is None:
                energy, _ = self.tool._ctx.energy_at(grid, timeout)
            steps = counter_steps(grid, [row[d] for row in energy])
            powers = fit_powers(steps, [], intervals, total / t_all) if steps else {}
            if not powers:
                continue
            w = {sl: powers.get(sl, total / t_all) * t for sl, t in times.items()}
            f = total / sum(w.values())
            acc_e = self.acc_e
            for sl, t in times.items():
                acc_e[sl][d] += f * w[sl] - old[sl]
            b.lead_e[d] = f * w[b.lead_slot]
            if b.inner_t:
                b.inner_e[d] = f * w[b.lead_slot + 1]
            work = {sl: f * w[sl] for sl in b.slots}
            for sl, rec in b.slots.items():
                rec[1][d] = work[sl]
            b.applied[d] = work
            b.q[d] = sum(work.values()) / b.work_t
            self.knots_fitted += 1
            done = True
        return done

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
        q = new_work / b.work_t
        acc_e = self.acc_e
        rel = b.rel[d]
        if rel is not None:  # each slot's own power from the knots, scaled to the work's energy
            w = {sl: rel.get(sl, 1.0) * rec[0] for sl, rec in b.slots.items()}
            f = new_work / sum(w.values()) if sum(w.values()) > 0 else 0.0
            new_e = {sl: f * w[sl] for sl in b.slots}
        else:
            new_e = {sl: q * rec[0] for sl, rec in b.slots.items()}
        old_e = b.applied[d]
        for sl, rec in b.slots.items():
            acc_e[sl][d] += new_e[sl] - (rec[1][d] if old_e is None else old_e[sl])
        b.applied[d] = new_e
        acc_e[b.lead_slot + 1][d] += new_inner - b.inner_e[d]
        acc_e[b.lead_slot][d] += (total - new_work - new_inner) - b.lead_e[d]
        b.q[d], b.inner_e[d], b.lead_e[d] = q, new_inner, total - new_work - new_inner

    def refine_work_power(self) -> None:
        """At stop(): the power of the bursts' work measured over the whole run, where that is better conditioned.

        A burst's interior holds work and short leads, E = P_work x work + P_wait x leads, and P_wait is taken from
        the opening lead: an error in it moves P_work by (leads / work) times as much, and where the hooks slow the
        host a lot the short leads fill most of the burst.  The steps not sampled do the same work without the tool:
        their energy is P_work x busy + P_wait x idle, busy = their number x the GPU time of a sampled step (the
        bursts' work per step, leads apart), idle = their time beyond it.  Where idle / busy is the smaller ratio (a
        GPU-bound job: no idle time), P_work from those steps, measured over most of the run, replaces the bursts'
        own, and a burst too short for an interior gets it in any case; otherwise the bursts' stays.
        Never where idle exceeds busy (_MAX_IDLE_PER_BUSY): there the waiting power's error dominates (a short
        run whose only step not sampled is a slow warm-up).  ``result.clock["work_power"]`` gives both per
        phase."""
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

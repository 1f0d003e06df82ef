"""Step sampling: the layers' hooks run on sampled steps only, within the tool's overhead budget.

A step is a forward of the model itself up to the next one.  A step not sampled costs one hook and one marker;
its time and energy are given to the rows at the end (attribution.py).  On a GPU, steps are sampled in bursts of
about ``burst_seconds``: an opening lead (a 0.3 s GPU-side wait) then, every LEAD_EVERY markers, a short lead, so
that the GPU runs the sampled kernels back to back although the hooks slow the host (the CUDA launch queue lets
the host run only ~1000 commands ahead).  bursts.py then gives each burst's work the power measured over it.
"""

from __future__ import annotations

import collections
import math
import statistics
import time
from typing import Any, Callable, Deque, List, Optional, Tuple

from .hooks import _graph_task_id
from .rows import INFER, OUTSIDE_LEAD, OUTSIDE_UNSAMPLED, TRAIN

_OPEN_LEAD_NS = 300_000_000  # a burst's opening lead: its interior (0.1 s in from both ends) measures a waiting GPU
_MIN_OPEN_LEAD_NS = 50_000_000  # the opening lead early in a run, when max_overhead x the time so far is less
_SETTLE_STEPS = 4  # steps not sampled after sampled ones that do not time a base (the GPU catches up first)
# On a GPU, the phase's first burst waits up to this many steps after the warm-up while the GPU runs behind the
# host but not yet a whole step behind (a GPU-bound loop gets there in a few steps), so that it opens without a lead.
_PROBE_STEPS = 4
_BEHIND_SHARE = 0.25  # "behind": the probe's lag is at least this share of the step before's host time
LEAD_EVERY = 256  # markers between short leads inside a burst (~500 CUDA commands: half the launch queue)


class _Sampling:
    """Part of _Run: which steps are sampled, and the bursts' leads."""

    def _init_sampling(self, sample_all: bool, n_layers: int) -> None:
        self.sample_all = sample_all
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
        self.t_start_host = time.perf_counter_ns()
        self.first_unit_ns = 50_000_000  # the warm-up step's host time, once known
        self.last_unit_ns = 0  # the host time of the step before
        # bursts: consecutive sampled steps behind one lead (see make_step_pre, resolve.py, bursts.py)
        self.open_lead_slots: set = set()  # slots of opening leads (a lead row's forward half)
        self.plain_slots: set = set()  # slots of steps not sampled
        self.burst_left = 0
        self.burst_phase = TRAIN
        self.burst_mark0: Optional[Tuple[int, int]] = None
        self.marks_per_step = 5.0 * n_layers  # a guess until a burst has been counted
        self.burst_steps: List[int] = []  # sampled steps of each burst opened, in order
        self.lead_host_ns = 0
        self.host_per_mark_min: Optional[float] = None  # the burst's least host time per marker (_inner_lead)
        self.lead_end: Any = None  # the marker after the burst's last lead (an event: has the GPU got there?)
        self.leads_skipped = 0
        # The GPU had not reached the start of the step before when this one began: the host is a step or more
        # ahead (a GPU-bound loop), the launch queue already runs the sampled kernels back to back, and a burst
        # opens without a lead (open_lead_ns).  From the probe event recorded at each step not sampled.
        self.host_ahead = False
        self.leads_not_needed = 0  # bursts opened without a lead for that reason

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
                run.host_ahead = run.leads() and run.clock.probe_pending()
                sample = run.decide(ph, now, warm)
                if sample and run.sampled[ph] and run.capture_due(ph, warm, now):
                    sample = False  # (the replay's captures are taken in a step not sampled: this one)
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
                capture = run.capture_due(ph, warm, now)
                if run.attached and not capture:
                    run.detach()
                run.outermost_forward(ph)  # (no measured forward is open: fstack is empty here)
                slot = 2 * run._outside_row(OUTSIDE_UNSAMPLED, ph)
                run.plain_slots.add(slot)
                run.calls[slot] += 1
                run.mark(slot)
                if run.leads():
                    run.clock.probe()
                if capture:
                    run.begin_capture(ph)
            run.unit = (ph, sample, now, warm)
            return None

        return step_pre

    def end_unit(self, now: int) -> None:
        self.end_capture()
        if self.unit is None:
            return
        ph, sampled, t0, warm = self.unit
        self.unit = None
        self.last_unit_ns = now - t0
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
        allocations, lazy initialisation make them unlike the others), then the phase's first step (on a GPU, the
        first that shows the host a step ahead or, from the third after the warm-up, the GPU idle at the step
        before's start; at the latest the _PROBE_STEPS-th after the warm-up), then whenever
        the extra time spent on sampled steps (their duration beyond a step not sampled, plus their leads) stays
        within max_overhead of the time elapsed, counting the step about to be sampled."""
        if self.sample_all:
            return True
        if warm:
            return False
        if self.sampled[ph] == 0:
            n = self.steps[ph] - self.tool.warmup_steps
            if self.leads() and not self.host_ahead and n < _PROBE_STEPS:
                # host-bound (sample now) where the GPU was idle when the step before began; that tells only once
                # the step before that was not a warm-up step (a slow one lets any GPU catch up)
                lag = self.clock.probe_lag_ns() if n >= 2 else None
                return lag is not None and lag < _BEHIND_SHARE * self.last_unit_ns
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
        steps, lead_ns = (self.plan_burst(ph), self.open_lead_ns(now)) if self.leads() else (1, 0)
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

    def open_lead_ns(self, now: int) -> int:
        """The opening lead's length: none where the host is ahead of the GPU already (host_ahead); else 0.3 s
        (long enough for its interior to measure a waiting GPU), or with _early_scale shorter early in a run,
        max_overhead x the time so far but at least 50 ms (enough to put the host ahead).  A burst behind no lead
        or a short one gets its powers from the counter's steps alone (_fit_knots_whole)."""
        if self.host_ahead:
            return 0
        if not self.tool._early_scale:
            return _OPEN_LEAD_NS
        return int(min(_OPEN_LEAD_NS, max(_MIN_OPEN_LEAD_NS, self.tool.max_overhead * (now - self.t_start_host))))

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
        steps = max(1, min(256, int(math.ceil(self.tool.burst_seconds * 1e9 / max(host, 1.0)))))
        if not self.sampled[ph] and base and self.tool._early_scale:
            # the phase's first burst comes at once: early in a run, only as many steps as max_overhead of the
            # time so far pays for (at least one), each costing its host time beyond a step not sampled
            spare = self.tool.max_overhead * (time.perf_counter_ns() - self.t_start_host)
            steps = min(steps, max(1, int(spare / max(host - base, 1.0))))
        return steps

    def open_burst(self, ph: int, steps: int) -> None:
        """A burst starts with an opening lead: a kernel that keeps the GPU waiting, long enough (0.3 s) for
        the counter to measure the power of a waiting GPU, which the short leads inside the burst draw
        (_finish_bursts).  The events for the burst are made just before it, and the pending markers are not
        resolved until the burst ends: inside it, every LEAD_EVERY markers, _inner_lead enqueues a short lead
        instead.  The leads' time and energy go to the row "(outside) joulecap lead"."""
        r = self._outside_row(OUTSIDE_LEAD, ph)
        self.open_lead_slots.add(2 * r)  # short leads use the row's other half, 2 * r + 1
        self.burst_steps.append(1)
        # events first: recording them while the GPU waits would fill the launch queue and stall the host
        self.clock.reserve(min(int(1.2 * steps * self.marks_per_step) + 64, 1 << 17))
        self.mark(2 * r)
        lead_ns = self.open_lead_ns(time.perf_counter_ns())
        if lead_ns:
            if not self.clock.lead(lead_ns * 1e-9):
                return
            self.calls[2 * r] += 1
            self.lead_ns += lead_ns
        else:
            self.leads_not_needed += 1  # (the burst's marker stays: it opens the burst in resolve.py)
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

        No lead while the GPU has not reached the end of the previous one (its marker's event is not done): it is
        behind the host already, and a lead then would fill the launch queue, block the host, and the blocked time
        would make the next lead longer still, up to the 0.1 s cap.  For the same reason the host time per marker
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

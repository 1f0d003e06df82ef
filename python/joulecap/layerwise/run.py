"""_Run: one measurement between start() and stop().

Its parts are classes of their own modules, each owning its state (set up by its ``_init_*`` method) and reaching
the others' through the run:

* ``_Rows`` (rows.py): the rows and their slots' accumulators;
* ``_Markers`` (clock.py): the markers not yet given energy;
* ``_Hooks`` (hooks.py): the forward and backward hooks and the stacks they share;
* ``_Capturing`` (capture.py): the replay inputs taken in the warm-up step;
* ``_Sampling`` (sampling.py): which steps are sampled, and the bursts' leads;
* ``_Resolver`` (resolve.py): the resolve passes that give intervals their energy;
* ``_Bursts`` (bursts.py): the power of each burst's work.

They are one object because the hooks' hot path reads their state without indirection.
"""

from __future__ import annotations

import time
from typing import Any, List, Tuple

from .bursts import _Bursts
from .capture import _Capturing
from .clock import _Markers
from .hooks import _Hooks
from .resolve import _Resolver
from .rows import OUTSIDE_OTHER, _Rows
from .sampling import _Sampling


class _Run(_Rows, _Markers, _Hooks, _Capturing, _Sampling, _Resolver, _Bursts):
    def __init__(self, tool: Any, torch: Any, model: Any, layers: List[Tuple[str, Any]], clock: Any, ndev: int):
        self.tool = tool
        self._init_rows(layers, ndev)
        self._init_markers(clock, tool._host_shadow, tool.max_pending)
        self._init_hooks(torch, model, layers)
        self._init_capture()
        self._init_sampling(tool.sample == "all", len(layers))
        self._init_resolver(tool._devices.info)
        self._init_bursts()
        self.t_start = 0
        self.t_end = 0
        self.window = 0  # the library window over the whole run
        self.pre_first = self._outside_row(OUTSIDE_OTHER, None)  # the time before the first forward

    def begin(self, ctx: Any, resolve_interval: float) -> None:
        """Starts the clock and the timeline: the first marker, and the window over the whole run."""
        t0 = self.clock.begin()
        self.t_start = t0
        self.window = ctx.start_at(t0, "layerwise run")
        self.mt.append(t0)
        self.ms.append(2 * self.pre_first)
        if self.mh is not None:
            self.mh.append(time.perf_counter_ns())
        self.k = 1
        self.last_slot = 2 * self.pre_first
        self.next_pass_ns = time.perf_counter_ns() + int(resolve_interval * 1e9)

    def end(self) -> int:
        """Removes the hooks, waits for the device's queued work, and gives the last intervals their energy
        (waiting up to 10 s for the samples after the end).  Returns the end time."""
        self.remove_hooks()
        self.end_capture()
        try:
            t_end = self.clock.finish()
        finally:
            self.active = False
        self.t_end = t_end
        self.mt.append(t_end)
        self.ms.append(-1)
        if self.mh is not None:
            self.mh.append(time.perf_counter_ns())
        self.resolve(final_timeout=10.0)
        self.refine_work_power()
        self._drop_keep(self.tool._ctx)
        return t_end

"""Per-job energy: the GPU energy an :class:`~joulecap.EnergyMeasurementTool` measures goes to its job's totals at
joulecapd, which exports them as ``joulecap_job_gpu_energy_joules_total{job,user,gpu}`` (docs/daemon.md).

Only where this process has a job name (``JOULECAP_JOB``, ``SLURM_JOB_ID`` or ``TORCHELASTIC_RUN_ID``) and the
daemon's socket exists; best effort: nothing here ever raises into the measurement.  What is reported is the
energy of the periods in which at least one window of the tool was open (nested and overlapping windows are
counted once): a hidden window spans each such period, and its result is sent once the library has it, at a
later start or stop of the tool, or at its close.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, List, Optional

from . import _joulecap

log = logging.getLogger("joulecap")

# Statuses after which this tool stops trying: no daemon, or one that keeps no job energy.
_GIVE_UP = ("JC_ERR_UNAVAILABLE", "JC_ERR_NOT_SUPPORTED", "JC_ERR_NO_PERMISSION", "JC_ERR_INVALID_ARGUMENT")


def wrap(ctx: Any) -> Any:
    """``ctx`` itself, or a proxy that reports the tool's GPU energy when there is a job and a joulecapd."""
    try:
        job = _joulecap.job_name()
        if job is None or not _joulecap.cap_route()[0]:
            return ctx
    except Exception:  # pragma: no cover - an old extension: no reporting
        return ctx
    return ReportingContext(ctx, job)


class ReportingContext:
    """A library context (``_joulecap.Context``) whose window starts and stops also delimit the job's periods."""

    def __init__(self, ctx: Any, job: str):
        self._ctx = ctx
        self.job = job
        self._lock = threading.Lock()
        self._depth = 0
        self._window: Optional[int] = None
        self._pending: List[int] = []
        self._enabled = True
        self.reported = 0  # periods sent (for tests and debugging)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx, name)

    def start(self, name: Optional[str] = None) -> int:
        w = self._ctx.start(name)
        try:
            with self._lock:
                self._depth += 1
                if self._depth == 1 and self._enabled:
                    self._window = self._ctx.start(None)
            if not self._pending:
                return w
            self._send(0.0)
        except Exception as e:  # never fails the measurement
            log.debug("job energy: %s", e)
        return w

    def stop_pending(self, w: int) -> Any:
        p = self._ctx.stop_pending(w)
        try:
            with self._lock:
                if self._depth > 0:
                    self._depth -= 1
                if self._depth == 0 and self._window is not None:
                    self._ctx.stop(self._window)
                    self._pending.append(self._window)
                    self._window = None
            self._send(0.0)
        except Exception as e:
            log.debug("job energy: %s", e)
        return p

    def close(self) -> Any:
        try:
            with self._lock:
                if self._window is not None and not self._ctx.closed:
                    self._ctx.stop(self._window)
                    self._pending.append(self._window)
                    self._window = None
            self._send(2.0, force=True)
        except Exception as e:
            log.debug("job energy: %s", e)
        return self._ctx.close()

    def _send(self, timeout: float, force: bool = False) -> None:
        with self._lock:
            todo, self._pending = self._pending, []
        keep = []
        for w in todo:
            if self._ctx.closed:
                break
            if not self._enabled:
                self._ctx.release(w)
                continue
            r = self._ctx.job_report(w, self.job, timeout, force)
            if r is None:
                keep.append(w)
                continue
            status, detail = r
            if status == "OK":
                self.reported += 1
            else:
                log.debug("job energy of %r not reported to joulecapd: %s", self.job, detail)
                if status in _GIVE_UP:
                    self._enabled = False
        with self._lock:
            self._pending = keep + self._pending

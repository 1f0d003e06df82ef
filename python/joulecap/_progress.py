"""A progress line on the terminal for long work (the power-cap profiler): tqdm's when tqdm is installed, else a
plain line rewritten in place; nothing at all when the stream is not a terminal (a log file, a pipe, CI)."""

from __future__ import annotations

import sys
import time
from typing import Any, Optional


class ProgressLine:
    """``update(done, text)`` at any rate: the line is redrawn at most every ``min_interval`` seconds.
    ``done`` counts towards ``total`` (seconds of a budget, say); ``text`` says the rest.  ``close()`` clears it.

    ``enabled=None`` shows it only when ``stream`` (stderr by default) is a terminal."""

    def __init__(self, label: str, total: Optional[float] = None, *, enabled: Optional[bool] = None,
                 stream: Any = None, min_interval: float = 0.1, unit: str = "s") -> None:
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            isatty = getattr(self.stream, "isatty", None)
            enabled = bool(isatty and isatty())
        self.enabled = enabled
        self.label, self.total, self.unit = label, total, unit
        self.min_interval = min_interval
        self._last = 0.0
        self._bar = None
        self._width = 0
        if not enabled:
            return
        try:
            from tqdm import tqdm
        except ImportError:
            return
        self._bar = tqdm(total=total, desc=label, unit=unit, file=self.stream, leave=False, dynamic_ncols=True,
                         bar_format="{desc}: {bar:20} {n:.1f}/{total:.0f} %s | {postfix}" % unit if total
                         else "{desc}: {n:.1f} %s | {postfix}" % unit)

    def update(self, done: float, text: Any, *, force: bool = False) -> None:
        """``text`` may be a callable, called only when the line is redrawn."""
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < self.min_interval:
            return
        self._last = now
        if callable(text):
            text = text()
        if self._bar is not None:
            if self.total is not None and done > self._bar.total:
                self._bar.total = done
            self._bar.n = done
            self._bar.set_postfix_str(text, refresh=False)
            self._bar.refresh()
            return
        of = " / %.0f %s" % (self.total, self.unit) if self.total else " %s" % self.unit
        line = "%s: %.1f%s | %s" % (self.label, done, of, text)
        pad = max(0, self._width - len(line))
        self._width = len(line)
        self.stream.write("\r" + line + " " * pad)
        self.stream.flush()

    def set_total(self, total: float) -> None:
        self.total = total
        if self._bar is not None:
            self._bar.total = total

    def close(self) -> None:
        if not self.enabled:
            return
        self.enabled = False
        if self._bar is not None:
            self._bar.close()
        else:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()

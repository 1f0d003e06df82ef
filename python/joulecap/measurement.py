"""The seed's measurement tools on libjoulecap.

``EnergyMeasurementTool`` measures code snippets (windows); ``AsynchronousMeasurementTool`` writes a row of
readings every *interval_s* seconds.  Names, arguments and CSV columns follow the seed, so a seed user changes
only the import line.  No Python thread or process measures anything: the C library's sampler thread does
every read, ``start()``/``stop()`` only take timestamps, and the CSV rows are written by C threads as soon as
their values are known.
"""

from __future__ import annotations

import functools
import math
import threading
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Union

from . import _jobs, _joulecap
from ._deprecation import renamed_keywords, warn_renamed
from ._types import GpuSelection, OutFile
from . import distributed as _distributed
from ._common import J_PER_KWH, _Devices, _check_path, _create_file, _gpu_selection, _open_context, _register, _source_notes
from .errors import InvalidArgument, StateError

if TYPE_CHECKING:
    from .carbon import Carbon

#: EnergyMeasurementTool's carbon argument: a Carbon (joulecap.carbon_settings(...)), a dict of its arguments,
#: None (from the environment) or False (none).
CarbonArg = Union["Carbon", Dict[str, Any], bool, None]

__all__ = ["EnergyMeasurementTool", "AsynchronousMeasurementTool", "Measurement", "WindowContext",
           "LayerwiseMeasurementTool"]


# --------------------------------------------------------------------------------------------------------------
# Results


class Measurement:
    """The result of one window of :class:`EnergyMeasurementTool`.

    ``stop()`` returns it at once; its values are resolved by the library from the sampler's series within about
    one GPU energy-counter step (~0.1 s) of the stop.  Reading any value waits for that (the CSV row is written
    by then too); ``ready`` tells whether it would wait.

    Values: ``elapsed_s``; ``cpu_energy_j`` / ``cpu_energy_kwh``; ``gpu_energy_j`` / ``gpu_energy_kwh`` (dicts
    keyed by CUDA device number); ``total_gpu_energy_j``, ``total_energy_j``; ``sources`` (``{"cpu": "rapl",
    "gpu0": "counter"}``); ``estimates`` (device label -> why its value is an estimate, partial or missing);
    ``is_estimate``; ``coverage`` (share of the window each value covers: 1.0 whole); ``uncertainty_j`` (95%
    half-width); ``states`` (worst device health in the window); ``resolved`` (False when the samples around an
    edge did not arrive in time).  NaN stands for a value that cannot be measured here (see ``estimates``).
    """

    __slots__ = ("name", "_pending", "_devices", "_data", "carbon")

    def __init__(self, name: Optional[str], pending: Any, devices: _Devices, carbon: Any = None):
        self.name = name
        self._pending = pending
        self._devices = devices
        self._data: Optional[Dict[str, Any]] = None
        #: The grid intensity and price the tool was given (joulecap.carbon.Carbon), or None.
        self.carbon = carbon

    # -- resolution --------------------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """True when the values are known (reading them will not wait)."""
        return self._data is not None or self._pending.ready

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Waits up to timeout seconds (None: as long as it takes) for the values; returns whether they came."""
        if self._data is not None:
            return True
        d = self._pending.wait(timeout)
        if d is None:
            return False
        self._data = d
        self._pending = None
        return True

    def _get(self) -> Dict[str, Any]:
        if self._data is None:
            self.wait()
        return self._data  # type: ignore[return-value]

    # -- values ------------------------------------------------------------------------------------------------

    @property
    def elapsed_s(self) -> float:
        return self._get()["elapsed_s"]

    @property
    def start_s(self) -> float:
        """Start of the window, in seconds since the tool was created."""
        return (self._get()["start_ns"] - self._devices.epoch_ns) * 1e-9

    @property
    def resolved(self) -> bool:
        return self._get()["resolved"]

    @property
    def energy_j(self) -> Dict[str, float]:
        """Energy per device label: ``{"cpu": J, "gpu0": J, ...}``."""
        return dict(zip(self._devices.labels, self._get()["energy_j"]))

    @property
    def cpu_energy_j(self) -> float:
        return self._get()["energy_j"][0]

    @property
    def cpu_energy_kwh(self) -> float:
        return self.cpu_energy_j / J_PER_KWH

    @property
    def gpu_energy_j(self) -> Dict[int, float]:
        """Energy of each GPU in joules, keyed by CUDA device number."""
        return dict(zip(self._devices.gpu_indices, self._get()["energy_j"][1:]))

    @property
    def gpu_energy_kwh(self) -> Dict[int, float]:
        return {g: e / J_PER_KWH for g, e in self.gpu_energy_j.items()}

    @property
    def total_gpu_energy_j(self) -> float:
        """Sum over the measured GPUs (0.0 when none is measured)."""
        return float(sum(self._get()["energy_j"][1:]))

    @property
    def total_energy_j(self) -> float:
        """CPU plus GPUs; NaN when the CPU energy is unknown."""
        return self.cpu_energy_j + self.total_gpu_energy_j

    @property
    def total_energy_kwh(self) -> float:
        return self.total_energy_j / J_PER_KWH

    @property
    def gco2e(self) -> Optional[float]:
        """Grams of CO2e of ``total_energy_j`` at the grid intensity the tool was given (``carbon=``,
        ``JOULECAP_GRID_GCO2_PER_KWH``); None when none was set."""
        return self.carbon.gco2e(self.total_energy_j) if self.carbon is not None else None

    @property
    def cost(self) -> Optional[float]:
        """The price of ``total_energy_j`` (in ``carbon.currency``) at the price the tool was given; None when none
        was set."""
        return self.carbon.cost(self.total_energy_j) if self.carbon is not None else None

    @property
    def sources(self) -> Dict[str, str]:
        """Where each device's energy comes from: counter, rapl, estimate, integrated-power or none."""
        return dict(zip(self._devices.labels, self._get()["source"]))

    @property
    def estimates(self) -> Dict[str, str]:
        """Device label -> why its value is an estimate or missing (empty when every value is measured)."""
        d = self._get()
        out = _source_notes(self._devices.labels, d["source"], self._devices.info)
        for label, src, cov, state, info in zip(
            self._devices.labels, d["source"], d["coverage"], d["state"], self._devices.info
        ):
            if src != "none" and cov < 1:
                out.setdefault(label, "partial: covers %.1f%% of the window (%s: %s)" % (
                    100 * cov, state, info.get("state_note", "") or "see devices"))
        if not d["resolved"]:
            for label in self._devices.labels:
                out.setdefault(label, "partial: the samples around the window's end did not arrive in time")
        return out

    @property
    def coverage(self) -> Dict[str, float]:
        """Share of the window each device's value covers: 1.0 whole; below 1 the device stalled or was lost
        inside the window and its value is the energy up to its last sample; 0.0 nothing (NaN value)."""
        return dict(zip(self._devices.labels, self._get()["coverage"]))

    @property
    def uncertainty_j(self) -> Dict[str, float]:
        """Half-width (J) of a 95% interval around each device's energy, from where the counter's steps fall
        against the window's edges."""
        return dict(zip(self._devices.labels, self._get()["uncertainty_j"]))

    @property
    def states(self) -> Dict[str, str]:
        """The worst health of each device during the window: ok, degraded, stalled or lost."""
        return dict(zip(self._devices.labels, self._get()["state"]))

    @property
    def is_estimate(self) -> bool:
        return bool(self.estimates)

    # -- conversions -------------------------------------------------------------------------------------------

    def as_dict(self) -> Dict[str, Any]:
        """The values as a plain dict (energies in J and kWh, sources, estimate reasons; ``gco2e``, ``cost`` and
        ``currency`` when a grid intensity or price was set)."""
        out = {
            "name": self.name,
            "elapsed_s": self.elapsed_s,
            "start_s": self.start_s,
            "cpu_energy_j": self.cpu_energy_j,
            "cpu_energy_kwh": self.cpu_energy_kwh,
            "gpu_energy_j": self.gpu_energy_j,
            "gpu_energy_kwh": self.gpu_energy_kwh,
            "total_energy_j": self.total_energy_j,
            "sources": self.sources,
            "estimates": self.estimates,
            "coverage": self.coverage,
            "uncertainty_j": self.uncertainty_j,
            "states": self.states,
            "resolved": self.resolved,
        }
        if self.carbon is not None and self.carbon.is_set:
            out["total_energy_kwh"] = self.total_energy_kwh
            for key, value in (("gco2e", self.gco2e), ("cost", self.cost)):
                if value is not None:
                    out[key] = value
            if self.carbon.price_per_kwh is not None:
                out["currency"] = self.carbon.currency
        return out

    def csv_row(self) -> Dict[str, Any]:
        """The window's row as the CSV has it (column -> value)."""
        d = self._get()
        row: Dict[str, Any] = {"elapsed_s": d["elapsed_s"], "cpu_energy_kwh": d["energy_j"][0] / J_PER_KWH}
        for g, e in zip(self._devices.gpu_indices, d["energy_j"][1:]):
            row["gpu%d_energy_kwh" % g] = e / J_PER_KWH
        for label, src in zip(self._devices.labels, d["source"]):
            row["%s_energy_source" % label] = src
        row["window"] = self.name
        row["start_s"] = self.start_s
        for label, cov in zip(self._devices.labels, d["coverage"]):
            row["%s_coverage" % label] = cov
        for label, state in zip(self._devices.labels, d["state"]):
            row["%s_state" % label] = state
        return row

    def to_pandas(self):
        """A one-row pandas DataFrame with the CSV's columns (needs pandas)."""
        from .io import _pandas

        pd = _pandas("Measurement.to_pandas()")
        return pd.DataFrame([self.csv_row()], columns=self._devices.csv_columns())

    def __repr__(self) -> str:
        if not self.ready:
            return "<Measurement %r (resolving)>" % (self.name,)
        gpus = ", ".join("gpu%d=%.3f J" % (g, e) for g, e in self.gpu_energy_j.items())
        est = " estimates=%s" % sorted(self.estimates) if self.estimates else ""
        return "<Measurement %r elapsed=%.6f s cpu=%.3f J%s%s>" % (
            self.name,
            self.elapsed_s,
            self.cpu_energy_j,
            (" " + gpus) if gpus else "",
            est,
        )


class WindowContext:
    """What ``EnergyMeasurementTool.window(name)`` returns: a context manager measuring its body.

    After the ``with`` block, ``result`` holds the :class:`Measurement`.
    """

    __slots__ = ("_tool", "name", "_w", "result")

    def __init__(self, tool: "EnergyMeasurementTool", name: Optional[str]):
        self._tool = tool
        self.name = name
        self._w: Optional[int] = None
        self.result: Optional[Measurement] = None

    def __enter__(self) -> "WindowContext":
        if self._w is not None:
            raise StateError("window %r is already running: a WindowContext measures one block at a time" % self.name)
        self._w = self._tool._context().start(self.name)
        return self

    def __exit__(self, *exc: Any) -> bool:
        w, self._w = self._w, None
        self.result = self._tool._finish(self.name, w, "the end of window()")
        return False


_LAST = object()


class EnergyMeasurementTool:
    """Measures the energy and time of code snippets (the seed's ``EnergyMeasurementTool``).

    ``EnergyMeasurementTool(out_file, gpu_num=0)`` opens the sources at once: a GPU selection that names no
    existing GPU, or an ``out_file`` that cannot be created, raise here, before any work.

    * ``gpu_num``: a CUDA device number (default 0, as in the seed), a list of them, a GPU UUID, ``"all"``, or
      ``None`` for the CPU only.  Numbers are CUDA's (``CUDA_VISIBLE_DEVICES`` is honoured).  Asking for a GPU on
      a machine without an NVIDIA driver warns (:class:`~joulecap.errors.JoulecapWarning`) and measures the CPU.
    * ``out_file``: the CSV; one row per window, written and flushed as soon as the window's values are known
      (about 0.1 s after ``stop()``), not only at exit.  ``None``: no file.
    * ``interval_s``: the sampler's period for the cheap reads (default 0.01 s).
    * ``distributed``: under torch.distributed (None, the default: when the default process group is initialised
      as the tool is created; True: required; False: this process alone), the tool measures the job: every rank
      must create it and stop each window, ``stop()`` on rank 0 returns a
      :class:`~joulecap.distributed.JobMeasurement` with each host's CPU and each GPU counted once, rank 0 alone
      writes ``out_file`` (one row per window and device), and the default ``gpu_num`` is the rank's GPU
      (docs/distributed.md).
    * ``counter_interval_s``: read the GPU energy counter only once per this many seconds (default 0: after every
      100 ms counter step, which short windows need; 5-6% of one CPU core on an H100 with a window every 0.2 s).
      1 brings the sampler under 1% of a core; windows shorter than that become coarse and results wait up to
      that long.
    * ``carbon``: a grid intensity and price for the results' ``gco2e`` and ``cost``
      (``joulecap.carbon_settings(...)`` or a dict of its arguments); default None: ``JOULECAP_GRID_GCO2_PER_KWH``,
      ``JOULECAP_PRICE_PER_KWH``, ``JOULECAP_CURRENCY`` or ``JOULECAP_CARBON_CONFIG`` where set; False: none.
    * ``interval`` and ``counter_interval``, the old names, still work and warn (DeprecationWarning).

    Windows: ``start(name=None)`` / ``stop(name)``, ``with tool.window("epoch"):``, ``@tool.measure``.  They may
    be named, nested and overlapping.  ``stop()`` without a name stops the most recently started window.
    """

    @renamed_keywords(interval="interval_s", counter_interval="counter_interval_s")
    def __init__(
        self,
        out_file: OutFile = None,
        gpu_num: GpuSelection = _distributed.RANK_GPU,
        *,
        interval_s: Optional[float] = None,
        counter_interval_s: Optional[float] = None,
        carbon: CarbonArg = None,
        distributed: Optional[bool] = None,
    ):
        from .carbon import resolve

        self.out_file = _check_path(out_file)
        #: Grid intensity and price for the results' ``gco2e`` / ``cost`` (joulecap.carbon.Carbon).
        self.carbon = resolve(carbon)
        job = _distributed.job_info(distributed)
        self.gpu_num = gpu_num = _distributed.resolve_gpu_num(gpu_num, job)
        # In job mode rank 0 writes the job's CSV (distributed.py), not the library its own.
        kwargs: Dict[str, Any] = {"window_csv": self.out_file if job is None else None}
        if interval_s is not None:
            kwargs["interval"] = _check_interval(interval_s)
        if counter_interval_s is not None:
            kwargs["counter_interval"] = float(counter_interval_s)
        # Where a job name and joulecapd exist, the GPU energy measured goes to the job's totals (_jobs.py).
        self._job: Optional[_distributed.ToolJob] = None
        if job is None:
            self._ctx = _jobs.wrap(_open_context(gpu_num, **kwargs))
        else:
            self._job, ctx = _distributed.ToolJob.open(job, lambda: _open_context(gpu_num, **kwargs), self.out_file)
            self._ctx = _jobs.wrap(ctx) if self._job.owns_gpus else ctx
        self._devices = _Devices(self._ctx)
        self._open: Dict[Optional[str], int] = {}
        self.last_result: Optional[Measurement] = None
        _register(self)

    # -- information -------------------------------------------------------------------------------------------

    @property
    def devices(self) -> List[Dict[str, Any]]:
        """Device 0 is the CPU, then the measured GPUs in CUDA order (dicts with name, uuid, energy_source, ...,
        and ``state`` / ``state_note``: their health now; as at close() once the tool is closed)."""
        if not self._ctx.closed:
            self._devices.info = self._ctx.devices()
        return [dict(d) for d in self._devices.info]

    @property
    def gpus(self) -> List[int]:
        """CUDA numbers of the measured GPUs."""
        return list(self._devices.gpu_indices)

    @property
    def columns(self) -> List[str]:
        """The CSV's columns."""
        if self._job is not None:
            return list(_distributed.JOB_CSV_COLUMNS)
        return self._devices.csv_columns()

    @property
    def closed(self) -> bool:
        return self._ctx.closed

    def _context(self):
        return self._ctx

    # -- windows -----------------------------------------------------------------------------------------------

    def start(self, name: Optional[str] = None) -> None:
        """Starts measuring (a window called ``name``; None is the seed's unnamed window)."""
        if name is not None and type(name) is not str:
            name = str(name)
        if name in self._open:
            raise StateError(
                "window %s is already started: call stop(%s) before starting it again, or give this window another "
                "name, start(name=...)" % (_describe(name), "" if name is None else repr(name))
            )
        self._ctx.window_csv_status()
        self._open[name] = self._ctx.start(name)

    def stop(self, name: Any = _LAST) -> Measurement:
        """Stops a window and returns its :class:`Measurement`; its CSV row follows within ~0.1 s.

        ``stop()`` stops the most recently started window; ``stop(name)`` the window of that name.  If the CSV
        could not be written (a full disk), the error is raised here, by ``start()`` and by ``close()`` (the
        window's Measurement is still in ``last_result``; the file ends on its last whole row).
        """
        if name is _LAST:
            if not self._open:
                raise StateError("stop() called, but no window is running: call start() first")
            name, w = self._open.popitem()
        else:
            if name is not None and type(name) is not str:
                name = str(name)
            w = self._open.pop(name, None)
            if w is None:
                running = ", ".join(_describe(n) for n in self._open) or "none"
                raise StateError(
                    "window %s was not started (running: %s): call start(%s) first"
                    % (_describe(name), running, "" if name is None else repr(name))
                )
        m = self._finish(name, w, "stop()")
        self._ctx.window_csv_status()
        return m

    def _finish(self, name: Optional[str], w: int, what: str) -> Any:
        """The Measurement of a stopped window; in job mode gathered over the ranks (collective)."""
        m = self.last_result = Measurement(name, self._ctx.stop_pending(w), self._devices, self.carbon)
        if self._job is not None:
            m = self.last_result = self._job.finish(m, self._devices, what)
        return m

    @property
    def running(self) -> List[Optional[str]]:
        """Names of the windows started and not yet stopped (None for the unnamed one), oldest first."""
        return list(self._open)

    def window(self, name: Optional[str] = None) -> WindowContext:
        """``with tool.window("epoch") as w: ...`` measures the block; ``w.result`` is its Measurement."""
        return WindowContext(self, name)

    def measure(self, func: Optional[Callable] = None, *, name: Optional[str] = None) -> Callable:
        """Decorator: every call of the function is a window (named after the function unless ``name`` is given).

        ``@tool.measure``, ``@tool.measure()``, ``@tool.measure("forward")`` and ``@tool.measure(name="fwd")``
        all work.  The wrapper's ``last_result`` attribute holds the latest call's Measurement.
        """
        if isinstance(func, str):
            name, func = func, None

        def decorate(f: Callable) -> Callable:
            wname = name if name is not None else getattr(f, "__qualname__", getattr(f, "__name__", "function"))
            tool = self

            @functools.wraps(f)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                w = tool._ctx.start(wname)
                try:
                    return f(*args, **kwargs)
                finally:
                    wrapper.last_result = tool._finish(wname, w, "the call of %s" % wname)  # type: ignore[attr-defined]

            wrapper.last_result = None  # type: ignore[attr-defined]
            return wrapper

        return decorate(func) if func is not None else decorate

    # -- files -------------------------------------------------------------------------------------------------

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Waits until every stopped window's row is in the file; returns False if timeout ran out first."""
        if self._ctx.closed:
            return True
        return self._ctx.flush(timeout)

    def close(self) -> None:
        """Writes the rows of every stopped window and closes the file.  Windows still running are dropped.
        Raises the CSV's write error, if it had one (after closing)."""
        self._open.clear()
        if self._job is not None:
            self._job.close()
        if self._ctx.closed:
            return
        try:
            if self._ctx.window_csv is not None:
                self._ctx.flush(30.0)
        finally:
            self._ctx.close()

    def read(self):
        """The CSV as a pandas DataFrame (flushes first)."""
        from .io import read_csv

        if self.out_file is None:
            raise StateError("this tool writes no CSV (out_file=None)")
        self.flush()
        return read_csv(self.out_file)

    def __enter__(self) -> "EnergyMeasurementTool":
        return self

    def __exit__(self, *exc: Any) -> bool:
        self.close()
        return False

    def __repr__(self) -> str:
        return "<EnergyMeasurementTool out_file=%r gpus=%r%s>" % (
            self.out_file,
            self.gpus,
            " closed" if self.closed else "",
        )


def _describe(name: Optional[str]) -> str:
    return "(unnamed)" if name is None else repr(name)


def _check_interval(interval_s: Any) -> float:
    try:
        v = float(interval_s)
    except (TypeError, ValueError):
        raise InvalidArgument("interval_s=%r: pass a number of seconds, e.g. 1 or 0.1" % (interval_s,)) from None
    if isinstance(interval_s, bool) or not math.isfinite(v) or v <= 0:
        raise InvalidArgument("interval_s=%r: pass a number of seconds > 0, e.g. 1 or 0.1" % (interval_s,))
    return v


class AsynchronousMeasurementTool:
    """Writes a row of readings every ``interval_s`` seconds (the seed's ``AsynchronousMeasurementTool``).

    ``AsynchronousMeasurementTool(out_file, gpu_num=0)`` checks the GPU selection and creates the file at once.
    ``start(interval_s=1)`` starts the library's sampler thread, which writes and flushes one row per interval
    (a killed process loses at most the rows whose values were not known yet, about 0.1 s); ``stop()`` writes the
    last row and closes the file.  Neither call blocks the caller for longer than opening/closing the sources,
    and no Python thread or process is involved.

    Columns (one header row, units in the names): ``elapsed_s, cpu_energy_kwh, cpu_util_pct, cpu_temp_c``, then
    per GPU g (CUDA number) ``gpu{g}_energy_kwh, gpu{g}_util_pct, gpu{g}_temp_c, gpu{g}_power_w``, then
    ``cpu_energy_source`` and ``gpu{g}_energy_source``, then ``cpu_state`` and ``gpu{g}_state`` (``ok``,
    ``degraded``, ``stalled``, ``lost``: see :meth:`EnergyMeasurementTool.devices`).  Energies are since
    ``start()``, in kWh; GPU power is the instant power (W); empty cells where a value cannot be read or is not
    whole (a stalled or lost device).  A write error (a full disk) stops the file on its last whole row and is
    raised by the next ``latest()``, ``stop()`` or ``close()``.

    ``counter_interval_s`` (default 0): as for :class:`EnergyMeasurementTool`; with rows a second or more
    apart, ``counter_interval_s=1`` keeps the sampler under 1% of a CPU core.  (``counter_interval`` and
    ``start(interval=...)``, the old names, still work and warn.)

    ``distributed`` (None: automatic, True, False): under torch.distributed every rank must create the tool and
    call ``stop()``; rank 0 writes its own rows to ``out_file`` (the other ranks write none), and its ``stop()``
    returns a :class:`~joulecap.distributed.JobMeasurement` of the whole run with each host's CPU and each GPU
    counted once (docs/distributed.md).
    """

    @renamed_keywords(counter_interval="counter_interval_s")
    def __init__(self, out_file: OutFile, gpu_num: GpuSelection = _distributed.RANK_GPU, *,
                 counter_interval_s: Optional[float] = None, distributed: Optional[bool] = None):
        self.out_file = _check_path(out_file)
        self._counter_interval = 0.0 if counter_interval_s is None else float(counter_interval_s)
        if self.out_file is None:
            raise InvalidArgument("out_file is required: the asynchronous tool writes its readings to a CSV file")
        job = _distributed.job_info(distributed)
        self.gpu_num = gpu_num = _distributed.resolve_gpu_num(gpu_num, job)
        self._selection = _gpu_selection(gpu_num)
        self._job: Optional[_distributed.ToolJob] = None
        # In job mode only rank 0 writes the file (ranks may share one file system).
        self._writes = job is None or job.rank == 0

        def probe_and_create():
            # Check the selection now (the sources are opened again, with the interval, by start()).
            probe = _open_context(gpu_num, flags=_joulecap.NO_CPU)
            if self._writes:
                try:
                    _create_file(self.out_file)
                except BaseException:
                    probe.close()
                    raise
            return probe

        if job is None:
            probe = probe_and_create()
        else:
            self._job, probe = _distributed.ToolJob.open(job, probe_and_create, None)
        try:
            self._gpu_indices = [d["index"] for d in probe.devices()[1:]]
        finally:
            probe.close()
        self._ctx: Any = None
        self._used = False
        self.interval_s: Optional[float] = None
        self._lock = threading.Lock()
        _register(self)

    @property
    def gpus(self) -> List[int]:
        return list(self._gpu_indices)

    @property
    def running(self) -> bool:
        return self._ctx is not None

    @property
    def interval(self) -> Optional[float]:
        """Deprecated: ``interval_s``."""
        warn_renamed("AsynchronousMeasurementTool", "interval", "interval_s")
        return self.interval_s

    @renamed_keywords(interval="interval_s")
    def start(self, interval_s: float = 1) -> None:
        """Starts writing a row every ``interval_s`` seconds (from 0.001 s up)."""
        with self._lock:
            if self._ctx is not None:
                raise StateError("the asynchronous tool is already running: call stop() before start()")
            if self._used:
                raise StateError(
                    "this tool already wrote %s: create a new AsynchronousMeasurementTool (with another out_file "
                    "to keep the first file) to measure again" % self.out_file
                )
            v = _check_interval(interval_s)
            sample = v if v < 0.01 else 0.01
            self._ctx = _joulecap.Context(
                self._selection,
                interval=sample,
                csv_path=self.out_file if self._writes else None,
                csv_interval=v,
                counter_interval=self._counter_interval,
            )
            self.interval_s = v
            self._used = True

    def stop(self) -> int:
        """Writes the last row and closes the file; returns the rows written.  Raises the write error (a full
        disk, say) if rows could not be written: the file then ends on its last whole row."""
        with self._lock:
            ctx, self._ctx = self._ctx, None
        if ctx is None:
            raise StateError("stop() called, but the asynchronous tool is not running: call start(interval_s) first")
        if self._job is not None:
            return self._job.stop_series(ctx, self._writes, _close_sink, _Devices)
        return _close_sink(ctx)

    def latest(self) -> Dict[str, Dict[str, float]]:
        """The newest readings per device label (``{"cpu": {...}, "gpu0": {...}}``) while running.  Raises the
        CSV's write error as soon as there is one."""
        ctx = self._ctx
        if ctx is None:
            raise StateError("the asynchronous tool is not running: call start(interval_s) first")
        ctx.csv_status()
        labels = ["cpu"] + ["gpu%d" % g for g in self._gpu_indices]
        return {label: ctx.read_latest(i) for i, label in enumerate(labels)}

    def close(self) -> None:
        """Stops if running (raising the CSV's write error, as stop() does)."""
        with self._lock:
            ctx, self._ctx = self._ctx, None
        if ctx is not None:
            if self._writes:
                _close_sink(ctx)
            else:
                ctx.close()

    def read(self):
        """The CSV as a pandas DataFrame."""
        from .io import read_csv

        return read_csv(self.out_file)

    def __enter__(self) -> "AsynchronousMeasurementTool":
        return self

    def __exit__(self, *exc: Any) -> bool:
        self.close()
        return False

    def __repr__(self) -> str:
        return "<AsynchronousMeasurementTool out_file=%r gpus=%r%s>" % (
            self.out_file,
            self._gpu_indices,
            " running" if self.running else "",
        )


def _close_sink(ctx: Any) -> int:
    """Closes a context's sampler CSV, then the context, and raises the sink's error if it had one."""
    try:
        return ctx.csv_close()
    finally:
        ctx.close()


def __getattr__(name: str) -> Any:
    """``joulecap.measurement.LayerwiseMeasurementTool`` (the seed's place for it), imported on first use."""
    if name == "LayerwiseMeasurementTool":
        from .layerwise import LayerwiseMeasurementTool

        return LayerwiseMeasurementTool
    raise AttributeError("module %r has no attribute %r" % (__name__, name))

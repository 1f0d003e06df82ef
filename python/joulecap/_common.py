"""Private helpers shared by the measurement tools (``measurement.py``) and the layer-wise tool
(``layerwise/``): GPU selection, opening a context, output paths, closing tools at exit, device labels."""

from __future__ import annotations

import atexit
import os
import threading
import warnings
import weakref
from typing import Any, Dict, List, Optional

from . import _joulecap
from .errors import FileError, InvalidArgument, JoulecapWarning, PermissionDenied

#: Joules in a kilowatt-hour (the library's JC_J_PER_KWH): every kWh joulecap writes.
J_PER_KWH: float = _joulecap.J_PER_KWH

# Sources whose values are not a measurement of the energy itself.
_ESTIMATED_SOURCES = {"estimate": "estimated", "integrated-power": "integrated from power readings"}


def _source_notes(labels: List[str], sources: List[str], info: List[Dict[str, Any]]) -> Dict[str, str]:
    """Device label -> why its value is an estimate, or missing, given its energy source."""
    out = {}
    for label, src, i in zip(labels, sources, info):
        note = i.get("energy_note", "")
        if src in _ESTIMATED_SOURCES:
            out[label] = note or _ESTIMATED_SOURCES[src]
        elif src == "none":
            out[label] = "not measured: " + (note or "no energy source")
    return out


# --------------------------------------------------------------------------------------------------------------
# GPU selection


def _gpu_selection(gpu_num: Any) -> str:
    """Turns the seed's ``gpu_num`` (and its extensions) into the library's selection string.

    * an int: that CUDA device number (as ``torch.cuda`` numbers GPUs, honouring ``CUDA_VISIBLE_DEVICES``);
    * a list/tuple of ints or UUIDs: those GPUs;
    * a string: ``"all"``, ``"none"``, a UUID (or a unique prefix of one), ``"cuda:1"``, or ``"0,2"``;
    * a ``torch.device`` of type cuda;
    * ``None``: no GPU (the CPU only).
    """
    if gpu_num is None:
        return "none"
    if isinstance(gpu_num, bool):
        raise InvalidArgument("gpu_num=%r: pass a CUDA device number such as 0, a list, a UUID, 'all' or None" % gpu_num)
    if isinstance(gpu_num, int):
        if gpu_num < 0:
            raise InvalidArgument("gpu_num=%d: CUDA device numbers start at 0" % gpu_num)
        return str(gpu_num)
    if isinstance(gpu_num, str):
        s = gpu_num.strip()
        if not s:
            raise InvalidArgument("gpu_num is an empty string: pass 0, [0, 1], a GPU UUID, 'all' or None")
        parts = []
        for part in s.split(","):
            p = part.strip()
            if p.lower().startswith("cuda:"):
                p = p[5:]
            elif p.lower() == "cuda":
                p = "0"
            parts.append(p)
        return ",".join(parts)
    if type(gpu_num).__name__ == "device" and hasattr(gpu_num, "type") and hasattr(gpu_num, "index"):
        if gpu_num.type != "cuda":
            raise InvalidArgument("gpu_num=%r is not a CUDA device: pass None to measure the CPU only" % (gpu_num,))
        return str(gpu_num.index or 0)
    if isinstance(gpu_num, (list, tuple, set, frozenset, range)):
        items = list(gpu_num)
        if not items:
            raise InvalidArgument("gpu_num is an empty list: pass None to measure the CPU only, or 'all'")
        return ",".join(_gpu_selection(g) for g in items)
    raise InvalidArgument(
        "gpu_num=%r: pass a CUDA device number such as 0, a list such as [0, 1], a GPU UUID, 'all' or None "
        "(CPU only)" % (gpu_num,)
    )


def _names_specific_gpus(sel: str) -> bool:
    return sel.lower() not in ("all", "none")


def _open_context(gpu_num: Any, **kwargs: Any):
    """Opens a Context for gpu_num; warns when GPUs were asked for but NVML is not there."""
    sel = _gpu_selection(gpu_num)
    ctx = _joulecap.Context(sel, **kwargs)
    if _names_specific_gpus(sel) and ctx.device_count() == 1:
        drv = ctx.gpu_driver()
        if not drv["available"]:
            warnings.warn(
                "gpu_num=%r asks for a GPU, but joulecap cannot use NVML (%s): measuring the CPU only"
                % (gpu_num, drv["note"] or "no NVIDIA driver"),
                JoulecapWarning,
                stacklevel=3,
            )
    return ctx


def _check_path(out_file: Any) -> Optional[str]:
    if out_file is None:
        return None
    try:
        path = os.fspath(out_file)
    except TypeError:
        raise InvalidArgument("out_file=%r: pass a file path (str or os.PathLike), or None" % (out_file,)) from None
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not path:
        raise InvalidArgument("out_file is empty: pass a file path such as 'energy.csv'")
    return path


def _create_file(path: str) -> None:
    """Creates (truncates) the CSV file now, so that an unwritable path fails before any work."""
    try:
        with open(path, "w"):
            pass
    except PermissionError as e:
        raise PermissionDenied(
            "permission denied: cannot create the CSV file %s: %s; choose a writable path" % (path, e.strerror),
            detail=str(e),
        ) from None
    except OSError as e:
        raise FileError(
            "input/output error: cannot create the CSV file %s: %s; choose a writable path" % (path, e.strerror),
            detail=str(e),
        ) from None


# --------------------------------------------------------------------------------------------------------------
# Closing at exit


_live: "weakref.WeakSet[Any]" = weakref.WeakSet()
_live_lock = threading.Lock()


def _register(tool: Any) -> None:
    with _live_lock:
        _live.add(tool)


@atexit.register
def _close_all() -> None:
    with _live_lock:
        tools = list(_live)
    for t in tools:
        try:
            t.close()
        except Exception:  # pragma: no cover - nothing sensible to do at exit
            pass


# --------------------------------------------------------------------------------------------------------------
# Devices


class _Devices:
    """What a tool measures: labels, CUDA indices and the notes that explain estimates."""

    __slots__ = ("info", "labels", "gpu_indices", "epoch_ns")

    def __init__(self, ctx: Any):
        self.info: List[Dict[str, Any]] = ctx.devices()
        self.gpu_indices: List[int] = [d["index"] for d in self.info[1:]]
        self.labels: List[str] = ["cpu"] + ["gpu%d" % g for g in self.gpu_indices]
        self.epoch_ns: int = ctx.epoch_ns

    def csv_columns(self) -> List[str]:
        cols = ["elapsed_s", "cpu_energy_kwh"] + ["gpu%d_energy_kwh" % g for g in self.gpu_indices]
        cols += ["cpu_energy_source"] + ["gpu%d_energy_source" % g for g in self.gpu_indices]
        cols += ["window", "start_s"]
        cols += ["cpu_coverage"] + ["gpu%d_coverage" % g for g in self.gpu_indices]
        return cols + ["cpu_state"] + ["gpu%d_state" % g for g in self.gpu_indices]

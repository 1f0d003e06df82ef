"""Exceptions raised by joulecap.

Every failure of the C library (a ``jc_status`` other than ``JC_OK``) becomes one of the classes below.  Each
message says what went wrong and how to fix it (the library's detail text: the GPUs that exist, the path that
cannot be written, the permission that is missing, ...).  All of them derive from :class:`JoulecapError`, and
where a built-in exception fits they derive from it too, so ``except ValueError`` or ``except PermissionError``
work as expected.

========================  ==========================  ===========================================
class                      C status                    also a
========================  ==========================  ===========================================
InvalidArgument            JC_ERR_INVALID_ARGUMENT     ValueError
OutOfMemory                JC_ERR_NO_MEMORY            MemoryError
NotFound                   JC_ERR_NOT_FOUND            LookupError
GPUNotFound                JC_ERR_NOT_FOUND (GPUs)     LookupError (a NotFound)
NotSupported               JC_ERR_NOT_SUPPORTED
PermissionDenied           JC_ERR_NO_PERMISSION        PermissionError
FileError                  JC_ERR_IO                   OSError
NVMLError                  JC_ERR_NVML
StateError                 JC_ERR_STATE                RuntimeError
Timeout                    JC_ERR_TIMEOUT              TimeoutError
GPULost                    JC_ERR_GPU_LOST
SourceUnavailable          JC_ERR_UNAVAILABLE
Busy                       JC_ERR_BUSY
ThreadError                JC_ERR_THREAD               RuntimeError
========================  ==========================  ===========================================
"""

from __future__ import annotations

__all__ = [
    "JoulecapError",
    "InvalidArgument",
    "OutOfMemory",
    "NotFound",
    "GPUNotFound",
    "NotSupported",
    "PermissionDenied",
    "FileError",
    "NVMLError",
    "StateError",
    "Timeout",
    "GPULost",
    "SourceUnavailable",
    "Busy",
    "ThreadError",
    "JoulecapWarning",
]

_STATUS_NAMES = {
    0: "JC_OK",
    1: "JC_ERR_INVALID_ARGUMENT",
    2: "JC_ERR_NO_MEMORY",
    3: "JC_ERR_NOT_FOUND",
    4: "JC_ERR_NOT_SUPPORTED",
    5: "JC_ERR_NO_PERMISSION",
    6: "JC_ERR_IO",
    7: "JC_ERR_NVML",
    8: "JC_ERR_STATE",
    9: "JC_ERR_TIMEOUT",
    10: "JC_ERR_GPU_LOST",
    11: "JC_ERR_UNAVAILABLE",
    12: "JC_ERR_BUSY",
    13: "JC_ERR_THREAD",
}


class JoulecapError(Exception):
    """Base class of every joulecap error.

    Attributes: ``status`` (the C library's ``jc_status`` number, or None for errors raised by the Python
    layer), ``status_name`` (``"JC_ERR_..."``), ``detail`` (the message without the status text).
    """

    status: int | None = None

    def __init__(self, message: str = "", *, status: int | None = None, detail: str | None = None):
        super().__init__(message)
        if status is not None:
            self.status = status
        self.detail = message if detail is None else detail

    @property
    def status_name(self) -> str | None:
        return None if self.status is None else _STATUS_NAMES.get(self.status, "JC_ERR_UNKNOWN")

    def __str__(self) -> str:  # OSError and friends format their args otherwise
        return self.args[0] if self.args else ""


class InvalidArgument(JoulecapError, ValueError):
    """An argument is malformed or out of range (a bad interval, a bad gpu_num, ...)."""

    status = 1


class OutOfMemory(JoulecapError, MemoryError):
    status = 2


class NotFound(JoulecapError, LookupError):
    """No such GPU, window or file."""

    status = 3


class GPUNotFound(NotFound):
    """The GPU selection names a GPU that does not exist; the message lists the GPUs that do."""


class NotSupported(JoulecapError):
    status = 4


class PermissionDenied(JoulecapError, PermissionError):
    """The OS or the driver refused; the message says what gives the right."""

    status = 5


class FileError(JoulecapError, OSError):
    """A file could not be read or written (for example the CSV file)."""

    status = 6


class NVMLError(JoulecapError):
    status = 7


class StateError(JoulecapError, RuntimeError):
    """A call out of order: started twice, stopped what was not started, used after close()."""

    status = 8


class Timeout(JoulecapError, TimeoutError):
    status = 9


class GPULost(JoulecapError):
    status = 10


class SourceUnavailable(JoulecapError):
    """A source is absent (no NVML, no RAPL); the message says why."""

    status = 11


class Busy(JoulecapError):
    status = 12


class ThreadError(JoulecapError, RuntimeError):
    status = 13


class JoulecapWarning(UserWarning):
    """Warnings about what joulecap cannot measure (for example: GPU asked for, but no NVIDIA driver)."""


_BY_STATUS = {
    1: InvalidArgument,
    2: OutOfMemory,
    3: NotFound,
    4: NotSupported,
    5: PermissionDenied,
    6: FileError,
    7: NVMLError,
    8: StateError,
    9: Timeout,
    10: GPULost,
    11: SourceUnavailable,
    12: Busy,
    13: ThreadError,
}

_TEXT = {
    1: "invalid argument",
    2: "out of memory",
    3: "not found",
    4: "not supported",
    5: "permission denied",
    6: "input/output error",
    7: "NVML error",
    8: "call out of order",
    9: "timed out",
    10: "GPU lost",
    11: "source unavailable",
    12: "resource owned by another process",
    13: "cannot start thread",
}


def _from_status(status: int, detail: str, op: str) -> JoulecapError:
    """Builds the exception for a jc_status (called by the C extension)."""
    cls = _BY_STATUS.get(status, JoulecapError)
    if status == 3 and op == "open":
        cls = GPUNotFound
    if status == 8:
        # Messages of the Python layer and of the library already say what to do.
        return cls(detail or _TEXT[8], status=status, detail=detail)
    text = _TEXT.get(status, "error %d" % status)
    message = "%s: %s" % (text, detail) if detail else text
    return cls(message, status=status, detail=detail)

"""GPU power caps from Python: ``set_power_cap``, ``reset_power_cap``, ``get_power_cap``.

    from joulecap import set_power_cap, reset_power_cap, get_power_cap

    set_power_cap(0, 300)          # GPU 0 (CUDA numbering) to 300 W, until reset or the end of this process
    print(get_power_cap(0))        # PowerCap(gpu_num=0, limit_w=300.0, default_limit_w=700.0, ...)
    reset_power_cap(0)             # the limit in force before set_power_cap, and says so

Every change goes through a *cap session* of the C library (``jc_cap_session_*``, docs/caps.md), one per GPU,
opened lazily by the first change in this process and closed (every saved limit put back) by ``atexit``, by
``restore_power_caps()``, or when ``reset_power_cap`` has put the saved limit back.  Opening a session checks
the permission to set limits (root, or CAP_SYS_ADMIN in a container) before anything changes, and starts the
*guardian*: a fresh exec of the bundled ``joulecap`` binary (``joulecap/bin/joulecap``) tied to this process by
a socket, which puts the saved limits back when this process dies in any way (SIGKILL, a crash, SIGTERM
without a handler).  ``joulecap cap restore`` repairs what is left if the guardian died too.

Where ``joulecapd`` runs (its socket ``$JOULECAP_DAEMON_SOCKET``, default ``/run/joulecap/joulecapd.sock``,
exists), the session is a *lease* held by this process's connection to the daemon instead: no guardian, no root
needed for the users its config allows, and the daemon puts the limit back as soon as the connection ends.
``PowerCap.via`` and the log messages say which was used (docs/daemon.md).

The caps set here last as long as this process: this is what makes them safe to use in training scripts.  For
a cap that outlives the process use ``joulecap cap set`` (persistent, like ``nvidia-smi -pl``).

Errors are exceptions of :mod:`joulecap.errors`: a cap outside the GPU's range raises ``InvalidArgument``
stating the range; no permission raises ``PermissionDenied`` saying that root or CAP_SYS_ADMIN gives it; a GPU
whose cap another live process manages raises ``Busy`` naming that process's pid and command.
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import threading
import warnings
from dataclasses import dataclass
from typing import Any, Dict, Optional

from . import _joulecap, _paths
from ._deprecation import renamed_keywords
from ._types import OneGpu
from .errors import GPUNotFound, InvalidArgument, JoulecapWarning, NotFound, SourceUnavailable

__all__ = ["PowerCap", "CapReset", "set_power_cap", "reset_power_cap", "get_power_cap", "restore_power_caps",
           "current_gpu"]

_log = logging.getLogger("joulecap")


@dataclass(frozen=True)
class PowerCap:
    """A GPU's power limits (W) and who manages them, as read by :func:`get_power_cap`.

    ``limit_w`` is the requested limit (what a cap sets and what is saved), ``enforced_limit_w`` what the GPU
    applies (it can be lower); ``manager`` is ``"none"`` (joulecap has not changed it), ``"session"`` (a live
    process's session: ``owner_pid``), ``"persistent"`` (``joulecap cap set``), ``"stale"`` (a dead owner:
    ``joulecap cap restore`` repairs it) or ``"damaged"`` (a journal cut short or corrupt: ``joulecap cap
    restore`` says how to repair it); ``saved_limit_w`` is the limit that will be put back (NaN without a
    journal).
    """

    gpu_num: int
    limit_w: float
    default_limit_w: float
    min_limit_w: float
    max_limit_w: float
    enforced_limit_w: float
    manager: str
    saved_limit_w: float
    owner_pid: int
    owner_command: Optional[str]
    name: str
    uuid: str
    # Through joulecapd (a lease reads as "session"): the user holding the GPU or its persistent cap.
    owner_user: Optional[str] = None
    # Where cap calls go: "joulecapd (PATH)" or "direct NVML".
    via: str = ""

    @classmethod
    def _of(cls, d: Dict[str, Any]) -> "PowerCap":
        return cls(
            gpu_num=d["index"],
            limit_w=d["limit_w"],
            default_limit_w=d["default_limit_w"],
            min_limit_w=d["min_limit_w"],
            max_limit_w=d["max_limit_w"],
            enforced_limit_w=d["enforced_limit_w"],
            manager=d["manager"],
            saved_limit_w=d["saved_limit_w"],
            owner_pid=d["owner_pid"],
            owner_command=d["owner_command"],
            name=d["name"],
            uuid=d["uuid"],
            owner_user=d.get("owner_user"),
            via=_via(),
        )


@dataclass(frozen=True)
class CapReset:
    """What :func:`reset_power_cap` did: ``did`` is ``"saved"`` (the limit in force before joulecap changed it
    is back) or ``"default"`` (joulecap had not changed the limit: the default limit was set, until the end of
    this process); ``limit_w`` is the limit now in force; ``message`` says it in words."""

    gpu_num: int
    did: str
    limit_w: float
    message: str

    def __str__(self) -> str:
        return self.message


def _via() -> str:
    """Where cap calls go now: "joulecapd (PATH)" or "direct NVML"."""
    return _joulecap.cap_route()[1]


# --------------------------------------------------------------------------------------------------------------
# GPU selection


def current_gpu() -> int:
    """torch's current CUDA device (``torch.cuda.current_device()``), or 0 where torch is missing or sees no CUDA:
    what ``gpu_num="current"`` names."""
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.current_device() if torch.cuda.is_available() else 0


def _one_gpu(gpu_num: Any) -> str:
    """The library's selection string for exactly one GPU (CUDA numbering, a UUID, "cuda:1", a torch.device,
    "current")."""
    from .measurement import _gpu_selection

    if isinstance(gpu_num, str) and gpu_num.strip().lower() == "current":
        gpu_num = current_gpu()
    if gpu_num is None:
        raise InvalidArgument("gpu_num=None: power caps need a GPU; pass its CUDA number, such as 0")
    sel = _gpu_selection(gpu_num)
    if sel.lower() in ("all", "none") or "," in sel:
        raise InvalidArgument("gpu_num=%r: power caps take one GPU at a time; pass its CUDA number, such as 0" % (gpu_num,))
    return sel


def _info(gpu_num: OneGpu) -> Dict[str, Any]:
    try:
        return _joulecap.cap_get(_one_gpu(gpu_num))
    except NotFound as e:  # the selection names no GPU: the message lists those that exist
        raise GPUNotFound(str(e), status=e.status, detail=e.detail) from None


def _watts(cap: Any, what: str = "cap") -> float:
    if isinstance(cap, bool):
        raise InvalidArgument("%s=%r: give the power cap in watts, such as 300" % (what, cap))
    try:
        w = float(cap)
    except (TypeError, ValueError):
        raise InvalidArgument("%s=%r: give the power cap in watts, such as 300" % (what, cap)) from None
    if not math.isfinite(w) or w <= 0:
        raise InvalidArgument("%s=%r: give the power cap in watts, a positive number such as 300" % (what, cap))
    return w


def _check_range(info: Dict[str, Any], watts: float, what: str = "cap") -> None:
    lo, hi = info["min_limit_w"], info["max_limit_w"]
    if math.isfinite(lo) and math.isfinite(hi) and not (lo - 1e-3 <= watts <= hi + 1e-3):
        raise InvalidArgument(
            "%s %g W for GPU %d (%s, %s) is out of range: it accepts %g W to %g W"
            % (what, watts, info["index"], info["name"], info["uuid"], lo, hi)
        )


# --------------------------------------------------------------------------------------------------------------
# The process's cap sessions, one per GPU (keyed by UUID), opened lazily


class _Sessions:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.pid = os.getpid()
        self.by_uuid: Dict[str, Any] = {}

    def _check_fork(self) -> None:
        # A child made by fork() inherits no ownership (the C library refuses it there): start afresh, without
        # touching the parent's sessions (dropping them in the child only frees memory).
        if self.pid != os.getpid():
            self.by_uuid = {}
            self.pid = os.getpid()

    def get(self, uuid: str) -> Optional[Any]:
        with self.lock:
            self._check_fork()
            return self.by_uuid.get(uuid)

    def open(self, info: Dict[str, Any]) -> Any:
        """The session of this GPU, opened now when there is none (permission checked, guardian started)."""
        with self.lock:
            self._check_fork()
            s = self.by_uuid.get(info["uuid"])
            if s is None or s.closed:
                s = _joulecap.CapSession(info["uuid"], guardian_path=_paths.cli_binary())
                self.by_uuid[info["uuid"]] = s
                if s.note:
                    _log.warning("joulecap: %s", s.note)
            return s

    def close(self, uuid: str) -> None:
        with self.lock:
            self._check_fork()
            s = self.by_uuid.pop(uuid, None)
            if s is not None:
                s.close()

    def close_all(self) -> None:
        with self.lock:
            if self.pid != os.getpid():
                return
            first = None
            for uuid in list(self.by_uuid):
                try:
                    self.close(uuid)
                except Exception as e:  # noqa: BLE001 - close the others, then report the first
                    first = first or e
            if first is not None:
                raise first


_sessions = _Sessions()


@atexit.register
def _close_at_exit() -> None:
    try:
        _sessions.close_all()
    except Exception as e:  # noqa: BLE001 - at exit: say it, the guardian and `joulecap cap restore` remain
        _log.error("joulecap: putting back the power limits at exit failed: %s (run `joulecap cap restore`)", e)


def _guarded(info: Dict[str, Any], call: Any, *args: Any) -> Any:
    """A session call; when the session's guardian died (the session then put the saved limit back and refuses
    changes), the session is dropped so that the next call opens a new one with a new guardian."""
    try:
        return call(*args)
    except SourceUnavailable:
        _sessions.close(info["uuid"])
        raise


# --------------------------------------------------------------------------------------------------------------
# The seed's API


def get_power_cap(gpu_num: OneGpu = 0) -> PowerCap:
    """The power limits of one GPU (W) and who manages them.  Needs no permission.

    gpu_num: the CUDA device number (as torch.cuda numbers it), a UUID (or unique prefix), "cuda:1", a
    torch.device, or "current" (torch's current CUDA device).
    """
    return PowerCap._of(_info(gpu_num))


@renamed_keywords(cap="cap_w")
def set_power_cap(gpu_num: OneGpu, cap_w: float) -> PowerCap:
    """Sets the power cap of one GPU to ``cap_w`` watts until :func:`reset_power_cap`, :func:`restore_power_caps`
    or the end of this process (also if it is killed), and returns the limits now in force.

    Before the first change the limit in force is saved: that limit (not the default, not the maximum) is what
    comes back.  Raises ``InvalidArgument`` (stating the GPU's range) for a cap outside [min, max],
    ``PermissionDenied`` (root or CAP_SYS_ADMIN gives it) and ``Busy`` (another live process manages this GPU's
    cap, named in the message) before anything changes.  (``cap=``, the old keyword, still works and warns.)
    """
    watts = _watts(cap_w, "cap_w")
    info = _info(gpu_num)
    prior = _sessions.get(info["uuid"])
    opened = prior is None or prior.closed
    session = _sessions.open(info)
    try:
        _guarded(info, session.set, info["index"], watts)  # the library checks the GPU's range first
    except InvalidArgument:
        if opened:  # nothing was set: leave no session (journal, guardian) behind for a refused cap
            _sessions.close(info["uuid"])
        raise
    now = PowerCap._of(_joulecap.cap_get(info["uuid"]))
    _log.info("joulecap: GPU %d power cap set to %g W (was %g W), via %s", info["index"], now.limit_w, info["limit_w"],
              now.via)
    return now


def reset_power_cap(gpu_num: OneGpu = 0) -> CapReset:
    """Resets the power cap of one GPU and says which limit it put back.

    * joulecap changed the limit in this process: the limit saved before that change comes back
      (``did == "saved"``), and the GPU is released (its journal removed, its guardian stopped);
    * otherwise: the GPU's default limit is set (``did == "default"``).  Like every change made from Python it
      lasts until the end of this process, which puts back the limit found before.  A JoulecapWarning says so.

    The return value's ``message`` says what happened; it is also logged (logger "joulecap", INFO).
    """
    info = _info(gpu_num)
    session = _sessions.open(info)
    did = _guarded(info, session.reset, info["index"])
    now = _joulecap.cap_get(info["uuid"])
    gpu = "GPU %d (%s)" % (info["index"], info["uuid"])
    via = _via()
    if did == "saved":
        message = "%s: put back the limit in force before joulecap changed it: %g W, via %s" % (gpu, now["limit_w"], via)
        _sessions.close(info["uuid"])
        _log.info("joulecap: %s", message)
    elif abs(info["limit_w"] - now["limit_w"]) < 1e-3:
        message = "%s: joulecap had not changed this limit, which is the default limit, %g W, via %s" % (
            gpu, now["limit_w"], via)
        _sessions.close(info["uuid"])  # nothing to undo
        _log.info("joulecap: %s", message)
    else:
        message = (
            "%s: joulecap had not changed this limit, so the default limit %g W is set (it was %g W); the end of "
            "this process puts %g W back, via %s" % (gpu, now["limit_w"], info["limit_w"], info["limit_w"], via)
        )
        _log.info("joulecap: %s", message)
        warnings.warn(message, JoulecapWarning, stacklevel=2)
    return CapReset(gpu_num=info["index"], did=did, limit_w=now["limit_w"], message=message)


def restore_power_caps() -> None:
    """Puts back every limit this process changed (closes its cap sessions).  atexit does it too."""
    _sessions.close_all()

"""Job totals under torch.distributed: each device of the job counted once, gathered to rank 0.

When the default process group is initialised (``torch.distributed.init_process_group``) a tool created after
it is in *job mode* (``distributed=None``, the default; ``True`` requires it, ``False`` measures this process
alone).  In job mode:

* each rank measures the GPU it uses (``gpu_num`` left at its default: :func:`rank_gpu`) and its host's CPU;
* ``stop()`` is collective: every rank's window result goes to rank 0 by ``gather_object`` over the default
  group, and rank 0 counts each device once, keyed by (host, UUID) for GPUs and by host for the CPU, taking the
  value of the lowest rank that measured it (the next one where that value is NaN);
* rank 0's ``stop()`` returns a :class:`JobMeasurement`; the other ranks get their own local result;
* the window CSV is written by rank 0 alone, in a long format (:data:`JOB_CSV_COLUMNS`).

Host identity is the kernel's boot id (``/proc/sys/kernel/random/boot_id``: processes of one machine share it,
containers included, because they share one kernel and one CPU package), displayed as the host name.
``JOULECAP_TEST_HOST_ID`` replaces it for *reporting only*, so that a test can make ranks of one machine look
like two hosts; cap ownership (which rank may change a GPU's power limit) always uses the real boot id.

See docs/distributed.md.
"""

from __future__ import annotations

import csv
import math
import os
import socket
import sys
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .errors import InvalidArgument, JoulecapWarning, StateError

__all__ = ["JobMeasurement", "JOB_CSV_COLUMNS", "host_id", "boot_id", "launcher_ranks", "rank_gpu", "job_info"]

TEST_HOST_ID_ENV = "JOULECAP_TEST_HOST_ID"
BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"
J_PER_KWH = 3.6e6

# Long format: one row per window and distinct device.  Sum energy_j over a window's rows for the job's total.
JOB_CSV_COLUMNS = [
    "window_index", "window", "host", "host_id", "device", "uuid", "rank", "ranks", "elapsed_s", "job_elapsed_s",
    "energy_j", "energy_kwh", "energy_source", "coverage", "state",
]

# (rank variable, local rank variable, size variable, launcher name), first match wins.  torchrun first: under
# srun + torchrun its variables describe this Python process, Slurm's the task that started torchrun.
_LAUNCHERS = (
    ("RANK", "LOCAL_RANK", "WORLD_SIZE", "torchrun"),
    ("SLURM_PROCID", "SLURM_LOCALID", "SLURM_NTASKS", "slurm"),
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_SIZE", "mpi"),  # Open MPI
    ("PMI_RANK", "MPI_LOCALRANKID", "PMI_SIZE", "mpi"),  # MPICH / Intel MPI (Hydra)
    ("MV2_COMM_WORLD_RANK", "MV2_COMM_WORLD_LOCAL_RANK", "MV2_COMM_WORLD_SIZE", "mpi"),  # MVAPICH2
    ("PMIX_RANK", "PALS_LOCAL_RANKID", None, "mpi"),  # PMIx launchers, Cray PALS
)


# --------------------------------------------------------------------------------------------------------------
# Who and where


def boot_id() -> str:
    """The kernel's boot id: the same for every process (and container) on one machine until it reboots."""
    try:
        with open(BOOT_ID_PATH) as f:
            v = f.read().strip()
        if v:
            return v
    except OSError:
        pass
    # Not Linux /proc (or hidden): the host name, which is at least what users see.
    return "hostname:" + socket.gethostname()


_warned_override = False


def host_id() -> str:
    """The host identity used to count each host's CPU and each GPU once: the boot id, or the test-only
    ``JOULECAP_TEST_HOST_ID`` (which changes reporting only, never cap ownership)."""
    global _warned_override
    v = os.environ.get(TEST_HOST_ID_ENV, "").strip()
    if v:
        if not _warned_override:
            _warned_override = True
            warnings.warn(
                "%s=%r overrides the host identity of joulecap's job totals: for tests only; unset it in real jobs"
                % (TEST_HOST_ID_ENV, v),
                JoulecapWarning,
                stacklevel=3,
            )
        return "test:" + v
    return boot_id()


def launcher_ranks(env: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """What the launcher says about this process: ``{"launcher", "rank", "local_rank", "world_size"}`` (None
    where not known).  torchrun (``RANK``, ``LOCAL_RANK``), Slurm (``SLURM_PROCID``, ``SLURM_LOCALID``) and MPI
    launchers (Open MPI, MPICH/Hydra, MVAPICH2, PMIx, Cray PALS) are recognised."""
    env = os.environ if env is None else env
    out: Dict[str, Any] = {"launcher": None, "rank": None, "local_rank": None, "world_size": None}
    for rank_v, local_v, size_v, name in _LAUNCHERS:
        if rank_v in env or local_v in env:
            out["launcher"] = name
            out["rank"] = _int(env.get(rank_v))
            out["local_rank"] = _int(env.get(local_v))
            out["world_size"] = _int(env.get(size_v)) if size_v else None
            break
    return out


def _int(v: Optional[str]) -> Optional[int]:
    try:
        return int(v) if v is not None and v.strip() != "" else None
    except ValueError:
        return None


def _dist() -> Any:
    """``torch.distributed`` when the default process group is initialised, else None.  torch is not imported
    here: if the program has not imported it, no process group can exist."""
    mod = sys.modules.get("torch.distributed")
    if mod is None:
        return None
    try:
        if mod.is_available() and mod.is_initialized():
            return mod
    except Exception:  # pragma: no cover - a broken torch: no job mode
        return None
    return None


def rank_gpu(visible_gpus: Optional[int] = None) -> int:
    """The CUDA device number this rank uses: ``torch.cuda.current_device()`` once CUDA is initialised in this
    process (after ``torch.cuda.set_device(local_rank)``, say); else the launcher's local rank modulo the
    number of visible GPUs (``CUDA_VISIBLE_DEVICES`` honoured, as joulecap numbers GPUs as CUDA does); else 0."""
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            if torch.cuda.is_available() and torch.cuda.is_initialized():
                return int(torch.cuda.current_device())
        except Exception:  # pragma: no cover - no usable CUDA in torch
            pass
    local = launcher_ranks()["local_rank"]
    if local is None:
        return 0
    n = _visible_gpus() if visible_gpus is None else visible_gpus
    return local % n if n > 0 else 0


def _visible_gpus() -> int:
    from . import _joulecap

    ctx = _joulecap.Context("all", flags=_joulecap.NO_CPU)
    try:
        return ctx.device_count() - 1
    finally:
        ctx.close()


# --------------------------------------------------------------------------------------------------------------
# The job


class Job:
    """This process's place in the job: rank and world size of the default group, host identity."""

    def __init__(self, dist: Any):
        self.dist = dist
        self.rank: int = dist.get_rank()
        self.world_size: int = dist.get_world_size()
        self.backend: str = str(dist.get_backend())
        self.host_id = host_id()
        self.hostname = socket.gethostname()
        self.windows = 0

    def gather(self, payload: Dict[str, Any], what: str) -> Optional[List[Dict[str, Any]]]:
        """Every rank's payload on rank 0 (None elsewhere).  Collective: every rank must call it."""
        out: Optional[List[Any]] = [None] * self.world_size if self.rank == 0 else None
        try:
            self.dist.gather_object(payload, out, dst=0)
        except Exception as e:
            raise StateError(
                "%s on rank %d: gathering the job's result over torch.distributed failed (%s: %s). In job mode "
                "every rank must call it, equally often (pass distributed=False to measure each process alone); "
                "the process group's timeout (init_process_group(timeout=...)) bounds the wait"
                % (what, self.rank, type(e).__name__, e)
            ) from e
        return out

    def broadcast(self, obj: Any, what: str) -> Any:
        """Rank 0's ``obj`` on every rank (the others pass anything, None say).  Collective: every rank must call
        it."""
        box = [obj if self.rank == 0 else None]
        try:
            self.dist.broadcast_object_list(box, src=0)
        except Exception as e:
            raise StateError(
                "%s on rank %d: broadcasting the job's result over torch.distributed failed (%s: %s). In job mode "
                "every rank must call it, equally often (pass distributed=False to measure each process alone); "
                "the process group's timeout (init_process_group(timeout=...)) bounds the wait"
                % (what, self.rank, type(e).__name__, e)
            ) from e
        return box[0]

    def barrier(self) -> None:
        self.dist.barrier()


def job_info(distributed: Any) -> Optional[Job]:
    """The Job for a tool's ``distributed`` argument: None (auto: job mode when the default group is
    initialised), True (required) or False (this process alone)."""
    if distributed is not None and not isinstance(distributed, bool):
        raise InvalidArgument("distributed=%r: pass None (automatic), True or False" % (distributed,))
    if distributed is False:
        return None
    dist = _dist()
    if dist is None:
        if distributed:
            raise StateError(
                "distributed=True, but torch.distributed is not initialised: call "
                "torch.distributed.init_process_group() before creating the tool"
            )
        lr = launcher_ranks()
        if lr["world_size"] is not None and lr["world_size"] > 1:
            _warn_once(
                "this process is rank %s of %d (%s), but torch.distributed is not initialised when the joulecap tool "
                "is created: it measures this process alone, and every rank counts what it sees. Create the tool "
                "after init_process_group() for job totals, or pass distributed=False to silence this"
                % (lr["rank"], lr["world_size"], lr["launcher"])
            )
        return None
    return Job(dist)


_warned: set = set()


def _warn_once(text: str) -> None:
    if text not in _warned:
        _warned.add(text)
        warnings.warn(text, JoulecapWarning, stacklevel=4)


# --------------------------------------------------------------------------------------------------------------
# Payloads and the job result


def payload(job: Job, name: Optional[str], info: Sequence[Dict[str, Any]], d: Optional[Dict[str, Any]],
            labels: Sequence[str]) -> Dict[str, Any]:
    """What one rank sends for one window: who it is and what each of its devices measured (d: a result dict
    of the library, or None when the values did not arrive)."""
    devices = []
    for i, (dev, label) in enumerate(zip(info, labels)):
        if d is None:
            e, src, cov, unc, state = math.nan, "none", 0.0, math.nan, "lost"
        else:
            e, src, cov, unc, state = (d["energy_j"][i], d["source"][i], d["coverage"][i], d["uncertainty_j"][i],
                                       d["state"][i])
        devices.append({
            "kind": dev["kind"], "label": label, "uuid": dev.get("uuid", ""), "name": dev.get("name", ""),
            "index": dev.get("index", -1), "energy_j": float(e), "source": src, "coverage": float(cov),
            "uncertainty_j": float(unc), "state": state,
        })
    return {
        "rank": job.rank, "host_id": job.host_id, "hostname": job.hostname, "name": name,
        "elapsed_s": math.nan if d is None else float(d["elapsed_s"]),
        "resolved": bool(d is not None and d["resolved"]), "devices": devices,
    }


class JobMeasurement:
    """The job's result of one window, on rank 0: each device of the job counted once.

    * ``total_energy_j``, ``cpu_energy_j`` (every host's CPU once), ``total_gpu_energy_j`` (every GPU once);
    * ``hosts``: host label -> ``{"cpu_energy_j", "gpu_energy_j": {uuid: J}, "total_energy_j", "host_id",
      "ranks"}``; ``gpu_energy_j``: ``{(host, uuid): J}``;
    * ``devices``: one dict per distinct device (host, host_id, kind, label, uuid, rank that measured it, ranks
      that use it, energy_j, source, coverage, state, elapsed_s of that rank's window);
    * ``elapsed_s``: the longest of the ranks' windows (``rank_elapsed_s`` has each rank's);
    * ``ranks``: what each rank sent; ``local``: rank 0's own :class:`~joulecap.Measurement`.

    Each device's energy is over the window of the rank that measured it (its lowest rank): ranks' windows of
    one collective ``stop()`` differ by how far the ranks are apart, which synchronous data-parallel training
    keeps small.
    """

    def __init__(self, name: Optional[str], ranks: List[Dict[str, Any]], local: Any = None):
        self.name = name
        self.ranks = ranks
        self.local = local
        self.rows: Optional[int] = None  # the asynchronous tool: rows rank 0 wrote
        self._host_labels = _host_labels(ranks)
        self.devices = _dedup(ranks, self._host_labels)

    @property
    def elapsed_s(self) -> float:
        vals = [r["elapsed_s"] for r in self.ranks if not math.isnan(r["elapsed_s"])]
        return max(vals) if vals else math.nan

    @property
    def rank_elapsed_s(self) -> Dict[int, float]:
        return {r["rank"]: r["elapsed_s"] for r in self.ranks}

    @property
    def resolved(self) -> bool:
        return all(r["resolved"] for r in self.ranks)

    @property
    def cpu_energy_j(self) -> float:
        return float(sum(d["energy_j"] for d in self.devices if d["kind"] == "cpu"))

    @property
    def cpu_energy_kwh(self) -> float:
        return self.cpu_energy_j / J_PER_KWH

    @property
    def gpu_energy_j(self) -> Dict[Tuple[str, str], float]:
        return {(d["host"], d["uuid"]): d["energy_j"] for d in self.devices if d["kind"] == "gpu"}

    @property
    def total_gpu_energy_j(self) -> float:
        return float(sum(d["energy_j"] for d in self.devices if d["kind"] == "gpu"))

    @property
    def total_energy_j(self) -> float:
        """CPUs plus GPUs; NaN when a host's CPU energy is unknown (as Measurement.total_energy_j)."""
        return self.cpu_energy_j + self.total_gpu_energy_j

    @property
    def total_energy_kwh(self) -> float:
        return self.total_energy_j / J_PER_KWH

    @property
    def hosts(self) -> Dict[str, Dict[str, Any]]:
        out: Dict[str, Dict[str, Any]] = {}
        for hid, label in self._host_labels.items():
            out[label] = {"host_id": hid, "cpu_energy_j": math.nan, "gpu_energy_j": {},
                          "ranks": sorted(r["rank"] for r in self.ranks if r["host_id"] == hid)}
        for d in self.devices:
            h = out[d["host"]]
            if d["kind"] == "cpu":
                h["cpu_energy_j"] = d["energy_j"]
            else:
                h["gpu_energy_j"][d["uuid"]] = d["energy_j"]
        for h in out.values():
            h["total_energy_j"] = h["cpu_energy_j"] + float(sum(h["gpu_energy_j"].values()))
        return out

    @property
    def estimates(self) -> Dict[str, str]:
        """Device (``host/label``) -> why its value is an estimate, partial or missing."""
        out = {}
        for d in self.devices:
            key = "%s/%s" % (d["host"], d["label"])
            if d["source"] in ("estimate", "integrated-power"):
                out[key] = d["source"]
            elif d["source"] == "none" or math.isnan(d["energy_j"]):
                out[key] = "not measured"
            elif d["coverage"] < 1:
                out[key] = "partial: covers %.1f%% of the window (%s)" % (100 * d["coverage"], d["state"])
        return out

    @property
    def is_estimate(self) -> bool:
        return bool(self.estimates)

    def csv_rows(self, window_index: int) -> List[Dict[str, Any]]:
        job_elapsed = self.elapsed_s
        rows = []
        for d in self.devices:
            rows.append({
                "window_index": window_index, "window": "" if self.name is None else self.name, "host": d["host"],
                "host_id": d["host_id"], "device": d["label"], "uuid": d["uuid"], "rank": d["rank"],
                "ranks": " ".join(str(r) for r in d["ranks"]), "elapsed_s": _num(d["elapsed_s"]),
                "job_elapsed_s": _num(job_elapsed), "energy_j": _num(d["energy_j"]),
                "energy_kwh": _num(d["energy_j"] / J_PER_KWH), "energy_source": d["source"],
                "coverage": _num(d["coverage"]), "state": d["state"],
            })
        return rows

    def as_dict(self) -> Dict[str, Any]:
        return {
            "name": self.name, "elapsed_s": self.elapsed_s, "rank_elapsed_s": self.rank_elapsed_s,
            "cpu_energy_j": self.cpu_energy_j, "total_gpu_energy_j": self.total_gpu_energy_j,
            "total_energy_j": self.total_energy_j, "hosts": self.hosts, "devices": [dict(d) for d in self.devices],
            "estimates": self.estimates, "resolved": self.resolved, "ranks": [dict(r) for r in self.ranks],
        }

    def __repr__(self) -> str:
        return "<JobMeasurement %r ranks=%d hosts=%d gpus=%d elapsed=%.6f s cpu=%.3f J gpu=%.3f J>" % (
            self.name, len(self.ranks), len(self._host_labels),
            sum(1 for d in self.devices if d["kind"] == "gpu"), self.elapsed_s, self.cpu_energy_j,
            self.total_gpu_energy_j)


def _num(v: float) -> Any:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else repr(float(v))


def _host_labels(ranks: List[Dict[str, Any]]) -> Dict[str, str]:
    """host_id -> label: the host name, with a short id where two hosts of the job share a name."""
    names: Dict[str, str] = {}
    for r in sorted(ranks, key=lambda r: r["rank"]):
        names.setdefault(r["host_id"], r["hostname"])
    count: Dict[str, int] = {}
    for n in names.values():
        count[n] = count.get(n, 0) + 1
    out = {}
    for hid, n in names.items():
        out[hid] = n if count[n] == 1 else "%s:%s" % (n, hid.split(":")[-1][:8])
    return out


def _dedup(ranks: List[Dict[str, Any]], labels: Dict[str, str]) -> List[Dict[str, Any]]:
    """One entry per distinct device: a host's CPU keyed by host, a GPU by (host, UUID); the value of the lowest
    rank that measured it, or of the next one where that value is NaN."""
    groups: Dict[Tuple[str, str], List[Tuple[Dict[str, Any], Dict[str, Any]]]] = {}
    order: List[Tuple[str, str]] = []
    for r in sorted(ranks, key=lambda r: r["rank"]):
        for dev in r["devices"]:
            key = (r["host_id"], "cpu" if dev["kind"] == "cpu" else dev["uuid"] or "rank%d/%s" % (r["rank"], dev["label"]))
            if key not in groups:
                groups[key] = []
                order.append(key)
            groups[key].append((r, dev))
    out = []
    for key in order:
        members = groups[key]
        r, dev = next(((r, d) for r, d in members if not math.isnan(d["energy_j"])), members[0])
        out.append({
            "host": labels[key[0]], "host_id": key[0], "kind": dev["kind"], "label": dev["label"],
            "uuid": dev["uuid"], "name": dev["name"], "rank": r["rank"], "ranks": [m[0]["rank"] for m in members],
            "energy_j": dev["energy_j"], "source": dev["source"], "coverage": dev["coverage"],
            "uncertainty_j": dev["uncertainty_j"], "state": dev["state"], "elapsed_s": r["elapsed_s"],
        })
    # Hosts in rank order, the CPU first on each.
    host_order = {h: i for i, h in enumerate(dict.fromkeys(k[0] for k in order))}
    out.sort(key=lambda d: (host_order[d["host_id"]], d["kind"] != "cpu"))
    return out


# --------------------------------------------------------------------------------------------------------------
# The job CSV


class JobCsv:
    """Rank 0's window CSV in job mode: a header, then one row per window and distinct device."""

    def __init__(self, path: str):
        from ._common import _create_file

        _create_file(path)
        self.path = path
        self._f: Any = open(path, "w", newline="")
        self._w = csv.DictWriter(self._f, fieldnames=JOB_CSV_COLUMNS, lineterminator="\n")
        self._w.writeheader()
        self._f.flush()

    def write(self, m: JobMeasurement, window_index: int) -> None:
        if self._f is None:
            return
        self._w.writerows(m.csv_rows(window_index))
        self._f.flush()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


# --------------------------------------------------------------------------------------------------------------
# Tool side: what EnergyMeasurementTool and AsynchronousMeasurementTool call


class _RankGpu:
    """The default of the tools' ``gpu_num``: 0, or under torch.distributed the GPU this rank uses."""

    def __repr__(self) -> str:
        return "0"


RANK_GPU: Any = _RankGpu()


def resolve_gpu_num(gpu_num: Any, job: Optional[Job]) -> Any:
    """``gpu_num`` as given, or for the default: :func:`rank_gpu` in job mode, else 0."""
    if gpu_num is RANK_GPU:
        return rank_gpu() if job is not None else 0
    return gpu_num


class ToolJob:
    """A tool's job mode: the Job, who else measures its GPUs, and on rank 0 the job CSV."""

    def __init__(self, job: Job):
        self.job = job
        self.csv: Optional[JobCsv] = None
        self.windows = 0
        self.last: Optional[JobMeasurement] = None
        self.peers: List[Dict[str, Any]] = []
        self.owns_gpus = True

    @classmethod
    def open(cls, job: Job, opener: Any, out_file: Optional[str], job_csv: bool = True) -> Tuple["ToolJob", Any]:
        """Collective: opens the tool's context with ``opener()`` (and on rank 0 the job CSV), then tells every
        rank what the others measure.  If any rank fails, every rank raises (none is left waiting in a later
        collective for a rank that gave up)."""
        self = cls(job)
        ctx, err = None, None
        uuids: List[str] = []
        try:
            ctx = opener()
            uuids = [d["uuid"] for d in ctx.devices()[1:]]
            if out_file is not None and job_csv and job.rank == 0:
                self.csv = JobCsv(out_file)
        except BaseException as e:  # noqa: BLE001 - every rank must learn of it
            err = e
        mine = {"rank": job.rank, "boot_id": boot_id(), "host_id": job.host_id, "uuids": uuids,
                "error": None if err is None else "%s: %s" % (type(err).__name__, err)}
        out: List[Any] = [None] * job.world_size
        try:
            job.dist.all_gather_object(out, mine)
        except Exception as e:
            if err is None:
                err = StateError("creating the tool on rank %d: torch.distributed all_gather failed (%s: %s); in job "
                                 "mode every rank must create the tool" % (job.rank, type(e).__name__, e))
            out = [mine]
        failed = [p for p in out if p["error"]]
        if failed and err is None:
            err = StateError("the joulecap tool failed on rank %d (%s): every rank stops, as job mode needs them all"
                             % (failed[0]["rank"], failed[0]["error"]))
        if err is not None:
            if self.csv is not None:
                self.csv.close()
            if ctx is not None:
                ctx.close()
            raise err
        self.peers = out
        # The lowest rank on a GPU (real machine, UUID) is the one that reports it to joulecapd: the daemon adds
        # what every process sends.
        for u in uuids:
            first = min(p["rank"] for p in out if p["boot_id"] == mine["boot_id"] and u in p["uuids"])
            if first != job.rank:
                self.owns_gpus = False
        return self, ctx

    @property
    def rank(self) -> int:
        return self.job.rank

    def finish(self, m: Any, devices: Any, what: str, timeout: float = 10.0) -> Any:
        """Collective: waits for this rank's Measurement ``m``, gathers every rank's to rank 0, writes the job
        CSV there.  Returns the JobMeasurement on rank 0, ``m`` elsewhere."""
        d = m._get() if m.wait(timeout) else None
        return self.finish_result(m.name, d, devices, what, local=m)

    def finish_result(self, name: Optional[str], d: Optional[Dict[str, Any]], devices: Any, what: str,
                      local: Any = None) -> Any:
        """As finish(), for a result dict the caller already has (the asynchronous tool's whole run)."""
        got = self.job.gather(payload(self.job, name, devices.info, d, devices.labels), what)
        self.windows += 1
        if got is None:
            return local
        jm = JobMeasurement(name, got, local=local)
        self.last = jm
        if self.csv is not None:
            self.csv.write(jm, self.windows)
        return jm

    def stop_series(self, ctx: Any, writes: bool, close_sink: Any, devices_of: Any) -> Any:
        """The asynchronous tool's stop() in job mode (collective): this rank's energy from start to now, its
        sink closed, every rank's energy gathered to rank 0.  Rank 0 gets a JobMeasurement (``rows``: the rows
        it wrote), the others the rows they wrote (0).  A sink's write error is raised after the gather."""
        err: Optional[BaseException] = None
        rows = 0
        d = None
        devices = None
        try:
            from . import _joulecap

            devices = devices_of(ctx)
            d = ctx.energy_between(ctx.epoch_ns, _joulecap.now_ns())
        except Exception as e:  # noqa: BLE001 - the gather must still happen
            err = e
        try:
            rows = close_sink(ctx) if writes else 0
        except BaseException as e:  # noqa: BLE001
            err = err or e
        finally:
            if not ctx.closed:
                ctx.close()
        if devices is None:
            raise err  # type: ignore[misc]  # pragma: no cover - devices() of an open context does not fail
        jm = self.finish_result(None, d, devices, "stop()")
        if err is not None:
            raise err
        if jm is None:
            return rows
        jm.rows = rows
        return jm

    def close(self) -> None:
        if self.csv is not None:
            self.csv.close()

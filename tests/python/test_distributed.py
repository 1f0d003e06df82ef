"""Job totals under torch.distributed (docs/distributed.md): 4 gloo ranks on 2 fake GPUs of one machine, and the
same ranks as two hosts through the test-only JOULECAP_TEST_HOST_ID.  Totals count each distinct device once."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from joulecap import distributed as jd
from joulecap.errors import StateError

HERE = Path(__file__).resolve().parent
WORKER = HERE / "_dist_worker.py"
POWER_W = {"GPU-11111111-2222-4333-8444-555555555555": 300.0, "GPU-aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee": 150.0}


def _launch(env, tmp_path, world, script, extra=(), per_rank_env=None, timeout=120):
    procs = []
    for r in range(world):
        e = dict(env)
        e.pop("JOULECAP_TEST_HOST_ID", None)
        e.update({"LOCAL_RANK": str(r), "RANK": str(r), "WORLD_SIZE": str(world), "PYTHONWARNINGS": "ignore"})
        if per_rank_env:
            e.update(per_rank_env(r))
        log = open(tmp_path / ("log%d.txt" % r), "w")
        procs.append(subprocess.Popen(
            [sys.executable, str(script), str(r), str(world), str(tmp_path / "init"), str(tmp_path)] + list(extra),
            env=e, stdout=log, stderr=subprocess.STDOUT))
    try:
        codes = [p.wait(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    logs = {r: (tmp_path / ("log%d.txt" % r)).read_text() for r in range(world)}
    return codes, logs


@pytest.fixture(scope="module")
def job_run(tmp_path_factory):
    """One run of 4 ranks; every test below reads its files."""
    pytest.importorskip("torch.distributed")
    tmp = tmp_path_factory.mktemp("dist")
    env = _fake_env(tmp)
    codes, logs = _launch(env, tmp, 4, WORKER, extra=["2"])
    assert codes == [0, 0, 0, 0], logs
    return tmp, [json.loads((tmp / ("rank%d.json" % r)).read_text()) for r in range(4)]


def _fake_env(tmp):
    from conftest import SCENARIOS, SYSFS, PROC, fake_nvml_library

    env = dict(os.environ)
    env.update({
        "JOULECAP_NVML_LIBRARY": fake_nvml_library(), "JOULECAP_FAKE_NVML_SCENARIO": str(SCENARIOS / "two-gpus.scn"),
        "JOULECAP_SYSFS_ROOT": str(SYSFS / "norapl"), "JOULECAP_PROC_ROOT": str(PROC / "xeon-8480"),
        "TMPDIR": str(tmp),
    })
    for k in ("JOULECAP_FAKE", "JOULECAP_FAKE_NVML_STATE", "CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER",
              "JOULECAP_DAEMON_SOCKET", "SLURM_PROCID", "SLURM_LOCALID", "OMPI_COMM_WORLD_RANK"):
        env.pop(k, None)
    return env


def _check_power(dev):
    """A GPU's energy over the window of the rank that measured it matches the fake GPU's constant power."""
    w = POWER_W[dev["uuid"]]
    assert dev["energy_j"] == pytest.approx(w * dev["elapsed_s"], rel=0.1), dev


def test_each_rank_measures_its_gpu(job_run):
    _, ranks = job_run
    # LOCAL_RANK modulo the 2 visible GPUs: two ranks on each GPU.
    assert [r["gpus"] for r in ranks] == [[0], [1], [0], [1]]
    assert ranks[0]["columns"] == jd.JOB_CSV_COLUMNS


def test_one_host_counts_each_gpu_and_the_cpu_once(job_run):
    _, ranks = job_run
    for r in ranks[1:]:
        assert [w["type"] for w in r["one_host"]] == ["local"] * 3  # the other ranks keep their own result
    for job in ranks[0]["one_host"]:
        assert job["type"] == "job"
        devs = job["devices"]
        assert [(d["kind"], d["uuid"], d["ranks"]) for d in devs] == [
            ("cpu", "", [0, 1, 2, 3]),
            ("gpu", "GPU-11111111-2222-4333-8444-555555555555", [0, 2]),
            ("gpu", "GPU-aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee", [1, 3]),
        ]
        # Each device's value is its lowest rank's own measurement.
        sent = {p["rank"]: p for p in job["ranks"]}
        for d in devs:
            own = [x for x in sent[d["rank"]]["devices"] if x["kind"] == d["kind"] and x["uuid"] == d["uuid"]]
            assert d["rank"] == min(d["ranks"]) and d["energy_j"] == own[0]["energy_j"]
            if d["kind"] == "gpu":
                _check_power(d)
        gpu_sum = sum(d["energy_j"] for d in devs if d["kind"] == "gpu")
        assert job["total_gpu_energy_j"] == pytest.approx(gpu_sum)
        assert job["cpu_energy_j"] == pytest.approx(devs[0]["energy_j"])
        assert job["total_energy_j"] == pytest.approx(gpu_sum + devs[0]["energy_j"])
        # ... not the sum over the ranks, which counts each GPU twice and the CPU four times.
        per_rank_gpu = sum(x["energy_j"] for p in job["ranks"] for x in p["devices"] if x["kind"] == "gpu")
        assert per_rank_gpu > 1.4 * job["total_gpu_energy_j"]
        assert list(job["hosts"]) == [devs[0]["host"]]
        assert job["elapsed_s"] == max(job["rank_elapsed_s"].values())


def test_two_hosts_by_the_test_override(job_run):
    _, ranks = job_run
    job = ranks[0]["two_hosts"]
    assert job["type"] == "job"
    devs = job["devices"]
    # Same fake UUIDs on both "hosts": a GPU is (host, UUID), so 4 GPUs, and 2 CPUs (one per host, not per rank).
    assert [(d["host_id"], d["kind"], d["ranks"]) for d in devs] == [
        ("test:host0", "cpu", [0, 1]), ("test:host0", "gpu", [0]), ("test:host0", "gpu", [1]),
        ("test:host1", "cpu", [2, 3]), ("test:host1", "gpu", [2]), ("test:host1", "gpu", [3]),
    ]
    for d in devs:
        if d["kind"] == "gpu":
            _check_power(d)
    hosts = job["hosts"]
    assert len(hosts) == 2 and [h["ranks"] for h in hosts.values()] == [[0, 1], [2, 3]]
    assert job["cpu_energy_j"] == pytest.approx(sum(d["energy_j"] for d in devs if d["kind"] == "cpu"))
    assert job["total_energy_j"] == pytest.approx(sum(d["energy_j"] for d in devs))
    assert job["total_energy_j"] == pytest.approx(sum(h["total_energy_j"] for h in hosts.values()))


def test_async_tool_job_totals(job_run):
    tmp, ranks = job_run
    job = ranks[0]["async"]
    assert job["type"] == "job" and job["rows"] > 0
    assert [r["async"] for r in ranks[1:]] == [{"type": "rows", "rows": 0}] * 3
    gpus = [d for d in job["devices"] if d["kind"] == "gpu"]
    assert len(gpus) == 4
    for d in gpus:
        _check_power(d)
    lines = (tmp / "series.csv").read_text().splitlines()
    assert lines[0].startswith("elapsed_s,") and sum(1 for x in lines if x.startswith("elapsed_s")) == 1


def test_csv_written_once_by_rank_0(job_run):
    tmp, _ = job_run
    from joulecap import read_csv

    df = read_csv(tmp / "job.csv")
    assert list(df.columns) == jd.JOB_CSV_COLUMNS
    assert len(df) == 3 * 3  # 3 windows x (1 CPU + 2 GPUs), one header
    assert list(df["window"].unique()) == ["w0", "w1", "ctx"]
    assert list(df["window_index"].unique()) == [1, 2, 3]
    assert (tmp / "job.csv").read_text().count("window_index") == 1
    df2 = read_csv(tmp / "job2.csv")
    assert len(df2) == 6 and df2["host_id"].nunique() == 2


def test_distributed_false_measures_alone(job_run):
    tmp, ranks = job_run
    for r in ranks:
        assert r["solo"]["type"] == "local"
        assert (tmp / ("solo%d.csv" % r["rank"])).read_text().startswith("elapsed_s,")


def test_a_rank_that_does_not_stop_fails_clearly(tmp_path):
    pytest.importorskip("torch.distributed")
    codes, logs = _launch(_fake_env(tmp_path), tmp_path, 2, WORKER, extra=["0"])
    assert codes == [0, 0], logs
    err = json.loads((tmp_path / "rank0.json").read_text())["error"]
    assert err is not None and "every rank must call it" in err and "distributed=False" in err


# -- without processes ------------------------------------------------------------------------------------------


def _payload(rank, host, gpus, cpu=1.0):
    devs = [{"kind": "cpu", "label": "cpu", "uuid": "", "name": "cpu", "index": -1, "energy_j": cpu,
             "source": "rapl", "coverage": 1.0, "uncertainty_j": 0.0, "state": "ok"}]
    for i, (uuid, e) in enumerate(gpus):
        devs.append({"kind": "gpu", "label": "gpu%d" % i, "uuid": uuid, "name": "H100", "index": i, "energy_j": e,
                     "source": "counter", "coverage": 1.0, "uncertainty_j": 0.0, "state": "ok"})
    return {"rank": rank, "host_id": host, "hostname": "n", "name": "w", "elapsed_s": 1.0 + rank, "resolved": True,
            "devices": devs}


def test_dedup_takes_the_lowest_rank_with_a_value():
    ranks = [_payload(1, "b", [("GPU-1", 20.0)], cpu=3.0), _payload(0, "b", [("GPU-1", math.nan)], cpu=math.nan),
             _payload(2, "c", [("GPU-1", 40.0)], cpu=5.0)]
    m = jd.JobMeasurement("w", ranks)
    # Rank 0's values are NaN: rank 1's are taken; host c is another machine with a GPU of the same UUID.
    assert [(d["host_id"], d["kind"], d["rank"], d["energy_j"]) for d in m.devices] == [
        ("b", "cpu", 1, 3.0), ("b", "gpu", 1, 20.0), ("c", "cpu", 2, 5.0), ("c", "gpu", 2, 40.0)]
    assert m.total_energy_j == 68.0 and m.elapsed_s == 3.0
    assert set(m.hosts) == {"n:b", "n:c"}  # one host name for two hosts: told apart by their ids
    assert ("n:b", "GPU-1") in m.gpu_energy_j


def test_launchers_are_recognised():
    assert jd.launcher_ranks({"SLURM_PROCID": "5", "SLURM_LOCALID": "1", "SLURM_NTASKS": "8"}) == {
        "launcher": "slurm", "rank": 5, "local_rank": 1, "world_size": 8}
    # torchrun inside an srun task: torchrun's variables describe this process.
    assert jd.launcher_ranks({"SLURM_PROCID": "0", "SLURM_LOCALID": "0", "RANK": "3", "LOCAL_RANK": "3",
                              "WORLD_SIZE": "4"})["local_rank"] == 3
    assert jd.launcher_ranks({"OMPI_COMM_WORLD_RANK": "2", "OMPI_COMM_WORLD_LOCAL_RANK": "0",
                              "OMPI_COMM_WORLD_SIZE": "4"})["launcher"] == "mpi"
    assert jd.launcher_ranks({"PMI_RANK": "1", "MPI_LOCALRANKID": "1", "PMI_SIZE": "2"})["local_rank"] == 1
    assert jd.launcher_ranks({})["launcher"] is None


def test_rank_gpu_from_the_local_rank(monkeypatch):
    for k in ("LOCAL_RANK", "RANK", "SLURM_PROCID", "SLURM_LOCALID"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("SLURM_LOCALID", "3")
    monkeypatch.setenv("SLURM_PROCID", "7")
    assert jd.rank_gpu(visible_gpus=2) == 1
    assert jd.rank_gpu(visible_gpus=4) == 3
    assert jd.rank_gpu(visible_gpus=0) == 0


def test_distributed_true_needs_a_process_group(fake):
    import joulecap

    if "torch.distributed" in sys.modules and sys.modules["torch.distributed"].is_initialized():
        pytest.skip("a process group is initialised in this process")
    with pytest.raises(StateError, match="init_process_group"):
        joulecap.EnergyMeasurementTool(None, distributed=True)


def test_host_id_override_is_reporting_only(monkeypatch):
    monkeypatch.setenv("JOULECAP_TEST_HOST_ID", "x")
    with pytest.warns(Warning, match="tests only"):
        jd._warned_override = False
        assert jd.host_id() == "test:x"
    assert jd.boot_id() != "test:x"  # what cap ownership uses

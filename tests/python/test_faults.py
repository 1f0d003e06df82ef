"""The fault matrix for the Python modes (RELIABILITY.md): the fake NVML's fault scenarios against the snippet
tool, the asynchronous tool and the layer-wise tool.  tests/c/test_faults.c runs the C library and the CLI."""

import csv
import json
import math
import os
import subprocess
import sys
import time

import pytest

from joulecap import AsynchronousMeasurementTool, EnergyMeasurementTool
RUN_S = 2.0


def read_rows(path):
    with open(path, newline="") as f:
        return [dict(r) for r in csv.DictReader(f)]


def snippet(path):
    tool = EnergyMeasurementTool(path, gpu_num="all")
    t0 = time.monotonic()
    tool.start("run")
    time.sleep(RUN_S)
    m = tool.stop()
    m.wait()
    tool.close()
    return m, time.monotonic() - t0


def test_gpu_lost_before_the_run_others_measured(fake_env, tmp_path):
    fake_env(scenario="gpu1-lost.scn", sysfs="norapl", proc="qemu")
    m, _ = snippet(tmp_path / "s.csv")
    assert m.states["gpu1"] == "lost" and math.isnan(m.gpu_energy_j[1])
    assert m.coverage["gpu0"] == 1.0
    assert m.gpu_energy_j[0] == pytest.approx(300 * m.elapsed_s, rel=0.05)
    row = read_rows(tmp_path / "s.csv")[-1]
    assert row["gpu1_state"] == "lost" and row["gpu1_energy_kwh"] == "" and row["gpu0_state"] == "ok"


@pytest.mark.parametrize("scenario,dev", [("gpu1-lost-midrun.scn", 1), ("counter-fails-midrun.scn", 0)])
def test_device_gone_mid_run_is_partial_never_whole(fake_env, tmp_path, scenario, dev):
    fake_env(scenario=scenario, sysfs="norapl", proc="qemu")
    m, _ = snippet(tmp_path / "s.csv")
    label = "gpu%d" % dev
    assert m.states[label] == "lost"
    assert 0.2 < m.coverage[label] < 0.9
    assert m.gpu_energy_j[dev] == pytest.approx(300 * m.coverage[label] * m.elapsed_s, rel=0.1)
    assert m.estimates[label].startswith("partial: covers")
    row = read_rows(tmp_path / "s.csv")[-1]
    assert float(row[label + "_coverage"]) < 1 and row[label + "_state"] == "lost"


@pytest.mark.parametrize("scenario", ["counter-backwards.scn", "counter-jump.scn", "counter-reset.scn"])
def test_implausible_counter_rejected_or_stitched(fake_env, tmp_path, scenario):
    fake_env(scenario=scenario, sysfs="norapl", proc="qemu")
    m, _ = snippet(None)
    assert m.states["gpu0"] == "degraded"
    assert m.coverage["gpu0"] == 1.0
    assert m.gpu_energy_j[0] == pytest.approx(300 * m.elapsed_s, rel=0.08)


_SNIPPET_CHILD = r"""
import json, sys, time
from joulecap import EnergyMeasurementTool
tool = EnergyMeasurementTool(None, gpu_num="all")
t0 = time.monotonic()
tool.start("run")
time.sleep(float(sys.argv[1]))
m = tool.stop()
m.wait()
tool.close()
print(json.dumps({"took": time.monotonic() - t0, "elapsed": m.elapsed_s, "gpu0": m.gpu_energy_j[0],
                  "coverage": m.coverage, "states": m.states}))
"""


@pytest.mark.parametrize("scenario", ["slow-gpu1.scn", "hung-gpu1.scn"])
def test_slow_or_hung_gpu_delays_nothing_else(fake_env, tmp_path, scenario):
    # In a process of its own: a reader left in a hung driver call keeps NVML (the fake's scenario) loaded.
    env = fake_env(scenario=scenario, sysfs="norapl", proc="qemu")
    r = subprocess.run([sys.executable, "-c", _SNIPPET_CHILD, str(RUN_S)], capture_output=True, text=True,
                       timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    assert m["took"] < RUN_S + 1.0 + 2.5  # stall_s (1 s) at most, plus open and close
    assert m["coverage"]["gpu0"] == 1.0
    assert m["gpu0"] == pytest.approx(300 * m["elapsed"], rel=0.05)
    assert m["coverage"]["gpu1"] < 1 and m["states"]["gpu1"] in ("stalled", "degraded")


def test_async_gpu_lost_midrun_cells_empty_from_the_loss(fake_env, tmp_path):
    fake_env(scenario="gpu1-lost-midrun.scn", sysfs="norapl", proc="qemu")
    path = tmp_path / "a.csv"
    tool = AsynchronousMeasurementTool(path, gpu_num="all")
    tool.start(0.1)
    time.sleep(RUN_S)
    tool.stop()
    rows = read_rows(path)
    late = [r for r in rows if float(r["elapsed_s"]) > 1.3]
    assert late and all(r["gpu1_power_w"] == "" and r["gpu1_energy_kwh"] == "" for r in late)
    assert all(r["gpu1_state"] == "lost" for r in late)
    assert all(r["gpu0_energy_kwh"] != "" and r["gpu0_state"] == "ok" for r in rows)


def test_async_rapl_stuck_falls_back_to_the_estimate(fake_env, tmp_path):
    fake_env(sysfs="intel-2socket", proc="xeon-8480", rapl_moving=False)
    path = tmp_path / "a.csv"
    tool = AsynchronousMeasurementTool(path, gpu_num=None)
    tool.start(0.2)
    time.sleep(3.0)
    tool.stop()
    rows = read_rows(path)
    assert rows[0]["cpu_energy_source"] in ("rapl", "estimate")
    assert rows[-1]["cpu_energy_source"] == "estimate" and rows[-1]["cpu_state"] == "degraded"
    assert float(rows[-1]["cpu_energy_kwh"]) > 0


_FULL_DISK_CHILD = r"""
import resource, signal, sys, time
from joulecap import AsynchronousMeasurementTool
from joulecap.errors import JoulecapError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
path = sys.argv[1]
tool = AsynchronousMeasurementTool(path, gpu_num=0)
resource.setrlimit(resource.RLIMIT_FSIZE, (1500, 1500))  # a disk that fills after 1500 bytes
tool.start(0.02)
time.sleep(1.0)
try:
    tool.stop()
except JoulecapError as e:
    print("RAISED", type(e).__name__, e)
    sys.exit(0)
print("NOT RAISED")
sys.exit(1)
"""


def test_async_disk_full_raises_and_file_ends_on_a_whole_row(fake, tmp_path):
    path = tmp_path / "full.csv"
    r = subprocess.run([sys.executable, "-c", _FULL_DISK_CHILD, str(path)], capture_output=True, text=True,
                       timeout=60, env=os.environ)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "RAISED" in r.stdout and str(path) in r.stdout and "rows" in r.stdout
    data = path.read_bytes()
    assert 100 < len(data) <= 1500 and data.endswith(b"\n")
    rows = read_rows(path)
    assert all(len(row) == len(rows[0]) and None not in row.values() for row in rows)


_FULL_DISK_SNIPPET_CHILD = r"""
import resource, signal, sys, time
from joulecap import EnergyMeasurementTool
from joulecap.errors import FileError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
tool = EnergyMeasurementTool(sys.argv[1], gpu_num=0)
resource.setrlimit(resource.RLIMIT_FSIZE, (600, 600))  # a disk that fills after 600 bytes
raised = None
try:
    for i in range(40):
        tool.start("step %d" % i)
        time.sleep(0.01)
        tool.stop().wait()
    tool.close()
except FileError as e:
    raised = str(e)
    tool.last_result.wait()  # the window's values are still there
print("RAISED" if raised else "NOT RAISED", raised)
sys.exit(0 if raised else 1)
"""


def test_snippet_disk_full_raises_at_the_next_call(fake, tmp_path):
    path = tmp_path / "full.csv"
    r = subprocess.run([sys.executable, "-c", _FULL_DISK_SNIPPET_CHILD, str(path)], capture_output=True, text=True,
                       timeout=60, env=os.environ)
    assert r.returncode == 0, r.stdout + r.stderr
    assert str(path) in r.stdout and "rows" in r.stdout
    data = path.read_bytes()
    assert 100 < len(data) <= 600 and data.endswith(b"\n")

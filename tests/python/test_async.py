"""AsynchronousMeasurementTool: rows written while running, units in the header, known answers, kill safety."""

import csv
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from joulecap import AsynchronousMeasurementTool

UNIT_SUFFIXES = ("_s", "_kwh", "_pct", "_c", "_w", "_source", "_state")


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def as_dicts(rows):
    return [dict(zip(rows[0], r)) for r in rows[1:]]


def test_rows_are_written_while_running(fake, tmp_path):
    path = tmp_path / "async.csv"
    tool = AsynchronousMeasurementTool(path, gpu_num=0)
    assert path.exists()  # created by the constructor
    tool.start(0.1)
    time.sleep(0.65)
    rows = read_rows(path)  # while running
    assert rows[0] == [
        "elapsed_s",
        "cpu_energy_kwh",
        "cpu_util_pct",
        "cpu_temp_c",
        "gpu0_energy_kwh",
        "gpu0_util_pct",
        "gpu0_temp_c",
        "gpu0_power_w",
        "cpu_energy_source",
        "gpu0_energy_source",
        "cpu_state",
        "gpu0_state",
    ]
    assert all(c.endswith(UNIT_SUFFIXES) for c in rows[0])
    assert len(rows) - 1 >= 4
    tool.stop()
    assert not tool.running
    d = as_dicts(read_rows(path))
    t = [float(r["elapsed_s"]) for r in d]
    # one row every 0.1 s from 0, and a last one at stop()
    assert t[0] == pytest.approx(0.0, abs=1e-3)
    for a, b in zip(t[:-2], t[1:-1]):
        assert b - a == pytest.approx(0.1, abs=1e-3)
    assert t[-1] >= t[-2]
    e = [float(r["gpu0_energy_kwh"]) * 3.6e6 for r in d]
    for ti, ei in zip(t, e):
        assert abs(ei - 300.0 * ti) <= 7.5  # 300 W since start(), interpolated inside the 100 ms steps
    assert all(float(r["gpu0_power_w"]) == pytest.approx(300.0) for r in d)  # instant power, W
    assert all(r["gpu0_energy_source"] == "counter" and r["cpu_energy_source"] == "rapl" for r in d)


def test_two_gpus_and_estimated_cpu(fake_env, tmp_path):
    fake_env(scenario="two-gpus.scn", sysfs="norapl", proc="qemu")
    path = tmp_path / "async.csv"
    tool = AsynchronousMeasurementTool(path, gpu_num="all")
    tool.start(interval_s=0.2)
    time.sleep(0.5)
    tool.stop()
    rows = read_rows(path)
    assert rows[0][4:12] == [
        "gpu0_energy_kwh",
        "gpu0_util_pct",
        "gpu0_temp_c",
        "gpu0_power_w",
        "gpu1_energy_kwh",
        "gpu1_util_pct",
        "gpu1_temp_c",
        "gpu1_power_w",
    ]
    d = as_dicts(rows)
    assert {r["cpu_energy_source"] for r in d} == {"estimate"}
    assert float(d[-1]["gpu1_power_w"]) == pytest.approx(150.0)


def test_start_stop_return_quickly(fake, tmp_path):
    tool = AsynchronousMeasurementTool(tmp_path / "a.csv", gpu_num=0)
    t0 = time.monotonic()
    tool.start(1)
    t1 = time.monotonic()
    tool.stop()
    t2 = time.monotonic()
    # Opening the sources waits for the first GPU counter step (<= 0.1 s); stop waits for the last row.
    assert t1 - t0 < 1.0 and t2 - t1 < 1.5
    assert len(read_rows(tmp_path / "a.csv")) >= 2


def test_latest_readings(fake, tmp_path):
    with AsynchronousMeasurementTool(tmp_path / "a.csv", gpu_num=0) as tool:
        tool.start(0.05)
        time.sleep(0.3)
        latest = tool.latest()
        assert latest["gpu0"]["power_w"] == pytest.approx(300.0)
        assert latest["gpu0"]["energy_j"] > 0
    assert not tool.running


CHILD = textwrap.dedent(
    """
    import sys, time
    from joulecap import AsynchronousMeasurementTool
    tool = AsynchronousMeasurementTool(sys.argv[1], gpu_num=0)
    tool.start(0.1)
    print(tool._ctx.epoch_ns, flush=True)
    while True:
        time.sleep(1)
    """
)


def test_sigkill_keeps_every_row_up_to_the_last_interval(fake, tmp_path):
    path = tmp_path / "killed.csv"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        epoch_ns = int(child.stdout.readline())
        time.sleep(1.2)
        killed_at = time.monotonic_ns()
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL
    rows = read_rows(path)
    t = [float(r[0]) for r in rows[1:]]
    alive_s = (killed_at - epoch_ns) * 1e-9
    # Every interval, no gap, up to the last interval whose values were known before the kill (the energy at
    # a row's instant is known at the next 100 ms counter step).
    assert t == pytest.approx([0.1 * i for i in range(len(t))], abs=1e-3)
    assert t[-1] >= alive_s - 0.1 - 0.25
    # and every row is complete (no half-written last line)
    assert all(len(r) == len(rows[0]) for r in rows[1:])


SNIPPET_CHILD = textwrap.dedent(
    """
    import sys, time
    from joulecap import EnergyMeasurementTool
    tool = EnergyMeasurementTool(sys.argv[1], gpu_num=0)
    for i in range(3):
        tool.start("w%d" % i)
        time.sleep(0.05)
        tool.stop()
    print("stopped", flush=True)
    tool.start("never stopped")
    while True:
        time.sleep(1)
    """
)


def test_sigkill_keeps_the_rows_of_stopped_windows(fake, tmp_path):
    path = tmp_path / "killed.csv"
    child = subprocess.Popen(
        [sys.executable, "-c", SNIPPET_CHILD, str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline().strip() == "stopped"
        time.sleep(0.5)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    names = [r[5] for r in read_rows(path)[1:]]
    assert names == ["w0", "w1", "w2"]


NORMAL_EXIT_CHILD = textwrap.dedent(
    """
    import sys, time
    from joulecap import AsynchronousMeasurementTool, EnergyMeasurementTool
    a = AsynchronousMeasurementTool(sys.argv[1], gpu_num=0)
    a.start(0.1)
    e = EnergyMeasurementTool(sys.argv[2], gpu_num=0)
    e.start()
    time.sleep(0.35)
    e.stop()
    # no a.stop(), no e.close(): a normal exit completes both files
    """
)


def test_normal_exit_completes_the_files(fake, tmp_path):
    a, e = tmp_path / "a.csv", tmp_path / "e.csv"
    subprocess.run([sys.executable, "-c", NORMAL_EXIT_CHILD, str(a), str(e)], check=True, timeout=60)
    t = [float(r[0]) for r in read_rows(a)[1:]]
    assert len(t) >= 4 and t[-1] >= 0.35
    rows = read_rows(e)
    assert len(rows) == 2 and float(rows[1][0]) >= 0.35

"""EnergyMeasurementTool against known answers of the fake NVML and fake RAPL."""

import csv
import math
import os
import threading
import time

import pytest

from conftest import write_atomic

from joulecap import EnergyMeasurementTool, Measurement
from joulecap.errors import InvalidArgument, StateError

STEP_J = 30.0  # the 300 W scenario's counter steps: 100 ms of 300 W


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_constant_300w_for_2s_gives_600j(fake, tmp_path):
    tool = EnergyMeasurementTool(tmp_path / "e.csv", gpu_num=0)
    tool.start()
    time.sleep(2.0)
    r = tool.stop()
    assert isinstance(r, Measurement)
    assert 2.0 <= r.elapsed_s < 2.5
    assert r.sources == {"cpu": "rapl", "gpu0": "counter"}
    # 300 W times the measured time, within one counter step (plus a little timing slack).
    assert abs(r.gpu_energy_j[0] - 300.0 * r.elapsed_s) <= STEP_J + 3.0
    assert abs(r.gpu_energy_j[0] - 600.0) <= STEP_J + 300.0 * (r.elapsed_s - 2.0) + 3.0
    assert r.gpu_energy_kwh[0] == pytest.approx(r.gpu_energy_j[0] / 3.6e6)
    assert r.total_gpu_energy_j == pytest.approx(r.gpu_energy_j[0])
    assert r.resolved and not r.is_estimate and r.estimates == {}
    tool.close()


def test_fewer_counter_reads_still_measure_long_windows(fake, tmp_path):
    # counter_interval_s=1: a counter read about once a second (the low-CPU setting); a 2 s window is still right.
    tool = EnergyMeasurementTool(tmp_path / "e.csv", gpu_num=0, counter_interval_s=1.0)
    tool.start()
    time.sleep(2.0)
    r = tool.stop()
    assert abs(r.gpu_energy_j[0] - 300.0 * r.elapsed_s) <= STEP_J + 3.0
    tool.close()
    with pytest.raises(InvalidArgument, match="counter interval"):
        EnergyMeasurementTool(None, gpu_num=0, counter_interval_s=-1)


def test_short_windows_are_not_quantised_to_counter_steps(fake, tmp_path):
    """A 50 ms window at 300 W is 15 J, not 0 or 30 J as two counter reads would say."""
    tool = EnergyMeasurementTool(None, gpu_num=0)
    results = []
    for _ in range(5):
        tool.start()
        time.sleep(0.05)
        results.append(tool.stop())
    for r in results:
        assert abs(r.gpu_energy_j[0] - 300.0 * r.elapsed_s) <= 7.5, r.as_dict()
    tool.close()


def test_csv_parses_back_to_the_results(fake, tmp_path):
    path = tmp_path / "snippets.csv"
    tool = EnergyMeasurementTool(path, gpu_num=0)
    assert tool.columns == [
        "elapsed_s",
        "cpu_energy_kwh",
        "gpu0_energy_kwh",
        "cpu_energy_source",
        "gpu0_energy_source",
        "window",
        "start_s",
        "cpu_coverage",
        "gpu0_coverage",
        "cpu_state",
        "gpu0_state",
    ]
    results = []
    for i in range(3):
        tool.start()
        time.sleep(0.1 + 0.05 * i)
        results.append(tool.stop())
    tool.start("epoch, with comma")
    time.sleep(0.05)
    results.append(tool.stop("epoch, with comma"))
    # The values are resolved, and the rows written, without the program asking.
    tool.flush()
    rows = read_rows(path)
    assert rows[0] == tool.columns
    assert len(rows) == 1 + len(results)
    for row, r in zip(rows[1:], results):
        d = dict(zip(rows[0], row))
        assert float(d["elapsed_s"]) == pytest.approx(r.elapsed_s, abs=1e-6)
        assert float(d["cpu_energy_kwh"]) == pytest.approx(r.cpu_energy_kwh, rel=1e-8)
        assert float(d["gpu0_energy_kwh"]) == pytest.approx(r.gpu_energy_kwh[0], rel=1e-8)
        assert d["cpu_energy_source"] == "rapl" and d["gpu0_energy_source"] == "counter"
        assert d["window"] == (r.name or "")
        assert float(d["start_s"]) == pytest.approx(r.start_s, abs=1e-6)
    tool.close()


def test_row_is_written_soon_after_stop_without_touching_the_result(fake, tmp_path):
    path = tmp_path / "e.csv"
    tool = EnergyMeasurementTool(path, gpu_num=0)
    tool.start()
    time.sleep(0.2)
    t0 = time.monotonic()
    tool.stop()
    while len(read_rows(path)) < 2 and time.monotonic() - t0 < 2.0:
        time.sleep(0.01)
    assert len(read_rows(path)) == 2
    assert time.monotonic() - t0 < 1.0  # about one counter step, with slack for a busy machine
    tool.close()


def test_named_nested_and_overlapping_windows(fake, tmp_path):
    tool = EnergyMeasurementTool(tmp_path / "e.csv", gpu_num=0)
    tool.start("outer")
    time.sleep(0.1)
    tool.start("inner")
    time.sleep(0.2)
    inner = tool.stop("inner")
    tool.start("overlap")
    time.sleep(0.1)
    outer = tool.stop("outer")
    time.sleep(0.1)
    overlap = tool.stop()  # the most recently started window still running
    assert overlap.name == "overlap" and inner.name == "inner" and outer.name == "outer"
    assert inner.elapsed_s < outer.elapsed_s
    assert inner.gpu_energy_j[0] < outer.gpu_energy_j[0]
    assert outer.start_s < inner.start_s < overlap.start_s
    assert abs(outer.gpu_energy_j[0] - 300.0 * outer.elapsed_s) <= 7.5
    tool.close()
    names = [row[5] for row in read_rows(tmp_path / "e.csv")[1:]]
    assert names == ["inner", "outer", "overlap"]  # in stop order


def test_context_manager_and_decorator(fake, tmp_path):
    with EnergyMeasurementTool(tmp_path / "e.csv", gpu_num=0) as tool:
        with tool.window("epoch") as w:
            time.sleep(0.1)
        assert w.result is tool.last_result
        assert w.result.name == "epoch" and w.result.elapsed_s >= 0.1

        @tool.measure
        def work(n):
            time.sleep(n)
            return "done"

        @tool.measure("named")
        def other():
            time.sleep(0.01)

        assert work(0.05) == "done"
        assert work.last_result.name.endswith("work")
        assert work.last_result.elapsed_s >= 0.05
        other()
        assert other.last_result.name == "named"

        # The window closes even when the body raises, and the exception goes through.
        with pytest.raises(KeyError):
            with tool.window("failing"):
                raise KeyError("x")
        assert tool.last_result.name == "failing"
    assert tool.closed
    names = [row[5] for row in read_rows(tmp_path / "e.csv")[1:]]
    assert names == ["epoch", work.last_result.name, "named", "failing"]


def test_recursive_decorated_function(fake):
    tool = EnergyMeasurementTool(None, gpu_num=None)

    @tool.measure
    def fact(n):
        return 1 if n <= 1 else n * fact(n - 1)

    assert fact(5) == 120
    tool.close()


def test_cpu_only_and_no_file(fake):
    tool = EnergyMeasurementTool(None, gpu_num=None)
    assert tool.gpus == []
    tool.start()
    time.sleep(0.05)
    r = tool.stop()
    assert r.gpu_energy_j == {} and r.total_gpu_energy_j == 0.0
    assert r.sources == {"cpu": "rapl"}
    assert r.cpu_energy_j > 0  # the fake RAPL counters move (conftest.RaplDriver)
    tool.close()


def test_cpu_estimate_is_marked_with_its_reason(fake_env):
    fake_env(sysfs="norapl", proc="qemu")
    tool = EnergyMeasurementTool(None, gpu_num=0)
    tool.start()
    time.sleep(0.3)
    r = tool.stop()
    assert r.sources["cpu"] == "estimate"
    assert "cpu" in r.estimates and "RAPL" in r.estimates["cpu"]
    assert "gpu0" not in r.estimates
    assert r.is_estimate
    assert r.cpu_energy_j > 0
    tool.close()


def test_rapl_counter_wrapping_mid_window(fake_env, rapl_tree):
    """package-0's counter passes max_energy_range_uj inside the window; the energy still adds up."""
    fake_env(sysfs=str(rapl_tree), proc="qemu")
    zone = rapl_tree / "class" / "powercap" / "intel-rapl:0"
    core = rapl_tree / "class" / "powercap" / "intel-rapl:0:0"
    max_uj = int((zone / "max_energy_range_uj").read_text())
    v0 = max_uj - 1_000_000
    write_atomic(zone / "energy_uj", "%d\n" % v0)
    tool = EnergyMeasurementTool(None, gpu_num=None, interval_s=0.005)
    assert tool.devices[0]["energy_source"] == "rapl"
    tool.start()
    time.sleep(0.1)
    # 0.8 J, then across the wrap, then 1 J more; the core subzone (overlapping the package) moves too but
    # must not count.
    steps = [max_uj - 200_000, 300_000, 1_300_000]
    for i, v in enumerate(steps):
        write_atomic(zone / "energy_uj", "%d\n" % v)
        write_atomic(core / "energy_uj", "%d\n" % (5_000_000 * (i + 2)))
        time.sleep(0.1)
    r = tool.stop()
    expected_uj = (steps[0] - v0) + (max_uj - steps[0]) + 1 + steps[1] + (steps[2] - steps[1])
    assert r.cpu_energy_j == pytest.approx(expected_uj * 1e-6, abs=1e-6)
    assert r.sources["cpu"] == "rapl"
    tool.close()


def test_rapl_counter_wrapping_from_a_background_thread(fake_env, rapl_tree):
    """A counter driven at a steady 50 W from another thread wraps twice; the window sees 50 W throughout."""
    fake_env(sysfs=str(rapl_tree), proc="qemu")
    zone = rapl_tree / "class" / "powercap" / "intel-rapl:0"
    max_uj = 10_000_000  # a tiny range: 10 J, so 50 W wraps every 200 ms (twice in the window)...
    # ...and the sampler must read faster than a wrap: a 5 ms interval leaves room for a loaded machine.
    (zone / "max_energy_range_uj").write_text("%d\n" % max_uj)
    write_atomic(zone / "energy_uj", "0\n")
    stop = threading.Event()
    written = {"uj": 0}

    def drive():
        t0 = time.monotonic()
        while not stop.is_set():
            total = int(50e6 * (time.monotonic() - t0))  # 50 W in uJ
            written["uj"] = total
            write_atomic(zone / "energy_uj", "%d\n" % (total % (max_uj + 1)))
            time.sleep(0.001)

    th = threading.Thread(target=drive)
    th.start()
    try:
        tool = EnergyMeasurementTool(None, gpu_num=None, interval_s=0.005)
        tool.start()
        time.sleep(0.5)
        r = tool.stop()
        r.wait()
    finally:
        stop.set()
        th.join()
    tool.close()
    # 25 J in 0.5 s; timing jitter of the writer thread and the sampler gives a few percent.
    assert r.cpu_energy_j == pytest.approx(50.0 * r.elapsed_s, rel=0.15)


def test_two_gpus_columns_and_uuid_selection(fake_env, tmp_path):
    fake_env(scenario="two-gpus.scn")
    path = tmp_path / "e.csv"
    tool = EnergyMeasurementTool(path, gpu_num="all")
    assert tool.gpus == [0, 1]
    assert tool.columns[:4] == ["elapsed_s", "cpu_energy_kwh", "gpu0_energy_kwh", "gpu1_energy_kwh"]
    tool.start()
    time.sleep(0.5)
    r = tool.stop()
    # 300 W and 150 W
    assert abs(r.gpu_energy_j[0] - 300 * r.elapsed_s) <= 7.5
    assert abs(r.gpu_energy_j[1] - 150 * r.elapsed_s) <= 7.5
    tool.close()
    header, row = read_rows(path)
    assert header[:7] == tool.columns[:7]
    assert float(row[3]) == pytest.approx(r.gpu_energy_kwh[1], rel=1e-8)

    uuid = "GPU-aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"
    tool = EnergyMeasurementTool(None, gpu_num=uuid[:12])
    assert [d["uuid"] for d in tool.devices[1:]] == [uuid]
    tool.close()
    tool = EnergyMeasurementTool(None, gpu_num=[1, 0])
    assert sorted(tool.gpus) == [0, 1]
    tool.close()


def test_start_stop_is_cheap(fake):
    """Not a benchmark (that is bench/): a loose check that start()+stop() takes timestamps and no more."""
    tool = EnergyMeasurementTool(None, gpu_num=0)
    n = 2000
    t0 = time.perf_counter()
    for _ in range(n):
        tool.start()
        tool.stop()
    per_pair = (time.perf_counter() - t0) / n
    assert per_pair < 50e-6
    tool.close()


def test_results_survive_close(fake, tmp_path):
    tool = EnergyMeasurementTool(tmp_path / "e.csv", gpu_num=0)
    tool.start()
    time.sleep(0.05)
    r = tool.stop()
    tool.close()
    assert r.ready
    assert r.elapsed_s >= 0.05
    with pytest.raises(StateError):
        tool.start()


def test_result_to_pandas_and_read_csv(fake, tmp_path):
    pd = pytest.importorskip("pandas")
    import joulecap

    path = tmp_path / "e.csv"
    tool = EnergyMeasurementTool(path, gpu_num=0)
    tool.start("a")
    time.sleep(0.1)
    r = tool.stop()
    df = tool.read()
    one = r.to_pandas()
    assert list(df.columns) == tool.columns == list(one.columns)
    assert df.loc[0, "window"] == "a" and df.loc[0, "gpu0_energy_source"] == "counter"
    assert df.loc[0, "gpu0_energy_kwh"] == pytest.approx(one.loc[0, "gpu0_energy_kwh"], rel=1e-8)
    assert isinstance(joulecap.read_csv(path), pd.DataFrame)
    tool.close()


def test_nan_where_nothing_can_be_measured(fake_env, tmp_path):
    fake_env(sysfs="empty", proc=str(tmp_path / "no-proc"))
    path = tmp_path / "e.csv"
    tool = EnergyMeasurementTool(path, gpu_num=None)
    tool.start()
    r = tool.stop()
    assert math.isnan(r.cpu_energy_j)
    assert r.sources["cpu"] == "none" and r.estimates["cpu"].startswith("not measured")
    tool.close()
    header, row = read_rows(path)
    assert row[1] == ""  # an empty cell, not a made-up number

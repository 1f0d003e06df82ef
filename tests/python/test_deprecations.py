"""Names renamed or replaced keep working for one release, with a DeprecationWarning that points at the caller:
unit-less keywords (interval, counter_interval, time_budget, caps, cap), power_cap_profiler.last_result, and
PowerCapOptimizer's old default gpu_num (the current CUDA device).  The new names work without a warning."""

import csv
import inspect
import time
import warnings

import pytest

import joulecap
from joulecap import AsynchronousMeasurementTool, EnergyMeasurementTool
from joulecap.errors import GPUNotFound

torch = pytest.importorskip("torch")


@pytest.fixture
def caps_env(fake_env, tmp_path, monkeypatch):
    def setup(scenario="h100-sweep.scn"):
        fake_env(scenario=scenario, sysfs="norapl", proc="qemu")
        monkeypatch.setenv("JOULECAP_FAKE_NVML_STATE", str(tmp_path / "fake.state"))
        monkeypatch.setenv("JOULECAP_STATE_DIR", str(tmp_path / "journals"))
        monkeypatch.delenv("JOULECAP_CLI", raising=False)

    yield setup
    joulecap.restore_power_caps()


def deprecated(old, new):
    """pytest.warns for the rename old -> new, checked to point at this file (the caller)."""
    return pytest.warns(DeprecationWarning, match=r"\b%s is deprecated.*use %s" % (old, new))


def assert_from_here(record):
    for w in record:
        if issubclass(w.category, DeprecationWarning):
            assert w.filename == __file__, (w.filename, str(w.message))


class Step(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(2, 2)

    def forward(self, x):
        time.sleep(0.01)
        return self.lin(x)


def data():
    return [torch.zeros(1, 2)] * 3


# -- keywords with units ---------------------------------------------------------------------------------------


def test_energy_tool_interval_keywords(fake):
    with deprecated("interval", "interval_s") as rec:
        tool = EnergyMeasurementTool(None, gpu_num=0, interval=0.005)
    assert_from_here(rec)
    tool.close()
    with deprecated("counter_interval", "counter_interval_s") as rec:
        tool = EnergyMeasurementTool(None, gpu_num=0, counter_interval=1.0)
    assert_from_here(rec)
    tool.start()
    assert tool.stop().elapsed_s >= 0
    tool.close()
    with pytest.raises(TypeError, match="interval_s"):
        EnergyMeasurementTool(None, gpu_num=0, interval=0.01, interval_s=0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        EnergyMeasurementTool(None, gpu_num=0, interval_s=0.005, counter_interval_s=1.0).close()


def test_async_tool_interval_keywords(fake, tmp_path):
    with deprecated("counter_interval", "counter_interval_s"):
        tool = AsynchronousMeasurementTool(tmp_path / "a.csv", gpu_num=0, counter_interval=1.0)
    with deprecated("interval", "interval_s") as rec:
        tool.start(interval=0.05)
    assert_from_here(rec)
    assert tool.interval_s == 0.05
    with deprecated("interval", "interval_s"):
        assert tool.interval == 0.05
    time.sleep(0.3)
    assert tool.stop() >= 2
    with open(tmp_path / "a.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) >= 2
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        tool = AsynchronousMeasurementTool(tmp_path / "b.csv", gpu_num=0, counter_interval_s=1.0)
        tool.start(interval_s=0.05)
        tool.stop()


def test_set_power_cap_cap_keyword(caps_env):
    caps_env()
    with deprecated("cap", "cap_w") as rec:
        now = joulecap.set_power_cap(0, cap=400)
    assert_from_here(rec)
    assert now.limit_w == 400
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        assert joulecap.set_power_cap(0, cap_w=450).limit_w == 450
    joulecap.reset_power_cap(0)


def test_layerwise_tool_interval_keywords(fake):
    from joulecap import LayerwiseMeasurementTool

    with deprecated("interval", "interval_s") as rec:
        LayerwiseMeasurementTool(None, gpu_num=0, interval=0.005).close()
    assert_from_here(rec)
    with deprecated("resolve_interval", "resolve_interval_s") as rec:
        tool = LayerwiseMeasurementTool(None, gpu_num=0, resolve_interval=0.2)
    assert_from_here(rec)
    assert tool.resolve_interval == 0.2
    tool.close()
    with pytest.raises(TypeError, match="resolve_interval_s"):
        LayerwiseMeasurementTool(None, gpu_num=0, resolve_interval=0.2, resolve_interval_s=0.2)
    params = inspect.signature(LayerwiseMeasurementTool).parameters
    assert {"interval_s", "resolve_interval_s"} <= set(params) and not {"interval", "resolve_interval"} & set(params)


def test_signatures_show_the_new_names():
    sig = inspect.signature
    assert {"interval_s", "counter_interval_s"} <= set(sig(EnergyMeasurementTool).parameters)
    assert "interval" not in sig(EnergyMeasurementTool).parameters
    assert "counter_interval_s" in sig(AsynchronousMeasurementTool).parameters
    assert "interval_s" in sig(AsynchronousMeasurementTool.start).parameters
    assert "cap_w" in sig(joulecap.set_power_cap).parameters
    for f in (joulecap.power_cap_profiler, joulecap.profile_power_cap, joulecap.PowerCapOptimizer):
        params = sig(f).parameters
        assert {"caps_w", "time_budget_s"} <= set(params) and not {"caps", "time_budget"} & set(params), f
        # The same default as the measurement tools': GPU 0, or under torch.distributed the rank's GPU.
        assert params["gpu_num"].default is joulecap.distributed.RANK_GPU and repr(params["gpu_num"].default) == "0"
    assert sig(joulecap.power_cap_profiler).return_annotation == "float"
    assert sig(joulecap.profile_power_cap).return_annotation == "ProfileResult"


# -- the profiler ------------------------------------------------------------------------------------------------


def test_profiler_old_keywords_and_last_result(caps_env):
    caps_env()
    with pytest.warns(DeprecationWarning) as rec:
        cap = joulecap.power_cap_profiler(Step(), data(), 0, caps=[700, 500], time_budget=1.5, steps_on_gpu=True)
    msgs = [str(w.message) for w in rec if issubclass(w.category, DeprecationWarning)]
    assert any("caps is deprecated" in m and "caps_w" in m for m in msgs), msgs
    assert any("time_budget is deprecated" in m and "time_budget_s" in m for m in msgs), msgs
    assert_from_here(rec)
    assert cap in (700, 500)
    with pytest.warns(DeprecationWarning, match=r"last_result is deprecated.*profile_power_cap\(\)") as rec:
        r = joulecap.power_cap_profiler.last_result
    assert_from_here(rec)
    assert isinstance(r, joulecap.ProfileResult) and r.cap_w == cap


def test_profile_power_cap_returns_the_result_without_warning(caps_env):
    caps_env()
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        warnings.simplefilter("ignore", joulecap.errors.JoulecapWarning)
        r = joulecap.profile_power_cap(Step(), data(), 0, caps_w=[700, 500], time_budget_s=1.5, steps_on_gpu=True)
        cap = joulecap.power_cap_profiler(Step(), data(), 0, caps_w=[700], time_budget_s=1, steps_on_gpu=True)
    assert isinstance(r, joulecap.ProfileResult) and r.cap_w in (700, 500) and r.trials
    assert cap == 700 and isinstance(cap, float)


def test_optimizer_old_keywords(caps_env):
    caps_env()
    with pytest.warns(DeprecationWarning) as rec:
        pco = joulecap.PowerCapOptimizer(0, caps=[700, 500], time_budget=1)
    assert_from_here(rec)
    pco.close()


def test_optimizer_gpu_num(caps_env, monkeypatch):
    caps_env()
    with warnings.catch_warnings():  # the default is 0, as elsewhere; here the current device is 0 too: no warning
        warnings.simplefilter("error", DeprecationWarning)
        with joulecap.PowerCapOptimizer(time_budget_s=1) as pco:
            assert pco.gpu_num == 0
        with joulecap.PowerCapOptimizer("current", time_budget_s=1) as pco:
            assert pco.gpu_num == 0
    with pytest.warns(DeprecationWarning, match="gpu_num='current'") as rec:
        with joulecap.PowerCapOptimizer(None, time_budget_s=1) as pco:
            assert pco.gpu_num == 0
    assert_from_here(rec)
    # Where the current CUDA device is not 0, no gpu_num still means it (the old default), with a warning.
    monkeypatch.setattr(joulecap.profiler, "current_gpu", lambda: 1)
    with pytest.warns(DeprecationWarning, match="current CUDA device \\(1\\)"):
        with pytest.raises(GPUNotFound):  # the fake machine has one GPU
            joulecap.PowerCapOptimizer(time_budget_s=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        with joulecap.PowerCapOptimizer(0, time_budget_s=1) as pco:  # an explicit 0 is GPU 0, without a warning
            assert pco.gpu_num == 0


def test_caps_accept_current(caps_env):
    caps_env()
    assert joulecap.get_power_cap("current").gpu_num == 0


def test_default_gpu_under_torch_distributed_is_the_ranks(monkeypatch):
    """Under torch.distributed the default gpu_num of the profiler and the optimizer is the rank's GPU, as for the
    measurement tools (no warning: the old optimizer default meant the current device, which that is there)."""
    from joulecap.profiler import _default_gpu

    class Group:
        size = 2

    monkeypatch.setattr(joulecap.profiler, "rank_gpu", lambda: 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        assert _default_gpu(joulecap.distributed.RANK_GPU, Group()) == 1
        assert _default_gpu(joulecap.distributed.RANK_GPU, Group(), online=True) == 1
        assert _default_gpu(0, Group(), online=True) == 0

"""Errors are exceptions raised before any work, with the fix in the message."""

import math
import os
import time

import pytest

import joulecap
from joulecap import AsynchronousMeasurementTool, EnergyMeasurementTool
from joulecap import errors
from joulecap.errors import (
    FileError,
    GPUNotFound,
    InvalidArgument,
    JoulecapError,
    JoulecapWarning,
    StateError,
)


@pytest.mark.parametrize("tool_cls", [EnergyMeasurementTool, AsynchronousMeasurementTool])
def test_bad_gpu_lists_the_gpus(fake, tmp_path, tool_cls):
    with pytest.raises(GPUNotFound) as e:
        tool_cls(tmp_path / "x.csv", gpu_num=3)
    msg = str(e.value)
    assert "GPU 3" in msg and "GPU-8f3c2a1e-5b7d-4c9e-a0f1-2d3e4b5c6a7f" in msg and "H100" in msg
    assert isinstance(e.value, JoulecapError) and isinstance(e.value, LookupError)
    assert e.value.status_name == "JC_ERR_NOT_FOUND"
    with pytest.raises(GPUNotFound):
        tool_cls(tmp_path / "x.csv", gpu_num="GPU-00000000")
    with pytest.raises(GPUNotFound):
        tool_cls(tmp_path / "x.csv", gpu_num=[0, 1])


@pytest.mark.parametrize("bad", [-1, True, [], "", "  ", object(), 1.5])
def test_malformed_gpu_num(fake, bad):
    with pytest.raises(InvalidArgument) as e:
        EnergyMeasurementTool(None, gpu_num=bad)
    assert isinstance(e.value, ValueError)
    assert "gpu_num" in str(e.value)


@pytest.mark.parametrize("tool_cls", [EnergyMeasurementTool, AsynchronousMeasurementTool])
def test_unwritable_file_raises_in_the_constructor(fake, tmp_path, tool_cls):
    with pytest.raises(FileError) as e:
        tool_cls(tmp_path / "no-such-dir" / "x.csv", gpu_num=0)
    assert "writable path" in str(e.value) and isinstance(e.value, OSError)
    with pytest.raises(FileError):
        tool_cls(tmp_path, gpu_num=0)  # a directory


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_read_only_directory(fake, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    with pytest.raises(errors.PermissionDenied) as e:
        EnergyMeasurementTool(ro / "x.csv", gpu_num=0)
    assert isinstance(e.value, PermissionError)


def test_stop_without_start(fake):
    tool = EnergyMeasurementTool(None, gpu_num=0)
    with pytest.raises(StateError) as e:
        tool.stop()
    assert "start()" in str(e.value)
    with pytest.raises(StateError) as e:
        tool.stop("epoch")
    assert "start('epoch')" in str(e.value)
    tool.start("a")
    with pytest.raises(StateError) as e:
        tool.stop("b")
    assert "'a'" in str(e.value)  # lists what is running
    tool.stop("a")
    tool.close()


def test_start_twice(fake):
    tool = EnergyMeasurementTool(None, gpu_num=0)
    tool.start()
    with pytest.raises(StateError) as e:
        tool.start()
    assert "stop()" in str(e.value)
    tool.start("other")  # a named window may run at the same time
    with pytest.raises(StateError):
        tool.start("other")
    assert tool.running == [None, "other"]
    tool.stop("other")
    tool.stop()
    tool.close()


def test_async_order_errors_and_bad_interval(fake, tmp_path):
    tool = AsynchronousMeasurementTool(tmp_path / "a.csv", gpu_num=0)
    with pytest.raises(StateError) as e:
        tool.stop()
    assert "start(" in str(e.value)
    for bad in (0, -1, "abc", math.nan, math.inf, None, True):
        with pytest.raises(InvalidArgument) as e:
            tool.start(bad)
        assert "interval" in str(e.value)
    with pytest.raises(InvalidArgument) as e:
        tool.start(1e6)  # the library's range check
    assert "interval" in str(e.value).lower()
    with pytest.raises(InvalidArgument):
        tool.start(0.0001)
    tool.start(0.5)
    with pytest.raises(StateError) as e:
        tool.start(0.5)
    assert "stop()" in str(e.value)
    tool.stop()
    with pytest.raises(StateError):
        tool.stop()
    with pytest.raises(StateError) as e:
        tool.start(0.5)  # would overwrite the file
    assert "new AsynchronousMeasurementTool" in str(e.value)


def test_snippet_interval_is_checked(fake):
    with pytest.raises(InvalidArgument):
        EnergyMeasurementTool(None, gpu_num=0, interval_s=0)
    with pytest.raises(InvalidArgument):
        EnergyMeasurementTool(None, gpu_num=0, interval_s=5000)


def test_gpu_asked_without_nvml_warns_and_measures_the_cpu(fake_env):
    fake_env(scenario=None)
    with pytest.warns(JoulecapWarning, match="CPU only"):
        tool = EnergyMeasurementTool(None, gpu_num=0)
    assert tool.gpus == []
    tool.start()
    r = tool.stop()
    assert r.gpu_energy_j == {} and r.sources == {"cpu": "rapl"}
    tool.close()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        EnergyMeasurementTool(None, gpu_num=None).close()
        EnergyMeasurementTool(None, gpu_num="all").close()


def test_driver_problems_from_the_scenarios(fake_env):
    fake_env(scenario="driver-not-loaded.scn")
    with pytest.warns(JoulecapWarning):
        tool = EnergyMeasurementTool(None, gpu_num=0)
    assert tool.gpus == []
    tool.close()


def test_used_after_close(fake):
    tool = EnergyMeasurementTool(None, gpu_num=0)
    tool.close()
    tool.close()  # twice is fine
    with pytest.raises(StateError) as e:
        tool.start()
    assert "closed" in str(e.value)


def test_error_classes():
    assert issubclass(errors.InvalidArgument, ValueError)
    assert issubclass(errors.PermissionDenied, PermissionError)
    assert issubclass(errors.Timeout, TimeoutError)
    assert issubclass(errors.StateError, RuntimeError)
    for cls in (errors.GPUNotFound, errors.SourceUnavailable, errors.GPULost, errors.NVMLError, errors.Busy):
        assert issubclass(cls, JoulecapError)
    e = errors._from_status(11, "no NVML here", "read")
    assert isinstance(e, errors.SourceUnavailable) and str(e) == "source unavailable: no NVML here"
    assert e.status == 11 and e.status_name == "JC_ERR_UNAVAILABLE" and e.detail == "no NVML here"


def test_fork_child_cannot_use_the_parents_tool(fake):
    tool = EnergyMeasurementTool(None, gpu_num=0)
    pid = os.fork()
    if pid == 0:  # child: no sampler thread here
        code = 1
        try:
            tool.start()
        except StateError as e:
            code = 0 if "fork" in str(e) else 2
        except BaseException:
            code = 3
        try:
            tool.close()  # must not hang on threads that do not exist here
        except BaseException:
            code = 4
        os._exit(code)
    deadline = time.monotonic() + 20
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            pytest.fail("the forked child hung")
        time.sleep(0.02)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    tool.start()
    assert tool.stop().elapsed_s >= 0  # the parent's tool still works
    tool.close()


def test_devices_helper(fake):
    devs = joulecap.devices()
    assert devs[0]["kind"] == "cpu" and devs[1]["kind"] == "gpu"
    assert devs[1]["uuid"].startswith("GPU-8f3c")

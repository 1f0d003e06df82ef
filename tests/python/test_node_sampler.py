"""The library reading a GPU's series from joulecapd (one sampler per node, docs/daemon.md) treats what the
daemon sends as untrusted: knots that no card could draw lose the GPU with the reason, and a daemon that does not
accept connections does not hold the tool's start.  The daemon is a stand-in (fixtures/fake_joulecapd.py) that
misbehaves on purpose; the real one is tested in tests/c/test_node_sampler.c."""

import os
import subprocess
import sys
import time

import pytest

FAKE = os.path.join(os.path.dirname(__file__), "fixtures", "fake_joulecapd.py")


@pytest.fixture
def fake_daemon(tmp_path, monkeypatch):
    procs = []

    def start(mode):
        sock = tmp_path / "jcd.sock"
        p = subprocess.Popen([sys.executable, FAKE, str(sock), mode, "--after", "1.5"])
        procs.append(p)
        for _ in range(200):
            if sock.exists():
                break
            time.sleep(0.05)
        assert sock.exists(), "the stand-in daemon did not start"
        for var in ("JOULECAP_FAKE", "JOULECAP_NVML_LIBRARY"):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv("JOULECAP_DAEMON", str(sock))
        return sock

    yield start
    for p in procs:
        p.kill()
        p.wait()


def measure(seconds):
    from joulecap import EnergyMeasurementTool

    tool = EnergyMeasurementTool(None, gpu_num=0)
    try:
        tool.start()
        time.sleep(seconds)
        r = tool.stop()
        r.wait()
        return r, tool.devices
    finally:
        tool.close()


def test_a_sound_daemon_is_measured(fake_daemon):
    fake_daemon("ok")
    r, _ = measure(1.0)
    assert r.states["gpu0"] == "ok" and r.coverage["gpu0"] == 1.0
    assert r.gpu_energy_j[0] == pytest.approx(300 * r.elapsed_s, rel=0.1)


@pytest.mark.parametrize("mode", ["jump", "decr"])
def test_implausible_knots_lose_the_gpu_with_the_reason(fake_daemon, mode):
    fake_daemon(mode)
    r, devices = measure(3.0)
    assert r.states["gpu0"] == "lost"
    assert 0 < r.coverage["gpu0"] < 1  # cut at the last plausible knot, never the +1 TJ or the fall
    assert r.gpu_energy_j[0] < 700 * r.elapsed_s
    gpu = [d for d in devices if d.get("uuid", "").startswith("GPU-")][0]
    assert "implausible" in str(gpu), gpu  # the device says why


def test_a_daemon_that_never_accepts_does_not_hold_the_start(fake_daemon):
    fake_daemon("noaccept")
    code = ("import time, joulecap\nt = time.monotonic()\ntry:\n    joulecap.EnergyMeasurementTool(None, gpu_num=0).close()\n"
            "except joulecap.JoulecapError as e:\n    print('error:', e)\nprint('took', time.monotonic() - t)\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=os.environ.copy())
    took = float(p.stdout.split("took")[-1])
    assert took < 20, p.stdout + p.stderr

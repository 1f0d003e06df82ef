"""Power caps from Python (set_power_cap, reset_power_cap, get_power_cap) on the fake NVML.

The test process, the child processes, the guardians and the CLI share one fake GPU through
JOULECAP_FAKE_NVML_STATE, and one journal directory through JOULECAP_STATE_DIR (both in the test's tmp dir).
"""

import os
import signal
import subprocess
import sys
import time
import warnings

import pytest

import joulecap
from joulecap import _paths
from joulecap.errors import Busy, GPUNotFound, InvalidArgument, JoulecapWarning, PermissionDenied, SourceUnavailable


@pytest.fixture
def caps_env(fake_env, tmp_path, monkeypatch):
    def setup(scenario="h100-sweep.scn"):
        fake_env(scenario=scenario, sysfs="norapl", proc="qemu")
        monkeypatch.setenv("JOULECAP_FAKE_NVML_STATE", str(tmp_path / "fake.state"))
        monkeypatch.setenv("JOULECAP_STATE_DIR", str(tmp_path / "journals"))
        monkeypatch.delenv("JOULECAP_CLI", raising=False)
        return dict(os.environ)

    yield setup
    joulecap.restore_power_caps()


def journals(env):
    d = env["JOULECAP_STATE_DIR"]
    return sorted(f for f in os.listdir(d) if not f.endswith(".lock")) if os.path.isdir(d) else []


def cli(env, *args):
    return subprocess.run([_paths.cli_binary(), *args], env=env, capture_output=True, text=True, timeout=30)


def test_importable_from_both_modules():
    import joulecap.profiler as p

    for name in ("set_power_cap", "reset_power_cap", "get_power_cap", "power_cap_profiler", "PowerCapOptimizer"):
        assert getattr(joulecap, name) is getattr(p, name)


def test_set_get_reset_round_trip(caps_env):
    env = caps_env()
    cap = joulecap.get_power_cap(0)
    assert (cap.gpu_num, cap.limit_w, cap.default_limit_w, cap.min_limit_w, cap.max_limit_w) == (0, 700, 700, 200, 700)
    assert cap.enforced_limit_w == 700 and cap.manager == "none" and cap.uuid.startswith("GPU-5e1f0c3a")

    now = joulecap.set_power_cap(0, 420)
    assert now.limit_w == 420 and now.enforced_limit_w == 420
    assert now.manager == "session" and now.owner_pid == os.getpid() and now.saved_limit_w == 700
    assert len(journals(env)) == 1
    assert joulecap.set_power_cap("cuda:0", 300.5).limit_w == 300.5  # same GPU, same session
    assert joulecap.get_power_cap(cap.uuid[:12]).limit_w == 300.5

    r = joulecap.reset_power_cap(0)
    assert r.did == "saved" and r.limit_w == 700 and "before joulecap changed it" in r.message
    after = joulecap.get_power_cap(0)
    assert after.limit_w == 700 and after.manager == "none"
    assert journals(env) == []  # the session is closed with the saved limit back


def test_reset_says_which_limit_it_put_back(caps_env):
    env = caps_env()
    # Untouched GPU at its default: nothing to undo, no warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = joulecap.reset_power_cap(0)
    assert r.did == "default" and r.limit_w == 700 and "default limit" in r.message
    assert journals(env) == []

    # A limit joulecap did not set in this process (a persistent `joulecap cap set`): the default is set, with a
    # warning that says so, until this process ends.
    p = cli(env, "cap", "set", "--gpu", "0", "500")
    assert p.returncode == 0, p.stderr
    with pytest.warns(JoulecapWarning, match="had not changed this limit"):
        r = joulecap.reset_power_cap(0)
    assert r.did == "default" and r.limit_w == 700 and "500 W back" in r.message
    assert joulecap.get_power_cap(0).limit_w == 700
    joulecap.restore_power_caps()
    cap = joulecap.get_power_cap(0)
    assert cap.limit_w == 500 and cap.manager == "persistent"
    assert cli(env, "cap", "reset", "--gpu", "0").returncode == 0
    assert joulecap.get_power_cap(0).limit_w == 700


@pytest.mark.parametrize("watts", [9999, 100, 199.9, 700.5])
def test_out_of_range_states_the_range_and_changes_nothing(caps_env, watts):
    env = caps_env()
    with pytest.raises(InvalidArgument, match="it accepts 200 W to 700 W"):
        joulecap.set_power_cap(0, watts)
    cap = joulecap.get_power_cap(0)
    assert cap.limit_w == 700 and cap.manager == "none" and journals(env) == []


@pytest.mark.parametrize("bad", [0, -5, float("nan"), "lots", None, True])
def test_bad_cap_values(caps_env, bad):
    caps_env()
    with pytest.raises(InvalidArgument, match="watts"):
        joulecap.set_power_cap(0, bad)


def test_gpu_selection_errors(caps_env):
    caps_env()
    with pytest.raises(GPUNotFound, match="GPU"):
        joulecap.get_power_cap(3)
    with pytest.raises(GPUNotFound):
        joulecap.set_power_cap(3, 300)
    for sel in (None, "all", [0, 1]):
        with pytest.raises(InvalidArgument, match="one GPU|need a GPU"):
            joulecap.set_power_cap(sel, 300)


def test_no_permission_says_what_gives_it_before_any_change(caps_env):
    env = caps_env("h100-sweep-no-permission.scn")
    assert joulecap.get_power_cap(0).limit_w == 700  # reading needs nothing
    with pytest.raises(PermissionDenied, match="CAP_SYS_ADMIN") as e:
        joulecap.set_power_cap(0, 400)
    assert "root" in str(e.value)
    with pytest.raises(PermissionDenied):
        joulecap.reset_power_cap(0)
    cap = joulecap.get_power_cap(0)
    assert cap.limit_w == 700 and cap.manager == "none" and journals(env) == []


CHILD = """
import sys, time, joulecap
joulecap.set_power_cap(0, float(sys.argv[1]))
print("ready", flush=True)
time.sleep(60)
"""


def _child_with_cap(env, watts=300):
    p = subprocess.Popen([sys.executable, "-c", CHILD, str(watts)], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    if line.strip() != "ready":
        p.kill()
        raise AssertionError("child did not start: %s %s" % (line, p.stderr.read()))
    return p


def _wait_limit(watts, timeout=1.0):
    t0 = time.monotonic()
    while True:
        now = joulecap.get_power_cap(0).limit_w
        waited = time.monotonic() - t0
        if now == watts or waited > timeout:
            return now, waited
        time.sleep(0.005)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_cap_restored_when_the_process_is_stopped(caps_env, sig):
    env = caps_env()
    p = _child_with_cap(env, 300)
    try:
        cap = joulecap.get_power_cap(0)
        assert cap.limit_w == 300 and cap.manager == "session" and cap.owner_pid == p.pid
        # A second process asking for the GPU gets a clear error naming the owner.
        with pytest.raises(Busy, match=str(p.pid)):
            joulecap.set_power_cap(0, 400)
        os.kill(p.pid, sig)
        now, waited = _wait_limit(700.0)
        assert now == 700.0, "limit still %g W %.2f s after %s" % (now, waited, sig.name)
        assert waited < 1.0
    finally:
        p.kill()
        p.wait(10)
    # The guardian restores the limit first and removes the journal after (the journal must outlive the
    # restore), so the GPU reads "stale" for a moment after the limit is back: wait for the release too.
    t0 = time.monotonic()
    while True:
        cap = joulecap.get_power_cap(0)
        if (cap.manager == "none" and journals(env) == []) or time.monotonic() - t0 > 1.0:
            break
        time.sleep(0.005)
    assert cap.manager == "none" and journals(env) == []
    if sig == signal.SIGINT:
        assert "KeyboardInterrupt" in p.stderr.read()  # the Python exit path (atexit), not only the guardian


def test_restore_power_caps_puts_everything_back(caps_env):
    env = caps_env("h100x2-sweep.scn")
    joulecap.set_power_cap(0, 400)
    joulecap.set_power_cap(1, 500)
    assert len(journals(env)) == 2
    joulecap.restore_power_caps()
    assert [joulecap.get_power_cap(g).limit_w for g in (0, 1)] == [700, 700]
    assert journals(env) == []


def _zombie_or_gone(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def test_guardian_killed_next_set_fails_with_the_limit_back(caps_env):
    caps_env()
    joulecap.set_power_cap(0, 300)
    uuid = joulecap.get_power_cap(0).uuid
    guardian = joulecap.caps._joulecap.cap_get(uuid)["guardian_pid"]
    os.kill(guardian, signal.SIGKILL)
    t0 = time.monotonic()
    while not _zombie_or_gone(guardian) and time.monotonic() - t0 < 2:
        time.sleep(0.005)
    assert joulecap.get_power_cap(0).limit_w == 300  # nobody has put it back yet
    with pytest.raises(SourceUnavailable, match="guardian .* died"):
        joulecap.set_power_cap(0, 250)
    cap = joulecap.get_power_cap(0)
    assert cap.limit_w == 700 and cap.manager == "none"  # put back by this process, at once
    # The next call opens a new session with a new guardian.
    assert joulecap.set_power_cap(0, 250).limit_w == 250
    joulecap.restore_power_caps()
    assert joulecap.get_power_cap(0).limit_w == 700

"""Power caps from Python through joulecapd (docs/daemon.md) on the fake NVML: set_power_cap takes a lease on
the daemon's socket instead of starting a guardian, the limit comes back when the process dies, and what is
returned and logged says that the daemon was used.

The daemon is the bundled joulecapd (joulecap/bin/), started on a socket in the test's tmp dir; it and the test
share one fake GPU through JOULECAP_FAKE_NVML_STATE."""

import logging
import os
import pwd
import signal
import socket
import subprocess
import sys
import time

import pytest

import joulecap
from joulecap import _paths
from joulecap.errors import Busy


@pytest.fixture
def daemon(fake_env, tmp_path, monkeypatch):
    exe = os.environ.get("JC_DAEMON") or _paths.daemon_binary()
    if not exe:
        pytest.skip("this install has no joulecapd (joulecap/bin/joulecapd)")
    fake_env(scenario="h100-sweep.scn", sysfs="norapl", proc="qemu")
    monkeypatch.setenv("JOULECAP_FAKE_NVML_STATE", str(tmp_path / "fake.state"))
    monkeypatch.setenv("JOULECAP_STATE_DIR", str(tmp_path / "direct"))  # must stay unused
    run = tmp_path / "run"
    run.mkdir(mode=0o755)
    sock = run / "joulecapd.sock"
    conf = tmp_path / "joulecapd.conf"
    conf.write_text("allow_user %d\n" % os.getuid())  # root always may; a developer's own uid too
    log = open(tmp_path / "joulecapd.log", "w")
    p = subprocess.Popen([exe, "--foreground", "--socket", str(sock), "--state-dir", str(tmp_path / "state"),
                          "--config", str(conf)], stdout=log, stderr=log, start_new_session=True)
    t0 = time.monotonic()
    while True:
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(str(sock))
            break
        except OSError:
            if p.poll() is not None or time.monotonic() - t0 > 10:
                raise AssertionError("joulecapd did not start: %s" % (tmp_path / "joulecapd.log").read_text())
            time.sleep(0.01)
    monkeypatch.setenv("JOULECAP_DAEMON_SOCKET", str(sock))
    yield dict(os.environ)
    joulecap.restore_power_caps()
    p.send_signal(signal.SIGTERM)
    assert p.wait(10) == 0
    log.close()
    assert not os.path.exists(tmp_path / "direct") or os.listdir(tmp_path / "direct") == []


def test_set_power_cap_is_a_lease_of_this_process(daemon, caplog):
    caplog.set_level(logging.INFO, logger="joulecap")
    cap = joulecap.set_power_cap(0, 300)
    assert cap.limit_w == 300 and cap.manager == "session" and cap.owner_pid == os.getpid()
    assert cap.owner_user == pwd.getpwuid(os.getuid()).pw_name
    assert cap.via.startswith("joulecapd (") and daemon["JOULECAP_DAEMON_SOCKET"] in cap.via
    assert "via joulecapd (" in caplog.text
    r = joulecap.reset_power_cap(0)
    assert r.did == "saved" and r.limit_w == 700 and "via joulecapd (" in r.message
    assert joulecap.get_power_cap(0).manager == "none"


CHILD = """
import sys, time, joulecap
joulecap.set_power_cap(0, float(sys.argv[1]))
print("ready", flush=True)
time.sleep(60)
"""


def test_lease_ends_when_the_process_is_killed(daemon):
    p = subprocess.Popen([sys.executable, "-c", CHILD, "300"], env=daemon, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready", p.stderr.read()
        cap = joulecap.get_power_cap(0)
        assert cap.limit_w == 300 and cap.owner_pid == p.pid and cap.via.startswith("joulecapd")
        with pytest.raises(Busy, match="leased by user"):
            joulecap.set_power_cap(0, 400)
        t0 = time.monotonic()
        os.kill(p.pid, signal.SIGKILL)
        while joulecap.get_power_cap(0).limit_w != 700 and time.monotonic() - t0 < 1:
            time.sleep(0.002)
        assert joulecap.get_power_cap(0).limit_w == 700
    finally:
        p.kill()
        p.wait(10)

"""joulecapd --metrics scraped by a real Prometheus server, and per-job energy from EnergyMeasurementTool.

The daemon is the bundled joulecapd (or JC_DAEMON) on the fake NVML (one H100 at a constant 300 W) and a fake
sysfs with moving RAPL counters; Prometheus is Debian's ``prometheus``, started here on a loopback port with a
1 s scrape interval and its own data directory, killed at the end.  Without a ``prometheus`` binary the
Prometheus case is skipped, unless JC_REQUIRE_PROMETHEUS=1 (CI), where it fails.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

import joulecap
from joulecap import _paths

UUID0 = "GPU-8f3c2a1e-5b7d-4c9e-a0f1-2d3e4b5c6a7f"
LAG_S = 5.0  # JCD_ENERGY_LAG_S: energy counters are exported as they were this long before the scrape


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url, timeout=5.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


class Daemon:
    """joulecapd on a private socket and a loopback port; start() and stop() may be repeated (same state)."""

    def __init__(self, tmp_path, metrics=True):
        self.exe = os.environ.get("JC_DAEMON") or _paths.daemon_binary()
        if not self.exe:
            pytest.skip("this install has no joulecapd (joulecap/bin/joulecapd)")
        out = subprocess.run([self.exe, "--version"], capture_output=True, text=True).stdout
        if metrics and "libmicrohttpd" not in out.replace("libmicrohttpd missing", ""):
            if os.environ.get("JC_REQUIRE_PROMETHEUS") == "1":
                pytest.fail("JC_REQUIRE_PROMETHEUS=1 but joulecapd was built without libmicrohttpd: " + out)
            pytest.skip("joulecapd was built without libmicrohttpd: " + out.strip())
        run = tmp_path / "run"
        run.mkdir(mode=0o755, exist_ok=True)
        self.sock = run / "joulecapd.sock"
        self.state = tmp_path / "state"
        self.conf = tmp_path / "joulecapd.conf"
        self.conf.write_text("allow_user %d\n" % os.getuid())
        self.log_path = tmp_path / "joulecapd.log"
        self.port = free_port() if metrics else None
        self.metrics = metrics
        self.p = None

    def start(self):
        args = [self.exe, "--foreground", "--socket", str(self.sock), "--state-dir", str(self.state), "--config",
                str(self.conf)]
        if self.metrics:
            args += ["--metrics", "127.0.0.1:%d" % self.port]
        self.log = open(self.log_path, "a")
        self.p = subprocess.Popen(args, stdout=self.log, stderr=self.log, start_new_session=True)
        t0 = time.monotonic()
        while True:
            try:
                if self.metrics:
                    http_get(self.url, timeout=1)
                else:
                    with socket.socket(socket.AF_UNIX) as s:
                        s.connect(str(self.sock))
                break
            except OSError:
                if self.p.poll() is not None or time.monotonic() - t0 > 15:
                    raise AssertionError("joulecapd did not start: %s" % self.log_path.read_text())
                time.sleep(0.02)
        self.started = time.monotonic()

    @property
    def url(self):
        return "http://127.0.0.1:%d/metrics" % self.port

    def stop(self, sig=signal.SIGTERM):
        if self.p and self.p.poll() is None:
            self.p.send_signal(sig)
            rc = self.p.wait(15)
            if sig == signal.SIGTERM:
                assert rc == 0, self.log_path.read_text()
        self.p = None
        self.log.close()

    def value(self, name, want):
        text = http_get(self.url)
        for line in text.splitlines():
            if line.startswith(name + "{") and want in line:
                return float(line.rsplit(" ", 1)[1])
        return None


@pytest.fixture
def daemon_env(fake_env, tmp_path, monkeypatch):
    env = fake_env(scenario="h100-constant-300w.scn", sysfs="intel-2socket", proc="xeon-8480")
    monkeypatch.setenv("JOULECAP_FAKE_NVML_STATE", str(tmp_path / "fake.state"))  # shared with the daemon
    monkeypatch.setenv("JOULECAP_STATE_DIR", str(tmp_path / "direct"))
    for var in ("JOULECAP_JOB", "SLURM_JOB_ID", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(var, raising=False)
    return env


@pytest.fixture
def daemon(daemon_env, tmp_path, monkeypatch):
    d = Daemon(tmp_path)
    d.start()
    monkeypatch.setenv("JOULECAP_DAEMON_SOCKET", str(d.sock))
    yield d
    d.stop()


class Prometheus:
    def __init__(self, tmp_path, target_port):
        exe = shutil.which("prometheus")
        if not exe:
            if os.environ.get("JC_REQUIRE_PROMETHEUS") == "1":
                pytest.fail("JC_REQUIRE_PROMETHEUS=1 but there is no prometheus on PATH (apt-get install prometheus)")
            pytest.skip("no prometheus on PATH (Debian: apt-get install prometheus)")
        self.port = free_port()
        conf = tmp_path / "prometheus.yml"
        # honor_labels: the job label of joulecap_job_gpu_energy_joules_total is joulecapd's, not the target's.
        conf.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: joulecapd\n    honor_labels: true\n"
            "    static_configs:\n      - targets: ['127.0.0.1:%d']\n" % target_port
        )
        self.log_path = tmp_path / "prometheus.log"
        self.log = open(self.log_path, "w")
        self.p = subprocess.Popen(
            [exe, "--config.file=%s" % conf, "--storage.tsdb.path=%s" % (tmp_path / "prometheus-data"),
             "--web.listen-address=127.0.0.1:%d" % self.port, "--log.level=warn"],
            stdout=self.log, stderr=self.log, start_new_session=True, cwd=str(tmp_path))
        t0 = time.monotonic()
        while True:
            try:
                http_get("http://127.0.0.1:%d/-/ready" % self.port, timeout=1)
                break
            except OSError:
                if self.p.poll() is not None or time.monotonic() - t0 > 30:
                    raise AssertionError("prometheus did not start: %s" % self.log_path.read_text())
                time.sleep(0.1)

    def query(self, promql):
        url = "http://127.0.0.1:%d/api/v1/query?%s" % (self.port, urllib.parse.urlencode({"query": promql}))
        r = json.loads(http_get(url))
        assert r["status"] == "success", r
        return r["data"]["result"]

    def scalar(self, promql):
        res = self.query(promql)
        assert len(res) == 1, (promql, res, self.log_path.read_text())
        return float(res[0]["value"][1])

    def close(self):
        self.p.terminate()
        try:
            self.p.wait(15)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait(5)
        self.log.close()


def sleep_until(t):
    d = t - time.monotonic()
    if d > 0:
        time.sleep(d)


def test_prometheus_rate_and_increase_across_a_restart(daemon, tmp_path):
    prom = Prometheus(tmp_path, daemon.port)
    try:
        sel = 'joulecap_gpu_energy_joules_total{UUID="%s"}' % UUID0
        # A few scrapes after the counter moves (it lags LAG_S): rate over 5 s is the fake GPU's 300 W.
        sleep_until(daemon.started + LAG_S + 8)
        w = prom.scalar("rate(%s[5s])" % sel)
        print("rate(%s[5s]) = %.1f W (fake GPU: 300 W)" % (sel, w))
        assert w == pytest.approx(300, rel=0.05)
        # The same series, with the labels that join dcgm-exporter's and the target's.
        res = prom.query(sel)
        labels = res[0]["metric"]
        assert labels["gpu"] == "0" and labels["modelName"] == "NVIDIA H100 80GB HBM3"
        assert labels["pci_bus_id"] == "00000000:19:00.0" and labels["Hostname"] == socket.gethostname()
        assert labels["job"] == "joulecapd" and labels["instance"] == "127.0.0.1:%d" % daemon.port
        assert prom.query('joulecap_cpu_energy_joules_total{source="rapl"}'), "no RAPL CPU counter"
        assert prom.scalar('joulecap_device_up{kind="gpu",state="ok"}') == 1
        # Restart: SIGTERM, 2 s down, the same port.  Scraped through, the counter continues with the energy
        # used while the daemon was down (from the GPU's own counter), so increase() is the energy used.
        sleep_until(daemon.started + LAG_S + 16)
        daemon.stop()
        time.sleep(2)
        daemon.start()
        sleep_until(daemon.started + LAG_S + 4)
        inc = prom.scalar("increase(%s[20s])" % sel)
        print("increase(%s[20s]) across a restart = %.0f J (300 W x 20 s = 6000 J)" % (sel, inc))
        assert inc == pytest.approx(6000, rel=0.05)
        assert prom.scalar("resets(%s[60s])" % sel) == 0
        w = prom.scalar("rate(%s[5s])" % sel)
        print("rate(...[5s]) %.0f s after the restart = %.1f W" % (time.monotonic() - daemon.started, w))
        assert w == pytest.approx(300, rel=0.05)
        # Prometheus saw the daemon go down and come back.
        assert prom.scalar('min_over_time(up{job="joulecapd"}[30s])') == 0
    finally:
        prom.close()


def test_energy_measurement_tool_reports_its_job(daemon, monkeypatch):
    monkeypatch.setenv("JOULECAP_JOB", "pytest job 1")
    tool = joulecap.EnergyMeasurementTool(None, gpu_num=0)
    tool.start("outer")
    time.sleep(0.3)
    tool.start("inner")  # nested: counted once
    time.sleep(0.3)
    tool.stop("inner")
    time.sleep(0.3)
    outer = tool.stop("outer")
    with tool.window("second") as w:
        time.sleep(0.5)
    tool.close()
    expect = outer.gpu_energy_j[0] + w.result.gpu_energy_j[0]
    got = daemon.value("joulecap_job_gpu_energy_joules_total", 'job="pytest job 1"')
    print("job total at joulecapd: %.3f J; windows of the tool: %.3f J" % (got, expect))
    assert got == pytest.approx(expect, rel=0.02)
    text = http_get(daemon.url)
    assert re.search(r'joulecap_job_gpu_energy_joules_total\{job="pytest job 1",user="[^"]+",gpu="0",UUID="%s"'
                     % UUID0, text)


def test_no_job_name_no_report(daemon):
    with joulecap.EnergyMeasurementTool(None, gpu_num=0) as tool:
        with tool.window():
            time.sleep(0.2)
    assert "joulecap_job_gpu_energy_joules_total{" not in http_get(daemon.url)


def test_a_daemon_without_metrics_never_fails_the_measurement(daemon_env, tmp_path, monkeypatch):
    d = Daemon(tmp_path, metrics=False)
    d.start()
    try:
        monkeypatch.setenv("JOULECAP_DAEMON_SOCKET", str(d.sock))
        monkeypatch.setenv("JOULECAP_JOB", "j")
        tool = joulecap.EnergyMeasurementTool(None, gpu_num=0)
        for _ in range(3):
            with tool.window() as w:
                time.sleep(0.1)
            assert w.result.gpu_energy_j[0] > 0
        tool.close()
        assert tool._ctx._enabled is False  # NOT_SUPPORTED: it stopped trying
    finally:
        d.stop()

"""Progress on long work: the profiler's progress line (Python and `joulecap profile`), `--live` of `joulecap run`
and `monitor`; each on a terminal only.  Terminals are pseudo-terminals here (pty), as a person's would be."""

import csv
import io
import os
import pty
import select
import subprocess
import sys
import time

import pytest

import joulecap
from joulecap._paths import cli_binary
from joulecap._progress import ProgressLine

from conftest import SCENARIOS


class Tty(io.StringIO):
    def isatty(self):
        return True


def _on_pty(argv, env, timeout=30):
    """Runs argv with stdout and stderr on a pseudo-terminal; returns (exit code, everything written)."""
    master, slave = pty.openpty()
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r, _, _ = select.select([master], [], [], 0.2)
        if r:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        elif p.poll() is not None:
            break
    os.close(master)
    return p.wait(timeout=10), out.decode(errors="replace")


def test_progress_line_plain_and_quiet(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # the plain line, as without tqdm
    s = Tty()
    line = ProgressLine("work", total=10, stream=s, min_interval=0)
    line.update(1.0, "trial 1 at 700 W")
    line.update(2.5, lambda: "trial 2 at 650 W")
    line.close()
    text = s.getvalue()
    assert text.startswith("\rwork: 1.0 / 10 s | trial 1 at 700 W") and "\rwork: 2.5 / 10 s | trial 2 at 650 W" in text
    assert text.endswith("\r")  # cleared
    quiet = io.StringIO()  # not a terminal: nothing
    line = ProgressLine("work", total=10, stream=quiet, min_interval=0)
    line.update(1.0, "x")
    line.close()
    assert quiet.getvalue() == ""


def test_progress_line_uses_tqdm_when_installed():
    pytest.importorskip("tqdm")  # scripts/test.sh installs it
    s = Tty()
    line = ProgressLine("joulecap profiler, GPU 0", total=20, stream=s, min_interval=0)
    line.update(5.0, "trial 3 at 600 W | best so far 650 W")
    line.close()
    assert "joulecap profiler, GPU 0" in s.getvalue() and "5.0/20 s" in s.getvalue()
    assert "trial 3 at 600 W | best so far 650 W" in s.getvalue()


def _sweep_env(fake_env, tmp_path, monkeypatch):
    env = fake_env(scenario="h100-sweep.scn", sysfs="norapl", proc="qemu")
    monkeypatch.setenv("JOULECAP_FAKE_NVML_STATE", str(tmp_path / "fake.state"))
    monkeypatch.setenv("JOULECAP_STATE_DIR", str(tmp_path / "journals"))
    return env


class Step:
    """A step of 20 ms, a stand-in for a GPU job (steps_on_gpu=True).  It spins rather than sleeps: a sleep's
    wake-up jitter made the first trial too noisy to end early, and it took the whole budget."""

    def __call__(self, x):
        end = time.perf_counter() + 0.02
        while time.perf_counter() < end:
            pass
        return x


def test_profiler_progress_line_shows_trial_cap_time_and_best(fake_env, tmp_path, monkeypatch, capsys):
    torch = pytest.importorskip("torch")
    _sweep_env(fake_env, tmp_path, monkeypatch)
    monkeypatch.setenv("COLUMNS", "200")  # tqdm fits the line to the width: wide enough for the whole text
    data = [torch.zeros(1)] * 2
    try:
        out = tmp_path / "profile.csv"
        joulecap.power_cap_profiler(Step(), data, 0, caps_w=[700, 500], time_budget_s=2, steps_on_gpu=True,
                                    progress=True, out_file=str(out))
        err = capsys.readouterr().err
        # each trial the profiler ran (a noisy first trial can take the whole budget) is on the line in turn
        with open(out, newline="") as f:
            tried = [float(r["cap_w"]) for r in csv.DictReader(f) if r["row"] == "trial"]
        assert tried[:1] == [700.0], tried
        assert "joulecap profiler, GPU 0" in err and "best so far" in err and "/2 s" in err
        for k, cap in enumerate(tried, 1):
            assert "trial %d at %g W" % (k, cap) in err, (k, cap, err[-400:])
        # Not a terminal (pytest's capture) and not asked: nothing.
        joulecap.power_cap_profiler(Step(), data, 0, caps_w=[700, 500], time_budget_s=2, steps_on_gpu=True)
        assert "trial" not in capsys.readouterr().err
    finally:
        joulecap.restore_power_caps()


def test_cli_live_power_readout_on_a_terminal_only(fake_env):
    env = fake_env()
    cli = cli_binary()
    code, out = _on_pty([cli, "run", "--live", "--", "sleep", "1.3"], env)
    assert code == 0
    live = [seg for seg in out.split("\r") if seg.startswith("  live")]
    assert live, out
    assert "GPU 0 300 W" in live[-1] and "total" in live[-1] and "Energy of: sleep 1.3" in out
    p = subprocess.run([cli, "run", "--live", "--", "sleep", "0.3"], env=env, capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 0 and "live" not in p.stderr  # stderr is a pipe: no readout
    code, out = _on_pty([cli, "monitor", "--live", "-i", "0.2", "-o", os.devnull, "--", "sleep", "1.2"], env)
    assert code == 0 and any(seg.startswith("  live") and "GPU 0 300 W" in seg for seg in out.split("\r")), out


def test_cli_profile_progress_on_a_terminal_only(fake_env):
    env = fake_env()
    cli = cli_binary()
    sweep = str(SCENARIOS / "h100-sweep.csv")
    code, out = _on_pty([cli, "profile", "--simulate", sweep, "--time-budget", "10"], env)
    assert code == 0
    lines = [seg for seg in out.split("\r") if seg.startswith("  profiling: trial")]
    assert lines and lines[0].startswith("  profiling: trial 1 at 700 W | 0.0 / 10 s simulated"), out
    assert any("best so far" in seg for seg in lines) and "recommended cap" in out
    p = subprocess.run([cli, "profile", "--simulate", sweep, "--time-budget", "10"], env=env, capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 0 and "profiling: trial" not in p.stderr

"""A new user's first hour: the installed CLI on a fake GPU (`--fake`), its help and docs, and scripts/example.sh."""

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from joulecap import _paths

REPO = Path(__file__).resolve().parents[2]


def console_script():
    script = shutil.which("joulecap", path=os.path.dirname(sys.executable))
    if script is None:
        pytest.skip("the console script is not installed beside this interpreter")
    return script


def clean_env(tmp_path, **extra):
    """No JOULECAP_* of the caller's, no XDG_RUNTIME_DIR: private state goes under tmp_path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOULECAP_") and k != "XDG_RUNTIME_DIR"}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    env["TMPDIR"] = str(tmp_path)
    env.update(extra)
    return env


def run(args, env, timeout=60):
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)


def test_wheel_ships_scenarios_and_docs():
    scenarios = _paths.fake_scenarios_dir()
    assert scenarios and os.path.isfile(os.path.join(scenarios, "h100-constant-300w.scn"))
    assert os.path.isfile(os.path.join(scenarios, "h100-sweep.csv"))  # named by h100-sweep.scn
    docs = _paths.docs_dir()
    assert docs and os.path.isfile(os.path.join(docs, "cli.md")) and os.path.isfile(os.path.join(docs, "fake-nvml.md"))


def test_fake_h100_info(tmp_path):
    out = run([console_script(), "--fake", "h100", "info"], clean_env(tmp_path))
    assert out.returncode == 0, out.stderr
    assert "GPU 0: NVIDIA H100 80GB HBM3" in out.stdout
    assert "JOULECAP_FAKE=h100" in out.stdout


def test_fake_env_variable_in_python(tmp_path):
    code = "import joulecap; c = joulecap.get_power_cap(0); print(c.name, c.via)"
    out = run([sys.executable, "-c", code], clean_env(tmp_path, JOULECAP_FAKE="h100-sweep"))
    assert out.returncode == 0, out.stderr
    assert "H100" in out.stdout and "direct NVML" in out.stdout


def test_fake_caps_stay_private(tmp_path):
    """As root as well: the journals of a fake GPU go to its private folder, not to /var/lib/joulecap."""
    env = clean_env(tmp_path)
    script = console_script()
    var_lib = Path("/var/lib/joulecap")
    before = sorted(p.name for p in var_lib.iterdir()) if var_lib.is_dir() else None
    out = run([script, "--fake", "h100-sweep", "cap", "set", "300"], env)
    assert out.returncode == 0, out.stderr
    out = run([script, "--fake", "h100-sweep", "cap", "get", "--json"], env)
    assert out.returncode == 0, out.stderr
    import json

    got = json.loads(out.stdout)
    assert got["gpus"][0]["limit_w"] == 300
    root = tmp_path / ("joulecap-fake-%d" % os.geteuid())
    assert got["state_dir"] == str(root / "h100-sweep" / "caps")
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    after = sorted(p.name for p in var_lib.iterdir()) if var_lib.is_dir() else None
    assert after == before
    assert run([script, "--fake", "h100-sweep", "cap", "reset"], env).returncode == 0


def test_help_lists_every_environment_variable(tmp_path):
    """Every JOULECAP_* variable the C sources read is in `joulecap --help`."""
    names = set()
    for folder in ("src", "fake", "cli", "daemon", "python/ext"):
        for path in (REPO / folder).rglob("*.c"):
            names.update(re.findall(r'getenv\("(JOULECAP_[A-Z_]+)"\)', path.read_text(errors="replace")))
    assert {"JOULECAP_NVML_LIBRARY", "JOULECAP_FAKE", "JOULECAP_STATE_DIR"} <= names
    out = run([console_script(), "--help"], clean_env(tmp_path))
    assert out.returncode == 0
    missing = [n for n in sorted(names) if n not in out.stdout]
    assert not missing, "not in joulecap --help: %s" % missing
    assert "joulecap help" in out.stdout


def test_help_topics_are_the_installed_docs(tmp_path):
    script = console_script()
    out = run([script, "help"], clean_env(tmp_path))
    assert out.returncode == 0
    assert _paths.docs_dir() in out.stdout
    for topic in ("cli", "python", "fake-nvml", "caps"):
        assert re.search(r"^  %s\s" % re.escape(topic), out.stdout, re.M), out.stdout
    out = run([script, "help", "fake-nvml"], clean_env(tmp_path))
    assert out.returncode == 0 and out.stdout.startswith("# The fake NVML library")
    out = run([script, "help", "run"], clean_env(tmp_path))  # a command's own help still comes first
    assert out.returncode == 0 and "Usage: joulecap run" in out.stdout


def test_monitor_writes_rows_to_stdout_without_o(tmp_path):
    out = run([console_script(), "--fake", "h100", "monitor", "-q", "-i", "0.1", "--", "sleep", "0.5"],
              clean_env(tmp_path))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("elapsed_s,cpu_energy_kwh,") and len(lines) >= 4


def test_example_output_folder_is_ignored():
    assert "joulecap-example/" in (REPO / ".gitignore").read_text().split()


# scripts/example.sh against a stub virtual environment whose python logs what it is asked to do.
STUB_PYTHON = """#!/bin/sh
echo "$*" >> "$STUB_LOG"
exit 0
"""


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_example_sh_installs_only_when_sources_change(tmp_path):
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "example.sh", repo / "scripts" / "example.sh")
    (repo / "src").mkdir()
    (repo / "src" / "a.c").write_text("int a;\n")
    (repo / "pyproject.toml").write_text("[project]\n")
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    py = venv / "bin" / "python"
    py.write_text(STUB_PYTHON)
    py.chmod(0o755)
    log = tmp_path / "log"
    env = dict(os.environ, JOULECAP_VENV=str(venv), STUB_LOG=str(log))

    def example():
        log.write_text("")
        p = subprocess.run(["bash", str(repo / "scripts" / "example.sh"), "--quick"], capture_output=True,
                           text=True, env=env, cwd=repo, timeout=60)
        assert p.returncode == 0, p.stderr
        return p.stdout, log.read_text()

    out, calls = example()
    assert "-m pip install -q ." in calls and "-m joulecap.example --quick" in calls
    assert "Installing joulecap" in out
    # The last lines say how to run the installed command-line tool.
    assert "%s/bin/joulecap info" % venv in out and "--fake h100" in out

    out, calls = example()
    assert "pip install" not in calls, calls
    assert "up to date" in out and "-m joulecap.example --quick" in calls

    (repo / "src" / "a.c").write_text("int a, b;\n")  # a changed source: installed again
    out, calls = example()
    assert "-m pip install -q ." in calls

    (repo / "tests").mkdir()
    (repo / "tests" / "test_x.py").write_text("")  # not part of the package
    out, calls = example()
    assert "pip install" not in calls

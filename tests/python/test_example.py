"""`python -m joulecap.example`: the README's built-in example (needs torch; CI installs it)."""

import csv
import subprocess
import sys

import pytest


def test_example_quick_run(fake_env, tmp_path):
    pytest.importorskip("torch")
    env = fake_env(sysfs="norapl", proc="qemu")  # no RAPL here: the CPU value is an estimate, and says why
    out = tmp_path / "out"
    p = subprocess.run(
        [sys.executable, "-m", "joulecap.example", "--out", str(out), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert p.returncode == 0, p.stderr
    text = p.stdout
    import torch

    if not torch.cuda.is_available():
        assert "No GPU" in text and "CPU only" in text
    assert "epoch 1" in text and "total" in text
    assert "Estimates" in text
    cpu_line = [line for line in text.splitlines() if line.strip().startswith("CPU: estimate")]
    assert cpu_line and "RAPL" in cpu_line[0]  # the estimate and why
    with open(out / "snippets.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0][:2] == ["elapsed_s", "cpu_energy_kwh"] and len(rows) == 2
    assert rows[1][rows[0].index("window")] == "epoch 1"
    with open(out / "async.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0][0] == "elapsed_s" and len(rows) >= 2
    # A picture next to each CSV, and its path printed (matplotlib is installed for the tests).
    for name in ("async.png", "layers.png", "power_caps.png"):
        assert (out / name).stat().st_size > 10_000 and str(out / name) in text, name


def test_example_without_torch_says_how_to_get_it(tmp_path):
    code = "import sys; sys.modules['torch'] = None; from joulecap.example import main; main(['--out', sys.argv[1]])"
    p = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    assert "pip install" in p.stderr and "torch" in p.stderr

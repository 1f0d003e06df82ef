"""joulecap.plot and `joulecap plot`: each kind of picture drawn from a fixture CSV, checked in the file written
(size, format) and in matplotlib's objects (axes, lines, shaded spans, labels), not only that nothing raised.

Fixtures (tests/python/fixtures/, made by joulecap itself on fake GPUs): async.csv + snippets.csv (two GPUs, the
first a 650/131 W square wave, the second lost at 1.7 s; three windows, the second partial), monitor.csv
(`joulecap --fake h100 monitor`), profile.csv (the profiler on the simulator with h100-sweep.csv: 413 W chosen),
layers.csv (the example's layer-wise CSV), run-a.csv and run-b.csv (`joulecap --fake h100 run -o`).
"""

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import joulecap
from joulecap import plots

matplotlib = pytest.importorskip("matplotlib")  # scripts/test.sh installs it: this never skips in CI

FIX = Path(__file__).resolve().parent / "fixtures"


def _png_size(path):
    import matplotlib.image as mpimg

    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    h, w = mpimg.imread(str(path)).shape[:2]
    return w, h


def _span_labels(ax):
    return [p.get_label() for p in ax.patches if not p.get_label().startswith("_")]


def _legend_texts(ax):
    leg = ax.get_legend()
    return [t.get_text() for t in leg.get_texts()] if leg else []


def test_detect_tells_each_csv():
    expect = {"async.csv": "timeseries", "monitor.csv": "timeseries", "snippets.csv": "snippets",
              "profile.csv": "profile", "layers.csv": "layers", "run-a.csv": "run"}
    for name, kind in expect.items():
        assert plots.detect(plots.read(FIX / name)) == kind, name


def test_time_series_with_windows_and_a_lost_gpu(tmp_path):
    out = tmp_path / "ts.png"
    fig = joulecap.plot(FIX / "async.csv", FIX / "snippets.csv", out=out)  # the snippet CSV is recognised
    w, h = _png_size(out)
    assert out.stat().st_size > 40_000 and w > 800 and h > 800
    axes = fig.get_axes()
    assert [a.get_ylabel() for a in axes] == ["power (W)", "energy since start (J)", "utilisation (%)",
                                              "temperature (°C)"]
    power = axes[0]
    labels = [ln.get_label() for ln in power.get_lines()]
    assert labels == ["CPU (from energy)", "GPU 0", "GPU 1"]
    # GPU 0's square wave: 131 and 650 W; GPU 1's line stops where it was lost (empty cells are gaps).
    y0 = [v for v in power.get_lines()[1].get_ydata() if v == v]
    assert min(y0) == pytest.approx(131) and max(y0) == pytest.approx(650)
    y1 = list(power.get_lines()[2].get_ydata())
    assert y1[0] == pytest.approx(300) and y1[-1] != y1[-1]  # NaN at the end
    # The lost stretch is shaded on every panel, named once; the three windows, the partial ones hatched.
    assert "GPU 1 lost" in _span_labels(power) and "windows (snippets.csv)" in _span_labels(power)
    for ax in axes:
        lost = [p for p in ax.patches if p.get_facecolor()[:3] == matplotlib.colors.to_rgb("#8c1c13")]
        assert lost, ax.get_ylabel()
        x0 = min(p.get_x() for p in lost)
        assert 1.5 <= x0 <= 1.8  # the fake GPU 1 was lost at 1.7 s of the series
    names = [t.get_text() for t in power.texts]
    assert names == ["epoch 1", "epoch 2 (partial)", "epoch 3 (partial)"]
    hatched = [p for p in power.patches if p.get_hatch() == "//"]
    assert len(hatched) == 2
    assert set(_legend_texts(power)) >= {"GPU 0", "GPU 1", "GPU 1 lost", "windows (snippets.csv)"}


def test_monitor_csv_as_svg(tmp_path):
    out = tmp_path / "mon.svg"
    fig = joulecap.plot(FIX / "monitor.csv", out=out)
    root = ET.parse(out).getroot()
    assert root.tag.endswith("svg") and out.stat().st_size > 20_000
    assert len(fig.get_axes()) == 4  # power, energy, utilisation, temperature (GPU temperature is read)
    gpu = [ln for ln in fig.get_axes()[0].get_lines() if ln.get_label() == "GPU 0"][0]
    assert set(v for v in gpu.get_ydata()) == {300.0}


def test_profile_shows_trials_intervals_model_and_the_two_caps(tmp_path):
    out = tmp_path / "profile.png"
    fig = joulecap.plot(FIX / "profile.csv", out=out)
    assert out.stat().st_size > 40_000
    axes = fig.get_axes()
    assert [a.get_ylabel() for a in axes] == ["time per step (s)", "energy per step (J)", "ED2P per step"]
    for ax in axes:
        # Each trial with its 90% interval (an errorbar container), the model, the default and the chosen cap.
        assert len(ax.containers) == 1 and len(ax.containers[0].lines[0].get_xdata()) == 17  # 17 trials
        bars = ax.containers[0].lines[2][0].get_segments()
        assert all(seg[1][1] > seg[0][1] for seg in bars)  # intervals of some width
        verticals = {ln.get_label(): ln.get_xdata()[0] for ln in ax.get_lines() if len(set(ln.get_xdata())) == 1}
        assert verticals["default limit 700 W"] == 700 and verticals["chosen 413 W"] == 413
        assert "model (pooled per cap, linear between)" in [ln.get_label() for ln in ax.get_lines()]
    box = axes[1].texts[0].get_text()
    assert box.startswith("413 W: energy per step -21.4% ± 1.2%, time per step +4.1% ± 1.1% vs 700 W (90%)")


def test_profile_that_kept_the_default_says_so(tmp_path):
    rows = (FIX / "profile.csv").read_text().splitlines()
    import csv

    rec = next(csv.DictReader(rows[:1] + [r for r in rows if r.startswith("recommended")]))
    rec.update(cap_w="700", measurably_better="0", energy_saving="0", energy_saving_ci="0",
               warnings="the model is on cpu, not on GPU 0 (the GPU profiled): ...")
    path = tmp_path / "kept.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=rows[0].split(","))
        w.writeheader()
        for r in csv.DictReader(rows):
            w.writerow(rec if r["row"] == "recommended" else r)
    fig = joulecap.plot(path, out=tmp_path / "kept.png")
    ax = fig.get_axes()[1]
    assert "kept 700 W: no cap measurably better" in [ln.get_label() for ln in ax.get_lines()]
    assert ax.texts[0].get_text() == ("default kept: no cap measurably better than 700 W\n"
                                      "warning: the model is on cpu, not on GPU 0 (the GPU profiled)")


def test_layers_as_html(tmp_path):
    out = tmp_path / "layers.html"
    fig = joulecap.plot(FIX / "layers.csv", out=out, top=5)
    text = out.read_text()
    assert text.startswith("<!DOCTYPE html>") and "<svg" in text and "</html>" in text and len(text) > 30_000
    assert "<title>layers.csv: the 5 layers with the most energy, and the rest of the run</title>" in text
    ax = fig.get_axes()[0]
    ticks = [t.get_text() for t in ax.get_yticklabels()]
    assert ticks[:6] == ["3 Conv2d (train)", "9 Linear (train)", "2 MaxPool2d (train)", "4 ReLU (train)",
                         "5 MaxPool2d (train)", "(5 more layers)"]
    assert ticks[6:] == ["(outside) forward (train)", "(outside) backward (train)", "(outside) other (train)",
                         "(outside) not sampled (infer)"]
    fwd, bwd, rest = ax.containers  # forward, backward, outside: one bar per row each
    assert len(fwd) == len(bwd) == len(rest) == 10
    # Forward and backward apart: the Linear layer's backward is larger than its forward.
    assert bwd[1].get_width() > fwd[1].get_width() > 0
    assert [t.get_text() for t in ax.get_legend().get_texts()][:2] == ["forward", "backward"]


def test_several_runs_side_by_side(tmp_path):
    out = tmp_path / "runs.png"
    fig = joulecap.plot(FIX / "run-a.csv", FIX / "run-b.csv", FIX / "monitor.csv", out=out)
    assert out.stat().st_size > 20_000
    bars_ax, power_ax = fig.get_axes()
    assert [t.get_text() for t in bars_ax.get_xticklabels()] == ["run-a.csv", "run-b.csv", "monitor.csv"]
    cpu, gpu = bars_ax.containers
    # run-b slept twice as long as run-a on the 300 W fake: about twice the GPU energy.
    assert gpu[1].get_height() == pytest.approx(2 * gpu[0].get_height(), rel=0.1)
    assert [ln.get_label() for ln in power_ax.get_lines()] == ["monitor.csv"]


def test_profiles_side_by_side(tmp_path):
    fig = joulecap.plot(FIX / "profile.csv", FIX / "profile.csv", out=tmp_path / "p.svg")
    ax = fig.get_axes()[0]
    assert len([ln for ln in ax.get_lines() if ln.get_label() == "profile.csv"]) == 2


def test_bad_input_is_refused_with_the_reason(tmp_path):
    odd = tmp_path / "odd.csv"
    odd.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="cannot tell which joulecap CSV"):
        joulecap.plot(odd)
    with pytest.raises(ValueError, match=r"\.png, \.svg, \.pdf or \.html"):
        joulecap.plot(FIX / "monitor.csv", out=tmp_path / "x.jpeg")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        joulecap.plot(tmp_path / "missing.csv")


def test_without_matplotlib_the_error_names_the_extra():
    code = ("import sys; sys.modules['matplotlib'] = None; import joulecap\n"
            "try:\n    joulecap.plot(sys.argv[1])\nexcept ImportError as e:\n    print(e)\n")
    p = subprocess.run([sys.executable, "-c", code, str(FIX / "monitor.csv")], capture_output=True, text=True,
                       timeout=60)
    assert "pip install 'joulecap[plot]'" in p.stdout, p.stdout + p.stderr


def test_the_cli_plots_and_finds_its_python(tmp_path):
    out = tmp_path / "cli.png"
    # The console script: it sets JOULECAP_PYTHON to its own interpreter for the C tool.
    env = {k: v for k, v in os.environ.items() if k != "JOULECAP_PYTHON"}
    p = subprocess.run([sys.executable, "-m", "joulecap._cli", "plot", str(FIX / "profile.csv"), "-o", str(out)],
                       capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == str(out) and _png_size(out)[0] > 500
    # Without -o: FILE.png beside the CSV.
    src = tmp_path / "layers.csv"
    src.write_bytes((FIX / "layers.csv").read_bytes())
    p = subprocess.run([sys.executable, "-m", "joulecap._cli", "plot", str(src)], capture_output=True, text=True,
                       timeout=120, env=env)
    assert p.returncode == 0 and (tmp_path / "layers.png").stat().st_size > 10_000
    # A Python that cannot be run, or that has no joulecap: exit 3 and what to do.
    p = subprocess.run([sys.executable, "-m", "joulecap._cli", "plot", str(src)], capture_output=True, text=True,
                       timeout=60, env=dict(env, JOULECAP_PYTHON=str(tmp_path / "no-python")))
    assert p.returncode == 3 and "JOULECAP_PYTHON" in p.stderr and "joulecap[plot]" in p.stderr
    p = subprocess.run([sys.executable, "-m", "joulecap._cli", "plot", str(tmp_path / "odd.csv")],
                       capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode == 2 and "does not exist" in p.stderr
    p = subprocess.run([sys.executable, "-m", "joulecap._cli", "plot", "--help"], capture_output=True, text=True,
                       timeout=60, env=env)
    assert p.returncode == 0 and "power-cap profile" in p.stdout

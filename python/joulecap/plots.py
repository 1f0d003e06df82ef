"""Pictures of joulecap's CSV files: ``joulecap.plot(...)`` and ``python -m joulecap.plots`` (``joulecap plot``).

    import joulecap
    joulecap.plot("async.csv", snippets="snippets.csv", out="power.png")   # time series, windows shaded
    joulecap.plot("caps.csv", out="caps.svg")                               # power-cap profile
    joulecap.plot("layers.csv", out="layers.html")                          # layer-wise energy
    joulecap.plot("run1.csv", "run2.csv", "run3.csv", out="runs.png")       # several runs side by side

Which picture is drawn follows from the CSV's header (``detect``): a time series (the asynchronous tool's and
``joulecap monitor``'s CSV), a snippet CSV (``EnergyMeasurementTool``'s windows), a power-cap profile
(``power_cap_profiler``'s ``out_file``), a layer-wise CSV, or a run summary (``joulecap run -o x.csv``).  Several
files make a comparison; a time series given with a snippet CSV has the windows shaded.  The file type follows
from ``out``'s suffix: ``.png``, ``.svg``, ``.pdf`` or ``.html`` (the SVG in a page of its own, no script).

matplotlib is an optional dependency (``pip install 'joulecap[plot]'``); the drawing uses matplotlib's object
API (``Figure``), not pyplot, so it opens no window and leaves pyplot's state alone.
"""

from __future__ import annotations

import argparse
import csv
import html
import io
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from ._common import J_PER_KWH
from .carbon import Carbon, resolve as _resolve_carbon

__all__ = ["plot", "detect", "KINDS", "main"]

#: What ``detect`` can tell a CSV to be.
KINDS = ("timeseries", "snippets", "profile", "layers", "run")

# z of a 90% two-sided interval: the profiler's intervals (docs/profiler.md).
Z90 = 1.645
# Health states drawn as shaded stretches: not whole values (docs/python.md, "Device health").
_BAD_STATES = {"degraded": ("#f2c14e", 0.18), "stalled": ("#e4572e", 0.22), "lost": ("#8c1c13", 0.25)}
PathLike = Union[str, "os.PathLike[str]"]


def _matplotlib() -> Any:
    try:
        import matplotlib  # noqa: F401
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(
            "joulecap.plot needs matplotlib, an optional dependency: pip install 'joulecap[plot]'"
        ) from None
    return Figure


# --------------------------------------------------------------------------------------------------------------
# Reading


@dataclass
class Table:
    """A CSV as read: its path, header and rows (dicts of strings)."""

    path: str
    columns: List[str]
    rows: List[Dict[str, str]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return os.path.basename(self.path)

    def num(self, col: str) -> List[float]:
        return [_float(r.get(col, "")) for r in self.rows]

    def devices(self, suffix: str) -> List[str]:
        """Device prefixes (``cpu``, ``gpu0``, ...) that have a column ``<dev><suffix>``, CPU first."""
        devs = [c[: -len(suffix)] for c in self.columns if c.endswith(suffix) and _is_device(c[: -len(suffix)])]
        return sorted(devs, key=lambda d: (d != "cpu", len(d), d))


def _is_device(prefix: str) -> bool:
    return prefix == "cpu" or (prefix.startswith("gpu") and prefix[3:].isdigit())


def _float(text: str) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return float("nan")


def read(path: PathLike) -> Table:
    p = os.fspath(path)
    try:
        with open(p, newline="") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            cols = list(reader.fieldnames or [])
    except FileNotFoundError:
        raise FileNotFoundError("joulecap.plot: %s does not exist" % p) from None
    if not cols:
        raise ValueError("joulecap.plot: %s is empty (no header row)" % p)
    return Table(p, cols, rows)


def detect(table: Table) -> str:
    """Which joulecap CSV this is (one of KINDS), from its header; ValueError when none."""
    c = set(table.columns)
    if {"row", "cap_w", "time_per_step_s"} <= c:
        return "profile"
    if {"layer", "phase", "time_s"} <= c:
        return "layers"
    if {"window", "start_s", "elapsed_s"} <= c:
        return "snippets"
    if "elapsed_s" in c and any(x.endswith("_util_pct") or x.endswith("_power_w") for x in c):
        return "timeseries"
    if "elapsed_s" in c and any(x.endswith("_energy_j") or x.endswith("_energy_kwh") for x in c):
        return "run"
    raise ValueError(
        "joulecap.plot: cannot tell which joulecap CSV %s is (its header: %s); it draws the time series of the "
        "asynchronous tool and `joulecap monitor`, snippet CSVs, power-cap profiles, layer-wise CSVs and "
        "`joulecap run -o` summaries" % (table.path, ", ".join(table.columns[:8]) + (", ..." if len(c) > 8 else ""))
    )


# --------------------------------------------------------------------------------------------------------------
# Drawing helpers


def _label(dev: str) -> str:
    return "CPU" if dev == "cpu" else "GPU " + dev[3:]


def _state_spans(times: Sequence[float], states: Sequence[str]) -> List[Tuple[float, float, str]]:
    """Stretches [t0, t1) in which a device's state is one of _BAD_STATES."""
    spans: List[Tuple[float, float, str]] = []
    cur: Optional[Tuple[float, str]] = None
    for i, (t, s) in enumerate(zip(times, states)):
        if cur is not None and s != cur[1]:
            spans.append((cur[0], t, cur[1]))
            cur = None
        if cur is None and s in _BAD_STATES:
            cur = (times[i - 1] if i > 0 else t, s)  # the row's value covers the interval before it
    if cur is not None and times:
        spans.append((cur[0], times[-1], cur[1]))
    return spans


def _power_from_energy(t: Sequence[float], e_j: Sequence[float]) -> List[float]:
    out = [float("nan")]
    for i in range(1, len(t)):
        dt = t[i] - t[i - 1]
        de = e_j[i] - e_j[i - 1]
        out.append(de / dt if dt > 0 and math.isfinite(de) else float("nan"))
    return out


def _save(fig: Any, out: Optional[PathLike], title: str) -> Optional[str]:
    if out is None:
        return None
    path = os.fspath(out)
    ext = os.path.splitext(path)[1].lower()
    if ext in (".html", ".htm"):
        buf = io.StringIO()
        fig.savefig(buf, format="svg", bbox_inches="tight")
        svg = buf.getvalue()
        svg = svg[svg.index("<svg"):] if "<svg" in svg else svg
        page = (
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>%s</title>\n"
            "<style>body{font-family:sans-serif;margin:2em;color:#222}figure{margin:0}</style></head>\n"
            "<body><h1>%s</h1>\n<figure>\n%s\n</figure>\n<p>Drawn by joulecap.plot.</p></body></html>\n"
            % (html.escape(title), html.escape(title), svg)
        )
        with open(path, "w", encoding="utf-8") as f:
            f.write(page)
    elif ext in (".png", ".svg", ".pdf"):
        fig.savefig(path, dpi=120, bbox_inches="tight")
    else:
        raise ValueError("joulecap.plot: cannot write %s: give out a .png, .svg, .pdf or .html name" % path)
    return path


def _new_figure(rows: int, cols: int = 1, height: float = 2.6, width: float = 9.0, sharex: bool = True) -> Tuple[Any, Any]:
    Figure = _matplotlib()
    fig = Figure(figsize=(width, max(3.0, height * rows)), layout="constrained")
    axes = fig.subplots(rows, cols, sharex=sharex, squeeze=False)
    return fig, axes


# --------------------------------------------------------------------------------------------------------------
# Time series


def _windows(snip: Table, offset_s: float) -> List[Tuple[float, float, str, bool]]:
    out = []
    cov_cols = [c for c in snip.columns if c.endswith("_coverage")]
    for r in snip.rows:
        s0, el = _float(r.get("start_s", "")), _float(r.get("elapsed_s", ""))
        if not (math.isfinite(s0) and math.isfinite(el)):
            continue
        partial = any(_float(r.get(c, "")) < 1 for c in cov_cols)
        out.append((s0 + offset_s, s0 + offset_s + el, r.get("window", "") or "(unnamed)", partial))
    return out


def _carbon_title(title: str, carbon: Carbon, energy_j: float) -> str:
    """The title, with the kWh, gCO2e and cost of energy_j on a line of its own when an intensity or price is set."""
    if not carbon.is_set or not math.isfinite(energy_j):
        return title
    return title + "\n" + carbon.describe(energy_j)


def _carbon_lines(carbon: Carbon, energy_j: float) -> str:
    """``\n380 gCO2e\n0.12 EUR`` (what is set) for a bar's annotation."""
    out = ""
    g, c = carbon.gco2e(energy_j), carbon.cost(energy_j)
    if g is not None:
        out += "\n%.3g gCO2e" % g
    if c is not None:
        out += "\n%.3g %s" % (c, carbon.currency)
    return out


def _plot_timeseries(ts: Table, snippets: Optional[Table], offset_s: float, title: Optional[str],
                     carbon: Carbon = Carbon()) -> Any:
    t = ts.num("elapsed_s")
    devs = ts.devices("_energy_kwh") or ts.devices("_power_w")
    panels = [("power (W)", "power"), ("energy since start (J)", "energy")]
    if ts.devices("_util_pct"):
        panels.append(("utilisation (%)", "util"))
    if any(any(math.isfinite(v) for v in ts.num(d + "_temp_c")) for d in ts.devices("_temp_c")):
        panels.append(("temperature (°C)", "temp"))
    fig, axes = _new_figure(len(panels))
    axes = [a[0] for a in axes]
    colors = {}
    for k, (ylabel, what) in enumerate(panels):
        ax = axes[k]
        for i, d in enumerate(devs):
            color = "C%d" % i
            colors[d] = color
            e_j = [v * J_PER_KWH for v in ts.num(d + "_energy_kwh")]
            if what == "power":
                y = ts.num(d + "_power_w") if d + "_power_w" in ts.columns else _power_from_energy(t, e_j)
                lab = _label(d) + ("" if d + "_power_w" in ts.columns else " (from energy)")
            elif what == "energy":
                y, lab = e_j, _label(d)
            elif what == "util":
                y, lab = ts.num(d + "_util_pct"), _label(d)
            else:
                y, lab = ts.num(d + "_temp_c"), _label(d)
            if any(math.isfinite(v) for v in y):
                ax.plot(t, y, color=color, label=lab, lw=1.4, drawstyle="steps-pre" if what == "power" else "default")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    # Stretches where a device's values are not whole: shaded on every panel, named once.
    named = set()
    for d in devs:
        col = d + "_state"
        if col not in ts.columns:
            continue
        for a, b, s in _state_spans(t, [r.get(col, "") for r in ts.rows]):
            color, alpha = _BAD_STATES[s]
            for k, ax in enumerate(axes):
                key = (d, s)
                ax.axvspan(a, b, color=color, alpha=alpha, lw=0,
                           label="%s %s" % (_label(d), s) if k == 0 and key not in named else "_nolegend_")
            named.add((d, s))
    if snippets is not None:
        for k, ax in enumerate(axes):
            for j, (a, b, name, partial) in enumerate(_windows(snippets, offset_s)):
                ax.axvspan(a, b, facecolor="#4c72b0", alpha=0.12, hatch="//" if partial else None,
                           edgecolor="#4c72b0" if partial else None, lw=0,
                           label=("windows (%s)" % snippets.name) if k == 0 and j == 0 else "_nolegend_")
                if k == 0:
                    ax.annotate(name + (" (partial)" if partial else ""), xy=((a + b) / 2, 1.0),
                                xycoords=("data", "axes fraction"), ha="center", va="bottom", fontsize=8)
    axes[0].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    axes[-1].set_xlabel("time since start (s)")
    totals, _ = _run_totals(ts, "timeseries")
    fig.suptitle(title or _carbon_title("%s: power, energy%s over time" % (
        ts.name, ", utilisation and temperature" if len(panels) > 2 else ""), carbon,
        sum(v for v in totals.values() if math.isfinite(v))))
    return fig


def _plot_snippets(sn: Table, title: Optional[str], carbon: Carbon = Carbon()) -> Any:
    devs = sn.devices("_energy_kwh")
    names = [r.get("window", "") or "(unnamed)" for r in sn.rows]
    fig, axes = _new_figure(2, height=2.8, sharex=False)
    ax, ax2 = axes[0][0], axes[1][0]
    x = list(range(len(sn.rows)))
    bottom = [0.0] * len(x)
    for i, d in enumerate(devs):
        e = [v * J_PER_KWH if math.isfinite(v) else 0.0 for v in sn.num(d + "_energy_kwh")]
        bars = ax.bar(x, e, bottom=bottom, color="C%d" % i, label=_label(d))
        cov = sn.num(d + "_coverage") if d + "_coverage" in sn.columns else [1.0] * len(x)
        for b, c in zip(bars, cov):
            if math.isfinite(c) and c < 1:
                b.set_hatch("//")
                b.set_edgecolor("black")
        bottom = [a + b for a, b in zip(bottom, e)]
    if carbon.is_set:
        for xi, tot in zip(x, bottom):
            ax.annotate(_carbon_lines(carbon, tot).strip(), (xi, tot), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("energy (J)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    ax2.bar(x, sn.num("elapsed_s"), color="#777")
    ax2.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
    ax2.set_ylabel("time (s)")
    ax2.grid(axis="y", alpha=0.3)
    fig.suptitle(title or _carbon_title("%s: energy per window (hatched: covers only part of the window)" % sn.name,
                                        carbon, sum(bottom)))
    return fig


# --------------------------------------------------------------------------------------------------------------
# Power-cap profile


def _plot_profile(pr: Table, title: Optional[str]) -> Any:
    trials = [r for r in pr.rows if r.get("row") == "trial"]
    rec = next((r for r in pr.rows if r.get("row") == "recommended"), None)
    if not trials:
        raise ValueError("joulecap.plot: %s has no trial rows" % pr.path)
    obj_name = (rec or trials[0]).get("objective_name", "objective")
    caps = [_float(r["cap_w"]) for r in trials]
    tps = [_float(r["time_per_step_s"]) for r in trials]
    eps = [_float(r["energy_per_step_j"]) for r in trials]
    obj = [_float(r["objective"]) for r in trials]
    rse_t = [_float(r.get("rel_se_time", "")) for r in trials]
    rse_p = [_float(r.get("rel_se_power", "")) for r in trials]
    rse_f = [_float(r.get("rel_se_objective", "")) for r in trials]
    steps = [_float(r.get("steps", "")) for r in trials]

    # The model: trials pooled per cap (weighted by steps), linear between caps, as the C profiler's model.
    pooled: Dict[float, List[float]] = {}
    for c, t, e, f, n in zip(caps, tps, eps, obj, steps):
        if not (math.isfinite(t) and n > 0):
            continue
        w = pooled.setdefault(round(c, 1), [0.0, 0.0, 0.0, 0.0])
        w[0] += n
        w[1] += n * t
        w[2] += n * e
        w[3] += n * (f if math.isfinite(f) else 0.0)
    mc = sorted(pooled)
    mt = [pooled[c][1] / pooled[c][0] for c in mc]
    me = [pooled[c][2] / pooled[c][0] for c in mc]
    mf = [pooled[c][3] / pooled[c][0] for c in mc]

    fig, axes = _new_figure(3, height=2.4)
    ax_t, ax_e, ax_f = axes[0][0], axes[1][0], axes[2][0]
    err_t = [Z90 * s * t if math.isfinite(s) else 0.0 for s, t in zip(rse_t, tps)]
    err_e = [Z90 * math.hypot(a if math.isfinite(a) else 0, b if math.isfinite(b) else 0) * e
             for a, b, e in zip(rse_t, rse_p, eps)]
    err_f = [Z90 * s * f if math.isfinite(s) else 0.0 for s, f in zip(rse_f, obj)]
    for ax, y, err, m, lab in ((ax_t, tps, err_t, mt, "time per step (s)"), (ax_e, eps, err_e, me, "energy per step (J)"),
                               (ax_f, obj, err_f, mf, "%s per step" % obj_name.upper())):
        ax.errorbar(caps, y, yerr=err, fmt="o", ms=4, color="C0", ecolor="C0", alpha=0.8, capsize=2,
                    label="trials (90% interval)")
        ax.plot(mc, m, "-", color="C1", lw=1.2, label="model (pooled per cap, linear between)")
        ax.set_ylabel(lab)
        ax.grid(alpha=0.3)
    default_w = _float(rec.get("default_limit_w", "")) if rec else float("nan")
    ref_w = _float(rec.get("reference_cap_w", "")) if rec else float("nan")
    if not math.isfinite(default_w):
        default_w = ref_w if math.isfinite(ref_w) else max(caps)
    cap_w = _float(rec["cap_w"]) if rec else float("nan")
    better = rec is not None and rec.get("measurably_better", "1") != "0"
    for ax in (ax_t, ax_e, ax_f):
        ax.axvline(default_w, color="#555", ls="--", lw=1.2, label="default limit %g W" % default_w)
        if math.isfinite(cap_w):
            ax.axvline(cap_w, color="C2", lw=2.0, alpha=0.8,
                       label=("chosen %g W" % cap_w) if better else ("kept %g W: no cap measurably better" % cap_w))
    ax_f.set_xlabel("power cap (W)")
    ax_t.legend(fontsize=8, loc="best")
    if rec is not None:
        es, esc = _float(rec.get("energy_saving", "")), _float(rec.get("energy_saving_ci", ""))
        sd, sdc = _float(rec.get("slowdown", "")), _float(rec.get("slowdown_ci", ""))
        if math.isfinite(es) and math.isfinite(esc):
            text = ("%g W: energy per step %+.1f%% ± %.1f%%, time per step %+.1f%% ± %.1f%% vs %g W (90%%)"
                    % (cap_w, -100 * es, 100 * esc, 100 * sd, 100 * sdc, ref_w if math.isfinite(ref_w) else default_w))
        else:
            text = "%g W" % cap_w
        if not better:
            text = "default kept: no cap measurably better than %g W" % default_w
        if rec.get("warnings"):
            text += "\nwarning: " + rec["warnings"].split(" | ")[0].split(":")[0]
        ax_e.text(0.01, 0.97, text, transform=ax_e.transAxes, va="top", fontsize=8,
                  bbox=dict(boxstyle="round", fc="white", ec="#aaa", alpha=0.9))
    fig.suptitle(title or "%s: power-cap profile, objective %s" % (pr.name, obj_name))
    return fig


# --------------------------------------------------------------------------------------------------------------
# Layer-wise


def _plot_layers(ly: Table, top: int, title: Optional[str]) -> Any:
    devs = sorted({c.split("_", 1)[0] for c in ly.columns if c.endswith("_forward_energy_j") and _is_device(c.split("_", 1)[0])},
                  key=lambda d: (d != "cpu", d))

    def total(r: Dict[str, str], part: str) -> float:
        s = 0.0
        for d in devs:
            v = _float(r.get("%s_%s_energy_j" % (d, part), ""))
            s += v if math.isfinite(v) else 0.0
        return s

    layers = [r for r in ly.rows if r.get("type") != "outside"]
    outside = [r for r in ly.rows if r.get("type") == "outside"]
    layers.sort(key=lambda r: -_float(r.get("energy_j", "0")))
    shown = layers[:top]
    rest = layers[top:]
    labels, fwd, bwd, other = [], [], [], []
    for r in shown:
        labels.append("%s %s (%s)" % (r.get("layer", ""), r.get("type", ""), r.get("phase", "")))
        f, b = total(r, "forward"), total(r, "backward")
        fwd.append(f)
        bwd.append(b)
        other.append(max(0.0, _float(r.get("energy_j", "0")) - f - b))
    if rest:
        labels.append("(%d more layers)" % len(rest))
        fwd.append(sum(total(r, "forward") for r in rest))
        bwd.append(sum(total(r, "backward") for r in rest))
        other.append(0.0)
    n_layers = len(labels)
    for r in outside:
        labels.append("%s (%s)" % (r.get("layer", ""), r.get("phase", "")))
        fwd.append(0.0)
        bwd.append(0.0)
        other.append(_float(r.get("energy_j", "0")))
    fig, axes = _new_figure(1, height=max(3.0, 0.32 * len(labels) + 1.2), sharex=False)
    ax = axes[0][0]
    y = list(range(len(labels)))[::-1]
    ax.barh(y, fwd, color="C0", label="forward")
    ax.barh(y, bwd, left=fwd, color="C3", label="backward")
    ax.barh(y, other, left=[a + b for a, b in zip(fwd, bwd)], color="#999",
            label="outside the layers (optimizer, data, idle, not sampled)")
    ax.set_yticks(y, labels, fontsize=8)
    if outside:
        ax.axhline(y[n_layers - 1] - 0.5, color="#444", lw=0.8)
    ax.set_xlabel("energy (J, %s)" % " + ".join(_label(d) for d in devs))
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    fig.suptitle(title or "%s: the %d layers with the most energy, and the rest of the run" % (ly.name, min(top, len(layers))))
    return fig


# --------------------------------------------------------------------------------------------------------------
# Several runs side by side


def _run_totals(tb: Table, kind: str) -> Tuple[Dict[str, float], float]:
    """Energy per device (J) and time (s) of a whole file: a run summary, the snippet windows summed, or a time
    series' last row."""
    devs = tb.devices("_energy_kwh") or tb.devices("_energy_j")
    out: Dict[str, float] = {}
    if kind == "timeseries":
        last = tb.rows[-1] if tb.rows else {}
        for d in devs:
            out[d] = _float(last.get(d + "_energy_kwh", "")) * J_PER_KWH
        return out, _float(last.get("elapsed_s", ""))
    secs = sum(v for v in tb.num("elapsed_s") if math.isfinite(v))
    for d in devs:
        if d + "_energy_j" in tb.columns:
            vals = tb.num(d + "_energy_j")
        else:
            vals = [v * J_PER_KWH for v in tb.num(d + "_energy_kwh")]
        out[d] = sum(v for v in vals if math.isfinite(v))
    return out, secs


def _plot_compare(tables: List[Table], kinds: List[str], title: Optional[str], carbon: Carbon = Carbon()) -> Any:
    if all(k == "profile" for k in kinds):
        fig, axes = _new_figure(1, height=4.0)
        ax = axes[0][0]
        for i, tb in enumerate(tables):
            trials = [r for r in tb.rows if r.get("row") == "trial"]
            pts = sorted((_float(r["cap_w"]), _float(r["objective"])) for r in trials)
            ref = pts[-1][1] if pts else float("nan")
            ax.plot([c for c, _ in pts], [f / ref for _, f in pts], "o-", color="C%d" % i, ms=3, label=tb.name)
            rec = next((r for r in tb.rows if r.get("row") == "recommended"), None)
            if rec:
                ax.axvline(_float(rec["cap_w"]), color="C%d" % i, ls=":", lw=1.5)
        ax.set_xlabel("power cap (W)")
        ax.set_ylabel("objective / objective at the highest cap")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.suptitle(title or "power-cap profiles side by side (dotted: each one's recommendation)")
        return fig
    fig, axes = _new_figure(2 if any(k == "timeseries" for k in kinds) else 1, height=3.2, sharex=False)
    ax = axes[0][0]
    totals = [_run_totals(tb, k) for tb, k in zip(tables, kinds)]
    devs = sorted({d for e, _ in totals for d in e}, key=lambda d: (d != "cpu", d))
    x = list(range(len(tables)))
    bottom = [0.0] * len(x)
    for i, d in enumerate(devs):
        vals = [e.get(d, 0.0) if math.isfinite(e.get(d, float("nan"))) else 0.0 for e, _ in totals]
        ax.bar(x, vals, bottom=bottom, color="C%d" % i, label=_label(d))
        bottom = [a + b for a, b in zip(bottom, vals)]
    for xi, (tot, (_, secs)) in enumerate(zip(bottom, totals)):
        ax.annotate("%.4g J\n%.3g s" % (tot, secs) + _carbon_lines(carbon, tot), (xi, tot), ha="center",
                    va="bottom", fontsize=8)
    ax.set_xticks(x, [tb.name for tb in tables], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("energy (J)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    if len(axes) > 1:
        ax2 = axes[1][0]
        for i, (tb, k) in enumerate(zip(tables, kinds)):
            if k != "timeseries":
                continue
            t = tb.num("elapsed_s")
            total = [0.0] * len(t)
            for d in tb.devices("_energy_kwh"):
                p = tb.num(d + "_power_w") if d + "_power_w" in tb.columns else _power_from_energy(
                    t, [v * J_PER_KWH for v in tb.num(d + "_energy_kwh")])
                total = [a + (b if math.isfinite(b) else 0.0) for a, b in zip(total, p)]
            ax2.plot(t, total, color="C%d" % i, label=tb.name, drawstyle="steps-pre")
        ax2.set_xlabel("time since start (s)")
        ax2.set_ylabel("total power (W)")
        ax2.grid(alpha=0.3)
        ax2.legend(fontsize=8)
    fig.suptitle(title or "%d runs side by side" % len(tables))
    return fig


# --------------------------------------------------------------------------------------------------------------
# The entry point


def plot(
    *files: PathLike,
    out: Optional[PathLike] = None,
    kind: Optional[str] = None,
    snippets: Optional[PathLike] = None,
    offset_s: float = 0.0,
    top: int = 15,
    title: Optional[str] = None,
    carbon: Any = None,
) -> Any:
    """Draws the picture for one or more joulecap CSVs and returns the matplotlib ``Figure``; with ``out``
    (``.png``, ``.svg``, ``.pdf``, ``.html``) it is also written there.

    * ``kind``: ``"timeseries"``, ``"snippets"``, ``"profile"``, ``"layers"``, ``"run"`` or ``"compare"``;
      by default from the header (``detect``) and the number of files.
    * ``snippets``: a snippet CSV whose windows are shaded on a time series (or give both files); a window is
      placed at its ``start_s`` (seconds since that tool was created) + ``offset_s`` on the time series' clock
      (seconds since that tool's ``start``): create both tools together, or give the difference.  Windows whose
      values cover only part of them are hatched.
    * ``top``: layers drawn by name in a layer-wise picture (the rest as one bar, the outside rows apart).
    * ``carbon``: a grid intensity and price (``joulecap.carbon_settings``, a dict of its arguments, False for
      none); default None: ``JOULECAP_GRID_GCO2_PER_KWH`` / ``JOULECAP_PRICE_PER_KWH`` / ``JOULECAP_CARBON_CONFIG``
      where set.  When set, time series, snippet and comparison pictures show kWh, gCO2e and cost of the totals
      (in the title, and on each bar).

    Stretches in which a device's values are not whole (``degraded``, ``stalled``, ``lost`` in its ``_state``
    column) are shaded on every panel of a time series; empty cells are gaps in the lines.
    ImportError (naming ``pip install 'joulecap[plot]'``) without matplotlib; ValueError for a CSV it cannot
    tell, or an ``out`` it cannot write.
    """
    if not files:
        raise ValueError("joulecap.plot: give at least one CSV file")
    _matplotlib()
    carbon = _resolve_carbon(carbon)
    tables = [read(f) for f in files]
    kinds = [detect(t) for t in tables]
    snip = read(snippets) if snippets is not None else None
    if snip is not None and detect(snip) != "snippets":
        raise ValueError("joulecap.plot: snippets=%s is not a snippet CSV (no window column)" % snip.path)
    if snip is None and len(tables) == 2 and sorted(kinds) == ["snippets", "timeseries"]:
        snip = tables[kinds.index("snippets")]
        tables, kinds = [tables[kinds.index("timeseries")]], ["timeseries"]
    if kind is None:
        kind = "compare" if len(tables) > 1 else kinds[0]
    if kind == "compare":
        fig = _plot_compare(tables, kinds, title, carbon)
    elif len(tables) > 1:
        raise ValueError("joulecap.plot: kind=%r draws one file; give one, or kind='compare'" % kind)
    elif kind == "timeseries":
        fig = _plot_timeseries(tables[0], snip, offset_s, title, carbon)
    elif kind == "snippets":
        fig = _plot_snippets(tables[0], title, carbon)
    elif kind == "profile":
        fig = _plot_profile(tables[0], title)
    elif kind == "layers":
        fig = _plot_layers(tables[0], top, title)
    elif kind == "run":
        fig = _plot_compare(tables, kinds, title, carbon)
    else:
        raise ValueError("joulecap.plot: unknown kind %r (known: %s, compare)" % (kind, ", ".join(KINDS)))
    _save(fig, out, fig._suptitle.get_text() if getattr(fig, "_suptitle", None) else "joulecap")
    return fig


def default_out(first: PathLike, ext: str = ".png") -> str:
    """Where a picture of ``first`` goes by default: beside it, same name, ``ext``."""
    return os.path.splitext(os.fspath(first))[0] + ext


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(
        prog="joulecap plot",
        description="Draws a joulecap CSV (time series, snippet windows, power-cap profile, layer-wise, run "
        "summaries; several files side by side) to a PNG, SVG, PDF or HTML file.",
    )
    ap.add_argument("files", nargs="+", metavar="FILE.csv")
    ap.add_argument("-o", "--output", help="out.png, out.svg, out.pdf or out.html (default: FILE.png beside the first file)")
    ap.add_argument("--kind", choices=list(KINDS) + ["compare"], help="the picture (default: from the CSV's header)")
    ap.add_argument("--snippets", help="a snippet CSV whose windows are shaded on the time series")
    ap.add_argument("--offset", type=float, default=0.0, help="seconds added to the windows' start_s (default 0)")
    ap.add_argument("--top", type=int, default=15, help="layers drawn by name (default 15)")
    ap.add_argument("--title")
    ap.add_argument("--grid-intensity", metavar="G", help="gCO2e per kWh of your grid: show gCO2e next to kWh "
                    "(default: $JOULECAP_GRID_GCO2_PER_KWH; nothing is looked up)")
    ap.add_argument("--price", metavar="P", help="price of one kWh: show the cost (default: $JOULECAP_PRICE_PER_KWH)")
    ap.add_argument("--currency", help="the price's currency, e.g. EUR (default: $JOULECAP_CURRENCY)")
    a = ap.parse_args(argv)
    out = a.output or default_out(a.files[0])
    try:
        carbon = _resolve_carbon({"grid_gco2_per_kwh": a.grid_intensity, "price_per_kwh": a.price,
                                  "currency": a.currency})
        plot(*a.files, out=out, kind=a.kind, snippets=a.snippets, offset_s=a.offset, top=a.top, title=a.title,
             carbon=carbon)
    except ImportError as e:
        sys.stderr.write("joulecap plot: %s\n" % e)
        return 3
    except (ValueError, OSError) as e:
        sys.stderr.write("joulecap plot: %s\n" % e)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

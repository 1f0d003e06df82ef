"""Analysis of `bench_core windows` runs (issue 11): window accuracy of the old and new code under the square-wave
load, and the calibration of the new code's uncertainty_j.

    python3 bench/analyze_core11.py DIR... [--json OUT.json] [--bench core11.jsonl]

Each DIR holds, for each run TAG (old, new, or old1, new1, old2, ... when repeated): TAG.windows.tsv, TAG.raw.tsv,
TAG.knots.tsv, TAG.meta.json (written by `bench_core windows ... DIR/TAG`) and TAG.sched (the load's
on-intervals).  Runs of one code are pooled.

References for a window [t0, t1] (both independent of the method under test):
  two-level  P_on * t_on + P_off * t_off, P_on and P_off fitted by least squares to the raw poller's 100 ms
             steps given the schedule (the issue-2 reference: bench/results/HISTORY.md "Core (issue 2)").  Its
             error is that of a two-level model of a real GEMM load (ramps, overshoot), per step.
  step       the counter's own steps, timed by the raw poller (reads 3-6 ms apart), with the energy inside the
             step at each edge spread by the schedule (on-time at P_on, off-time at P_off) instead of linearly.
             Whole steps inside the window are exact; only the shape inside the two edge steps is modelled.  This
             is the reference the uncertainty is calibrated against: what the uncertainty describes (where the
             steps fall against the edges and the power around them) is exactly what it leaves to the method.
The uncertainty is recomputed offline from the library's knots with the formula of src/meter/meter.c
(edge_var) for other values of EDGE_SPREAD, to find the smallest that gives 95% coverage at every length."""
import argparse
import json
import math
import os
import sys

import numpy as np

LENGTHS = [0.03, 0.1, 0.3, 1.0]
COARSE_SPAN_S = 0.15  # src/meter/meter.c
EDGE_SPREAD = 0.75  # src/meter/meter.c
TARGET_LENGTHS = [0.1, 0.3, 1.0]


def load_tsv(path):
    with open(path) as f:
        head = f.readline().rstrip("\n").split("\t")
        rows = [line.rstrip("\n").split("\t") for line in f if line.strip()]
    return head, rows


def load_run(d, tag):
    p = lambda s: os.path.join(d, f"{tag}.{s}")
    if not os.path.exists(p("windows.tsv")):
        return None
    head, rows = load_tsv(p("windows.tsv"))
    col = {h: i for i, h in enumerate(head)}
    w = {
        "len": np.array([float(r[col["len_s"]]) for r in rows]),
        "t0": np.array([int(r[col["t0_ns"]]) for r in rows], dtype=np.int64),
        "t1": np.array([int(r[col["t1_ns"]]) for r in rows], dtype=np.int64),
        "e": np.array([float(r[col["energy_j"]]) for r in rows]),
        "u": np.array([float(r[col["uncertainty_j"]]) for r in rows]),
        "cov": np.array([float(r[col["coverage"]]) for r in rows]),
        "health": np.array([int(r[col["health"]]) for r in rows]),
        "status": np.array([int(r[col["status"]]) for r in rows]),
        "sig0": np.array([float(r[col["sig0_ms"]]) for r in rows]) * 1e6,
        "sig1": np.array([float(r[col["sig1_ms"]]) for r in rows]) * 1e6,
    }
    _, raw = load_tsv(p("raw.tsv"))
    raw_t = np.array([int(r[0]) for r in raw], dtype=np.int64)
    raw_mj = np.array([int(r[1]) for r in raw], dtype=np.int64)
    _, kn = load_tsv(p("knots.tsv"))
    kt = np.array([int(r[0]) for r in kn], dtype=np.int64)
    kv = np.array([float(r[1]) for r in kn])
    with open(p("meta.json")) as f:
        meta = json.load(f)
    sched = np.loadtxt(p("sched"), dtype=np.int64).reshape(-1, 2)
    return {"w": w, "raw_t": raw_t, "raw_mj": raw_mj, "kt": kt, "kv": kv, "meta": meta, "on": sched}


def on_time(on, a, b):
    """Seconds of [a, b] (ns, arrays) that fall inside the on-intervals."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    lo = np.maximum(on[:, 0][None, :], a[:, None])
    hi = np.minimum(on[:, 1][None, :], b[:, None])
    return np.clip(hi - lo, 0, None).sum(axis=1) * 1e-9


def raw_steps(run):
    """Steps of the counter seen by the raw poller: instant (middle of the bracket), value (J), bracket (ns)."""
    t, mj = run["raw_t"], run["raw_mj"]
    ch = np.nonzero(mj[1:] != mj[:-1])[0] + 1
    inst = t[ch - 1] + (t[ch] - t[ch - 1]) // 2
    return inst, mj[ch] * 1e-3, t[ch] - t[ch - 1]


def fit_two_level(run, inst, val, shift_ns=0):
    on = run["on"]
    span_a, span_b = on[0, 0], on[-1, 1]
    s = inst - shift_ns
    a, b = s[:-1], s[1:]
    de = val[1:] - val[:-1]
    keep = (a >= span_a) & (b <= span_b)
    a, b, de = a[keep], b[keep], de[keep]
    ton = on_time(on, a, b)
    toff = (b - a) * 1e-9 - ton
    X = np.stack([ton, toff], axis=1)
    coef, *_ = np.linalg.lstsq(X, de, rcond=None)
    resid = de - X @ coef
    return coef[0], coef[1], float(np.sqrt(np.mean(resid**2))), int(len(de))


def step_reference(run, inst, val, p_on, p_off, t):
    """Cumulative energy at t (ns array) from the raw steps, spread inside a step by the schedule."""
    on = run["on"]
    i = np.searchsorted(inst, t, side="right")  # inst[i-1] <= t < inst[i]
    ok = (i >= 1) & (i < len(inst))
    i = np.clip(i, 1, len(inst) - 1)
    a, b = inst[i - 1], inst[i]
    ton_ab = on_time(on, a, b)
    w_ab = p_on * ton_ab + p_off * ((b - a) * 1e-9 - ton_ab)
    ton_at = on_time(on, a, t)
    w_at = p_on * ton_at + p_off * ((t - a) * 1e-9 - ton_at)
    frac = np.where(w_ab > 0, w_at / np.where(w_ab > 0, w_ab, 1), 0)
    e = val[i - 1] + (val[i] - val[i - 1]) * frac
    return np.where(ok, e, np.nan)


def edge_value(run, t):
    """An edge read at t: the raw read nearest t (the seed's and Zeus's method)."""
    rt = run["raw_t"]
    i = np.clip(np.searchsorted(rt, t), 1, len(rt) - 1)
    j = np.where(np.abs(rt[i - 1] - t) < np.abs(rt[i] - t), i - 1, i)
    return run["raw_mj"][j] * 1e-3


def linear_value(run, t):
    """A plain 10 Hz sampler: reads every 100 ms from the first raw read, linear between them."""
    t0 = run["raw_t"][0]
    k = (t - t0) // 100_000_000
    ta = t0 + k * 100_000_000
    tb = ta + 100_000_000
    ea, eb = edge_value(run, ta), edge_value(run, tb)
    return ea + (eb - ea) * (t - ta) / (tb - ta)


def edge_var(kt, kv, t, spread, sigma_t_ns, next_neighbour):
    """Variance (J^2) of the energy interpolated at t: src/meter/meter.c edge_var, vectorised, split into the
    spread term (for EDGE_SPREAD = spread) and the timing term."""
    n = len(kt)
    i = np.searchsorted(kt, t, side="left")  # first knot with t_ns >= t
    valid = (i > 0) & (i < n)
    i = np.clip(i, 1, n - 1)

    def step_power(j):
        j = np.clip(j, 1, n - 1)
        dt = (kt[j] - kt[j - 1]) * 1e-9
        return np.where(dt > 0, (kv[j] - kv[j - 1]) / np.where(dt > 0, dt, 1), 0)

    p = step_power(i)
    swing = 0.05 * np.abs(p)
    prev = np.abs(step_power(i - 1) - p)
    swing = np.where((i >= 2) & (prev > swing), prev, swing)
    if next_neighbour:
        nxt = np.abs(step_power(i + 1) - p)
        swing = np.where((i + 1 < n) & (nxt > swing), nxt, swing)
    lo, hi = kt[i - 1], kt[i]
    span = (hi - lo) * 1e-9
    # meter.c: knots further apart than COARSE_SPAN_S take a swing of at least half the power
    swing = np.where((span > COARSE_SPAN_S) & (swing < 0.5 * np.abs(p)), 0.5 * np.abs(p), swing)
    f = np.where(hi == t, 0.0, (t - lo) / np.maximum(hi - lo, 1))
    sp = spread * swing * span * np.sqrt(np.clip(f * (1 - f), 0, None))
    timing = p * sigma_t_ns * 1e-9
    return np.where(valid, sp**2, 0.0), np.where(valid, timing**2, 0.0)


def interp(kt, kv, t):
    return np.interp(t.astype(np.float64), kt.astype(np.float64), kv)


def cold_start(run, ok, sig0, sig1, seed=1):
    """The first window after a quiet spell (no window for > 10 s, no fast CSV): the library then reads the
    counter about once a second, so the window's start edge falls between a knot up to a second before it and
    the knot of the first step after it (the reader reads that step as soon as the window opens); the rest is
    read every step.  Simulated offline from the run's every-step knots: before each window only every 10th
    knot is kept, at a random phase.  Returns the energies and the uncertainty terms (spread at EDGE_SPREAD 1)."""
    rng = np.random.default_rng(seed)
    w = run["w"]
    kt, kv = run["kt"], run["kv"]
    n = len(w["t0"])
    e, sp, tm = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    for j in np.nonzero(ok)[0]:
        t0, t1 = w["t0"][j], w["t1"][j]
        i_after = np.searchsorted(kt, t0, side="left")  # first knot >= t0: read once the window opened
        if i_after < 12 or i_after >= len(kt) - 2:
            continue
        off = int(rng.integers(0, 10))
        before = np.arange(i_after - 1 - off, -1, -10)[::-1]
        keep = np.concatenate([before, np.arange(i_after, len(kt))])
        mt, mv = kt[keep], kv[keep]
        e[j] = interp(mt, mv, np.array([t1]))[0] - interp(mt, mv, np.array([t0]))[0]
        # the start edge resolves when the knot after it arrives: no step after that one yet
        upto = np.searchsorted(mt, t0, side="left") + 1
        s0, m0 = edge_var(mt[:upto], mv[:upto], np.array([t0]), 1.0, sig0[j], 0)
        s1, m1 = edge_var(mt, mv, np.array([t1]), 1.0, sig1[j], 0)
        sp[j], tm[j] = s0[0] + s1[0], m0[0] + m1[0]
    return e, sp, tm


def knot_placement(run, inst):
    """How the library's knots sit against the steps the raw poller saw, inside the load."""
    on = run["on"]
    a, b = on[0, 0], on[-1, 1]
    kt = run["kt"]
    k = kt[(kt >= a) & (kt <= b)]
    if len(k) < 3:
        return {}
    j = np.clip(np.searchsorted(inst, k), 1, len(inst) - 1)
    j = np.where(np.abs(inst[j - 1] - k) < np.abs(inst[j] - k), j - 1, j)
    off = (k - inst[j]) / 1e6
    gaps = np.diff(k)
    return {"knots": int(len(k)), "raw_steps": int(np.sum((inst >= a) & (inst <= b))),
            "missed_steps": int(np.sum(np.round(gaps / 1e8) - 1)),
            "offset_ms_median": round(float(np.median(off)), 2), "offset_ms_rms": round(float(np.sqrt(np.mean(off**2))), 2),
            "offset_ms_p5_p95": [round(float(np.percentile(off, 5)), 2), round(float(np.percentile(off, 95)), 2)]}


def per_window(run, tag):
    """The run's windows inside the load, with both references, the baselines and the uncertainty's terms."""
    w = run["w"]
    inst, val, bracket = raw_steps(run)
    p_on, p_off, rms, nsteps = fit_two_level(run, inst, val)
    # Does the counter lag the load?  The two-level fit with the steps moved back by a lag, best lag.
    lags = np.arange(-30, 31, 2) * 1_000_000
    fits = [fit_two_level(run, inst, val, int(s))[2] for s in lags]
    on = run["on"]
    span_a, span_b = on[0, 0], on[-1, 1]
    ok = (w["status"] == 0) & (w["t0"] >= span_a) & (w["t1"] <= span_b) & np.isfinite(w["e"])
    t0, t1 = w["t0"], w["t1"]
    L = (t1 - t0) * 1e-9
    ton = on_time(on, t0, t1)
    d = {
        "len": w["len"], "e": w["e"], "u": w["u"], "health": w["health"], "cov": w["cov"],
        "ref2": p_on * ton + p_off * (L - ton),
        "refs": step_reference(run, inst, val, p_on, p_off, t1) - step_reference(run, inst, val, p_on, p_off, t0),
        "edge": edge_value(run, t1) - edge_value(run, t0),
        "lin": linear_value(run, t1) - linear_value(run, t0),
        # linear interpolation between knots put exactly at the raw poller's steps: what any knot placement
        # can reach with linear interpolation on this run (the load's phase against the steps sets it)
        "ideal": interp(inst, val, t1) - interp(inst, val, t0),
    }
    d["ok"] = ok & np.isfinite(d["refs"])
    info = {
        "tag": tag, "p_on_w": round(float(p_on), 1), "p_off_w": round(float(p_off), 1),
        "fit_rms_j_per_step": round(rms, 2), "steps": nsteps, "raw_reads": int(len(run["raw_t"])),
        "bracket_ms_median": round(float(np.median(bracket)) / 1e6, 2),
        "best_lag_ms": float(lags[int(np.argmin(fits))] / 1e6), "meta": run["meta"],
        "knot_placement": knot_placement(run, inst),
    }
    if np.isfinite(w["u"]).any():
        # The knots' timing error as the library had it when each edge was taken (KNOT_SIGMA_NS when it had none).
        sig0 = np.where(w["sig0"] > 0, w["sig0"], 1e6)
        sig1 = np.where(w["sig1"] > 0, w["sig1"], 1e6)
        # Reproduce the library's uncertainty from the knots (EDGE_SPREAD 0.5), with and without the step after.
        best = None
        for nn in (0, 1):
            s0, m0 = edge_var(run["kt"], run["kv"], t0, 0.5, sig0, nn)
            s1, m1 = edge_var(run["kt"], run["kv"], t1, 0.5, sig1, nn)
            u = 1.96 * np.sqrt(s0 + s1 + m0 + m1)
            rel = np.abs(u[ok] - w["u"][ok]) / np.maximum(w["u"][ok], 1e-9)
            share = float(np.mean(rel < 0.01))
            if best is None or share > best[1]:
                best = (nn, share, float(np.median(rel)))
        nn = best[0]
        info["u_reproduced"] = {"next_step_used": nn, "share_within_1pct": round(best[1], 3),
                                "median_rel_diff": round(best[2], 4)}
        s0, m0 = edge_var(run["kt"], run["kv"], t0, 1.0, sig0, nn)
        s1, m1 = edge_var(run["kt"], run["kv"], t1, 1.0, sig1, nn)
        d["spread1"], d["timing"] = s0 + s1, m0 + m1
        d["cold_e"], d["cold_spread1"], d["cold_timing"] = cold_start(run, d["ok"], sig0, sig1)
    return d, info


def pool(tables):
    keys = set.intersection(*(set(t) for t in tables))
    return {k: np.concatenate([t[k] for t in tables]) for k in keys}


def mae(x, ref, m):
    return round(100 * float(np.mean(np.abs(x[m] - ref[m]) / ref[m])), 2)


def summarise(d):
    out = {"lengths": {}}
    has_u = "spread1" in d
    for ln in LENGTHS:
        m = d["ok"] & np.isclose(d["len"], ln)
        if not m.any():
            continue
        e, refs = d["e"][m], d["refs"][m]
        r = {"n": int(m.sum()), "mae_pct_two_level": mae(d["e"], d["ref2"], m), "mae_pct_step": mae(d["e"], d["refs"], m),
             "floor_linear_pct_step": mae(d["ideal"], d["refs"], m),
             "edge_reads_mae_pct_two_level": mae(d["edge"], d["ref2"], m),
             "linear10hz_mae_pct_two_level": mae(d["lin"], d["ref2"], m),
             "step_ref_vs_two_level_mae_pct": mae(d["refs"], d["ref2"], m),
             "mean_energy_j": round(float(np.mean(e)), 1)}
        if has_u:
            u = d["u"][m]
            r["coverage_step"] = round(float(np.mean(np.abs(e - refs) <= u)), 3)
            r["coverage_two_level"] = round(float(np.mean(np.abs(e - d["ref2"][m]) <= u)), 3)
            r["median_u_pct"] = round(100 * float(np.median(u / e)), 2)
            r["median_abs_err_over_u_step"] = round(float(np.median(np.abs(e - refs) / u)), 3)
            r["health_not_ok"] = int(np.sum(d["health"][m] != 0))
            r["coverage_lt_1"] = int(np.sum(d["cov"][m] < 1))
            c = m & np.isfinite(d["cold_e"])
            if c.any():
                uc = 1.96 * np.sqrt(EDGE_SPREAD**2 * d["cold_spread1"][c] + d["cold_timing"][c])
                r["cold_simulated"] = {"n": int(c.sum()), "mae_pct_step": mae(d["cold_e"], d["refs"], c),
                                       "coverage_step": round(float(np.mean(np.abs(d["cold_e"][c] - d["refs"][c]) <= uc)), 3),
                                       "median_u_pct": round(100 * float(np.median(uc / d["cold_e"][c])), 2)}
        out["lengths"][str(ln)] = r
    if has_u:
        spreads = np.round(np.arange(0.05, 4.001, 0.05), 2)
        cal = {}
        for name, ref in (("step", d["refs"]), ("two-level", d["ref2"])):
            cov = {}
            for sp in spreads:
                u = 1.96 * np.sqrt(sp * sp * d["spread1"] + d["timing"])
                cov[float(sp)] = {}
                for ln in LENGTHS:
                    m = d["ok"] & np.isclose(d["len"], ln)
                    cov[float(sp)][ln] = float(np.mean(np.abs(d["e"][m] - ref[m]) <= u[m])) if m.any() else float("nan")

            def smallest(lengths):
                for sp in spreads:
                    if all(cov[float(sp)][ln] >= 0.95 for ln in lengths):
                        return float(sp)
                return None
            cal[name] = {"smallest_spread_100ms_300ms_1s": smallest(TARGET_LENGTHS),
                         "smallest_spread_all_lengths": smallest(LENGTHS),
                         "coverage_at": {str(sp): cov[sp] for sp in (0.3, 0.4, 0.45, 0.5, 0.6, 0.75, 1.0)}}
        out["calibration"] = cal
    return out


def bench_tables(path):
    rows = []
    with open(path) as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except ValueError:
                pass
    for r in rows:
        if r.get("bench") == "card":
            print(f"# card: {r['card']}; {r['date']}; {r['cpus']} CPUs")
    print()
    print("| sampler, default settings | old: % of one core | new: % of one core | old: counter reads/s "
          "| new: counter reads/s | target (new) |")
    print("|---|---|---|---|---|---|")
    names = {"idle": ("no window, no CSV", "<= 1%"), "csv1": ("no window, CSV rows 1 s apart", "<= 1%"),
             "short": ("a 100 ms window every 200 ms", "<= 5%"), "every": ("JC_EVERY_STEP, no window", "-")}
    for mode, (label, target) in names.items():
        c = {r["code"]: r for r in rows if r.get("bench") == "cpu" and r.get("mode") == mode}
        if not c:
            continue
        g = lambda t, k, fmt: fmt.format(c[t][k]) if t in c else "-"
        print(f"| {label} | {g('old', 'cpu_pct_of_one_core', '{:.2f}%')} | {g('new', 'cpu_pct_of_one_core', '{:.2f}%')} "
              f"| {g('old', 'counter_reads_per_s', '{:.1f}')} | {g('new', 'counter_reads_per_s', '{:.1f}')} | {target} |")
    rc = [r for r in rows if r.get("bench") == "readcost"]
    if rc:
        print()
        print("| counter read (new code's process) | CPU ms per read (mean / p50) | wall ms p50 / max |")
        print("|---|---|---|")
        for r in rc:
            if "offset_ms" not in r:
                print(f"| {r['what']} | {r['cpu_pct_of_one_core']:.2f}% of one core | {r['counter_reads']} reads |")
            else:
                what = "back to back" if r["offset_ms"] < 0 else f"{r['offset_ms']:g} ms after a step"
                print(f"| {what} (n={r['n']}) | {r['cpu_ms_mean']:.2f} / {r['cpu_ms_p50']:.2f} | "
                      f"{r['wall_ms_p50']:.2f} / {r['wall_ms_max']:.2f} |")
    x = [r for r in rows if r.get("bench") == "xcheck" and "rep" in r]
    if x:
        print()
        print("| start-up cross-check (new) | counter W | library: integrated vs counter | bench's own integration "
              "(same span / ~2 s) | health |")
        print("|---|---|---|---|---|")
        for r in x:
            lib = f"{r['rel_pct']:+.1f}%" if not r.get("wrapped") else f"wrapped ({r['integrated_j']:.3g} J)"
            print(f"| {r['phase']} #{r['rep']} | {r['counter_w']} | {lib} | {r['bench_rel_pct']:+.1f}% / "
                  f"{r['bench_rel2_pct']:+.1f}% | {r['health']} |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dirs", nargs="+", help="folders of runs (their TAG.* files: old, new, old1, new1, ...)")
    ap.add_argument("--json")
    ap.add_argument("--bench", help="the run's core11.jsonl: CPU and cross-check tables too")
    a = ap.parse_args()
    runs = {"old": [], "new": []}
    infos = []
    for d in a.dirs:
        tags = sorted({f.split(".")[0] for f in os.listdir(d) if f.endswith(".windows.tsv")})
        for tag in tags:
            code = "old" if tag.startswith("old") else "new" if tag.startswith("new") else None
            run = load_run(d, tag) if code else None
            if run is None:
                continue
            try:
                t, info = per_window(run, tag)
            except Exception as e:  # keep the other runs' tables
                print(f"# {d}/{tag}: analysis failed: {e!r}")
                continue
            info["dir"] = d
            info["summary"] = summarise(t)
            runs[code].append(t)
            infos.append(info)
    pooled = {c: summarise(pool(ts)) for c, ts in runs.items() if ts}
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"runs": infos, "pooled": pooled}, f, indent=1, default=float)
    for r in infos:
        kp = r["knot_placement"]
        print(f"# {r['dir']}/{r['tag']}: P_on {r['p_on_w']} W, P_off {r['p_off_w']} W over {r['steps']} steps, fit "
              f"{r['fit_rms_j_per_step']} J RMS/step, raw bracket {r['bracket_ms_median']} ms, counter reads "
              f"{r['meta'].get('reads')}, probes {r['meta'].get('probes')}, unlocks {r['meta'].get('unlocks')}, "
              f"jitter {r['meta'].get('jitter_ms')} ms, health {r['meta'].get('health')}")
        print(f"#   knots vs raw steps: {kp}")
        print("#   MAE (step ref) / linear floor: " + ", ".join(
            f"{k}: {v['mae_pct_step']}/{v['floor_linear_pct_step']}%" for k, v in r["summary"]["lengths"].items()))
        if "u_reproduced" in r:
            print(f"#   uncertainty reproduced offline: {r['u_reproduced']}")
    for c, p in pooled.items():
        if "calibration" in p:
            for name, cal in p["calibration"].items():
                print(f"# {c} pooled, reference {name}: smallest EDGE_SPREAD with >= 95% at 100 ms/300 ms/1 s: "
                      f"{cal['smallest_spread_100ms_300ms_1s']}, at all four: {cal['smallest_spread_all_lengths']}")
            print("#   first window after a quiet spell (simulated), per length: " + "; ".join(
                f"{k}: {v['cold_simulated']}" for k, v in p["lengths"].items() if "cold_simulated" in v))
    if a.bench:
        bench_tables(a.bench)
    print()
    print("| window | MAE old (two-level ref) | MAE new (two-level ref) | MAE old (step ref) | MAE new (step ref) "
          "| linear floor old/new | coverage new (step ref) | coverage new (two-level ref) | median U/E new | n old/new |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for ln in LENGTHS:
        o = pooled.get("old", {}).get("lengths", {}).get(str(ln), {})
        n = pooled.get("new", {}).get("lengths", {}).get(str(ln), {})
        g = lambda d, k, suf="": f"{d[k]}{suf}" if k in d else "-"
        cov = lambda d, k: f"{100 * d[k]:.1f}%" if k in d else "-"
        print(f"| {int(ln * 1000)} ms | {g(o, 'mae_pct_two_level', '%')} | {g(n, 'mae_pct_two_level', '%')} | "
              f"{g(o, 'mae_pct_step', '%')} | {g(n, 'mae_pct_step', '%')} | {g(o, 'floor_linear_pct_step')}/"
              f"{g(n, 'floor_linear_pct_step', '%')} | {cov(n, 'coverage_step')} | {cov(n, 'coverage_two_level')} | "
              f"{g(n, 'median_u_pct', '%')} | {g(o, 'n')}/{g(n, 'n')} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

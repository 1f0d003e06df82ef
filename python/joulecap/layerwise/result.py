"""The result of a layer-wise run: LayerwiseResult, its rows (built from a run by _build_result), the CSV and the
summary table."""

from __future__ import annotations

import csv
import io
import math
from typing import Any, Dict, List, Optional

from .._common import _source_notes
from .attribution import _apply_replay, _extrapolate
from .rows import _OUTSIDE_ORDER, OUTSIDE_BACKWARD, OUTSIDE_LEAD, OUTSIDE_OTHER, PHASES, _Row


class LayerwiseResult:
    """What :meth:`LayerwiseMeasurementTool.stop` returns; the CSV holds the same rows.

    * ``rows``: list of dicts, one per (layer, phase) that ran and one per "outside layers" row, keyed by
      ``columns``; energies in J, times in s.  Every energy column adds up over the rows to ``total_energy_j``.
    * ``total_energy_j``: ``{"cpu": J, "gpu0": J}`` measured for the whole run (start() to stop());
      ``coverage`` the share of the run each covers (below 1: the device stalled or was lost, and ``estimates``
      says so), ``states`` the devices' worst health during the run.
    * ``elapsed_s``, ``mode``, ``clock`` (how layer times were taken and how precise they are), ``replayed``
      (replay mode: the layers run alone and their power), ``sources`` and ``estimates`` as for
      :class:`~joulecap.Measurement`.
    * ``to_pandas()``, ``summary(top=15)``.
    """

    def __init__(self, columns: List[str], rows: List[Dict[str, Any]], total: Dict[str, float], elapsed_s: float,
                 mode: str, clock: Dict[str, Any], replayed: List[Dict[str, Any]], sources: Dict[str, str],
                 estimates: Dict[str, str], labels: List[str], csv_path: Optional[str]):
        self.columns = columns
        self.rows = rows
        self.total_energy_j = total
        self.elapsed_s = elapsed_s
        self.mode = mode
        self.clock = clock
        self.replayed = replayed
        self.sources = sources
        self.estimates = estimates
        self.labels = labels
        self.csv_path = csv_path
        self.sampling: Dict[str, Dict[str, Any]] = {}  # per phase: steps, sampled_steps, extrapolated
        self.coverage: Dict[str, float] = {label: 1.0 for label in labels}  # share of the run each total covers
        self.states: Dict[str, str] = {label: "ok" for label in labels}  # worst device health in the run

    @property
    def total_j(self) -> float:
        """CPU plus GPU energy of the whole run (a device that cannot be measured counts 0)."""
        return sum(v for v in self.total_energy_j.values() if not math.isnan(v))

    def layer_rows(self) -> List[Dict[str, Any]]:
        return [r for r in self.rows if r["type"] != "outside"]

    def row(self, layer: str, phase: Optional[str] = None) -> Dict[str, Any]:
        """The row of a layer (qualified name); phase "train"/"infer" when both occur."""
        found = [r for r in self.rows if r["layer"] == layer and (phase is None or r["phase"] == phase)]
        if not found:
            raise KeyError("no row for layer %r%s" % (layer, "" if phase is None else " in phase %r" % phase))
        if len(found) > 1:
            raise KeyError("layer %r has rows for several phases: pass phase='train' or 'infer'" % layer)
        return found[0]

    def to_pandas(self):
        """The rows as a pandas DataFrame with the CSV's columns (needs pandas)."""
        from ..io import _pandas

        pd = _pandas("LayerwiseResult.to_pandas()")
        return pd.DataFrame(self.rows, columns=self.columns)

    def summary(self, top: int = 15, file: Any = None, print_it: bool = True) -> str:
        """A short table: the ``top`` layers by energy, the outside rows and the total.  Printed (to file, default
        stdout) unless print_it is False; returned as a string."""
        gpus = [lab for lab in self.labels if lab != "cpu"]
        layers = sorted(self.layer_rows(), key=lambda r: -_nz(r["energy_j"]))
        shown = layers[:top]
        outside = [r for r in self.rows if r["type"] == "outside"]
        buf = io.StringIO()
        w = max([len(r["layer"]) for r in shown + outside] + [12])
        w = min(w, 40)
        head = "%-*s %-16s %-5s %7s %10s" % (w, "layer", "type", "phase", "calls", "time (s)")
        for g in gpus:
            head += " %11s" % ("%s (J)" % g.upper())
        head += " %11s %7s" % ("CPU (J)", "share")
        buf.write(head + "\n")

        def line(r: Dict[str, Any]) -> str:
            name = r["layer"] if len(r["layer"]) <= w else "..." + r["layer"][-(w - 3):]
            s = "%-*s %-16s %-5s %7s %10.4f" % (w, name, r["type"][:16], r["phase"], r["calls"] if r["calls"] != ""
                                                 else "", r["time_s"])
            for g in gpus:
                s += " %11s" % _fmt(r["%s_energy_j" % g])
            s += " %11s %6.1f%%" % (_fmt(r["cpu_energy_j"]), _nz(r["share_pct"]))
            return s

        for r in shown:
            buf.write(line(r) + "\n")
        if len(layers) > len(shown):
            rest = layers[len(shown):]
            buf.write("%-*s %-16s %-5s %7s %10.4f" % (w, "(%d more layers)" % len(rest), "", "", "",
                                                     sum(r["time_s"] for r in rest)))
            for g in gpus:
                buf.write(" %11s" % _fmt(sum(_nz(r["%s_energy_j" % g]) for r in rest)))
            buf.write(" %11s %6.1f%%\n" % (_fmt(sum(_nz(r["cpu_energy_j"]) for r in rest)),
                                          sum(_nz(r["share_pct"]) for r in rest)))
        for r in outside:
            buf.write(line(r) + "\n")
        partial = [k for k, v in self.coverage.items() if v < 1 and self.sources.get(k) != "none"]
        label = "total (PARTIAL)" if partial else "total (measured)"
        tot = "%-*s %-16s %-5s %7s %10.4f" % (w, label, "", "", "", self.elapsed_s)
        for g in gpus:
            tot += " %11s" % _fmt(self.total_energy_j.get(g, float("nan")))
        tot += " %11s %6.1f%%" % (_fmt(self.total_energy_j.get("cpu", float("nan"))), 100.0)
        buf.write(tot + "\n")
        note = "mode %s; layer times from %s" % (self.mode, "CUDA events" if self.clock.get("kind") == "cuda"
                                                   else "the host clock")
        sampled = [(ph, v) for ph, v in self.sampling.items() if v["sampled_steps"] < v["steps"]]
        if sampled:
            note += "; layers measured on %s, the rest of the run given by those" % ", ".join(
                "%d of %d %s steps" % (v["sampled_steps"], v["steps"], ph) for ph, v in sampled)
        auto = self.clock.get("auto_replay")
        if self.mode == "attribute" and layers:
            note += "; layers longer than a counter step at the power measured while they ran"
            if self.replayed:
                note += ", %d shorter ones (distinct) at their power replayed alone" % sum(
                    "same_as" not in r for r in self.replayed)
            if not self.replayed:
                note += ", shorter ones share the power of their counter steps (mode='replay' measures each one's"
                note += "; the default's replay of them was skipped: over budget)" if auto and auto.get(
                    "note", "").startswith("skipped") else ")"
        cost, budget = self.clock.get("sampling_cost_share"), self.clock.get("max_overhead")
        if cost is not None and budget is not None and cost > budget and self.sampling:
            note += ("; sampling cost %.0f%% of this run, over max_overhead (%.0f%%): a run this short pays at least "
                     "one burst of sampled steps, and its 0.3 s lead where the host was not ahead of the GPU"
                     % (100 * cost, 100 * budget))
        if partial:
            note += "; PARTIAL: %s" % "; ".join("%s %s" % ("CPU" if k == "cpu" else k.upper(), self.estimates.get(k, ""))
                                               for k in partial)
        rest = [k for k in self.estimates if k not in partial]
        if rest:
            note += "; estimated: %s (see .estimates)" % ", ".join("CPU" if k == "cpu" else k.upper() for k in rest)
        buf.write(note + "\n")
        text = buf.getvalue()
        if print_it:
            print(text, end="", file=file)
        return text

    def __repr__(self) -> str:
        return "<LayerwiseResult %d layer rows, %.3f s, %s J, mode=%s>" % (
            len(self.layer_rows()), self.elapsed_s,
            ", ".join("%s=%.3f" % kv for kv in self.total_energy_j.items()), self.mode)


def _nz(v: Any) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return 0.0
    return 0.0 if math.isnan(f) else f


def _fmt(v: Any) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return ""
    if math.isnan(f):
        return "n/a"
    return "%.4g" % f if abs(f) < 1000 else "%.1f" % f


# --------------------------------------------------------------------------------------------------------------
# Building the result


def _build_result(run: Any, devices: Any, mode: str, out_file: Optional[str], whole: Dict[str, Any],
                  replayed: List[Dict[str, Any]], replay_power: Dict[int, List[float]]) -> LayerwiseResult:
    """The result of a stopped run: its rows (the steps not sampled and the replayed powers given to them, in
    the model's order, then the outside rows), totals, sources and estimates, and the clock's report."""
    labels = devices.labels
    ndev = len(labels)
    # Time before the first forward pass belongs to the phase of that pass.
    first = run.pre_first
    target_phase = run.first_phase
    rows = run.rows
    if target_phase is None:
        rows[first].phase = None
    else:
        tgt = run._outside_row(OUTSIDE_OTHER, target_phase)
        if tgt != first:
            for d in (0, 1):
                s, t = 2 * first + d, 2 * tgt + d
                run.acc_t[t] += run.acc_t[s]
                run.acc_th[t] += run.acc_th[s]
                for i in range(ndev):
                    run.acc_e[t][i] += run.acc_e[s][i]
                run.calls[t] += run.calls[s]
                run.acc_t[s] = 0
                run.acc_th[s] = 0
                run.acc_e[s] = [0.0] * ndev
                run.calls[s] = 0
    total = dict(zip(labels, whole["energy_j"]))
    energies = {r: [list(run.acc_e[2 * r]), list(run.acc_e[2 * r + 1])] for r in range(len(rows))}
    attribution = {r: "interval" for r in range(len(rows))}
    replay_scale = _apply_replay(run, energies, replay_power, attribution, ndev) if replay_power else {}
    sampling = _extrapolate(run, energies, attribution, ndev)
    # Order: layers in the model's order (train, then infer), then the outside rows.
    order = sorted(
        (r for r in range(len(rows)) if rows[r].kind == "layer"),
        key=lambda r: (rows[r].layer, rows[r].phase),
    )
    out_order = [
        run.outside[k]
        for k in sorted(run.outside, key=lambda k: (_OUTSIDE_ORDER.index(k[0]),
                                                    -1 if k[1] is None else k[1]))
    ]
    total_j = sum(v for v in total.values() if not math.isnan(v))
    columns = _columns(labels)
    result_rows = []
    for r in order + out_order:
        row = rows[r]
        if run.calls[2 * r] == 0 and run.calls[2 * r + 1] == 0 and run.acc_t[2 * r] + run.acc_t[2 * r + 1] == 0:
            continue  # a row that never ran: an outside row unused, a layer seen only in a replay capture step
        result_rows.append(_row_dict(run, r, row, energies[r], labels, total_j, attribution[r], whole))
    sources = dict(zip(labels, whole["source"]))
    estimates = _source_notes(labels, whole["source"], devices.info)
    # A device that stalled or was lost during the run: its total covers part of it and its layers have none.
    coverage = dict(zip(labels, whole.get("coverage", [1.0] * len(labels))))
    states = dict(zip(labels, whole.get("state", ["ok"] * len(labels))))
    for label, info in zip(labels, devices.info):
        if sources.get(label) != "none" and coverage[label] < 1:
            estimates.setdefault(label, "partial: the total covers %.1f%% of the run (%s: %s)" % (
                100 * coverage[label], states[label], info.get("state_note", "") or "see devices"))
    clock = run.clock.info()
    clock["resolve_passes"] = run.passes
    clock["resolve_host_s"] = run.resolve_ns * 1e-9
    if run.mh is not None:
        clock["host_time_s"] = {rows[r].name + "|" + (PHASES[rows[r].phase] if rows[r].phase is not None else ""):
                                (run.acc_th[2 * r] * 1e-9, run.acc_th[2 * r + 1] * 1e-9)
                                for r in range(len(rows))}
    for d in result_rows:
        ph = d["phase"]
        if ph:
            d["steps"] = run.steps[PHASES.index(ph)]
            d["sampled_steps"] = run.sampled[PHASES.index(ph)]
    clock["lead_s"] = (run.lead_ns + run.lead_inner_ns) * 1e-9
    clock["short_leads_skipped"] = run.leads_skipped
    clock["opening_leads_not_needed"] = run.leads_not_needed
    clock["bursts_corrected"], clock["bursts_uncorrected"] = run.burst_counts()
    clock["knots_fitted"] = run.knots_fitted
    # what the sampling cost: the opening leads, and the sampled steps' host time beyond a step not sampled
    base = run.base_ns()
    extra = sum(run.extra_ns) + sum(max(0.0, d - base[p]) for p in (0, 1) if base[p] is not None
                                    for d in run.unbilled[p])
    elapsed_ns = run.t_end - run.t_start
    clock["sampling_cost_s"] = (run.lead_ns + extra) * 1e-9
    clock["sampling_cost_share"] = (run.lead_ns + extra) / elapsed_ns if elapsed_ns > 0 else 0.0
    clock["max_overhead"] = run.tool.max_overhead if run.tool else None
    if run.work_power:
        clock["work_power"] = run.work_power
    if replay_scale:
        clock["replay_scale"] = {ph: dict(zip(labels, ks)) for ph, ks in replay_scale.items()}
    result = LayerwiseResult(columns, result_rows, total, (run.t_end - run.t_start) * 1e-9, mode, clock,
                             replayed, sources, estimates, labels, out_file)
    result.sampling = sampling
    result.coverage = coverage
    result.states = states
    return result


# --------------------------------------------------------------------------------------------------------------
# Rows and CSV


def _columns(labels: List[str]) -> List[str]:
    cols = ["layer", "type", "phase", "steps", "sampled_steps", "calls", "backward_calls", "time_s", "forward_time_s",
            "backward_time_s"]
    for lab in labels[1:] + labels[:1]:  # GPUs first, then the CPU
        cols += ["%s_energy_j" % lab, "%s_forward_energy_j" % lab, "%s_forward_energy_j_per_call" % lab,
                 "%s_backward_energy_j" % lab, "%s_backward_energy_j_per_call" % lab, "%s_power_w" % lab]
    cols += ["energy_j", "energy_j_per_call", "share_pct", "attribution"]
    cols += ["%s_energy_source" % lab for lab in labels]
    return cols


def _row_dict(run: Any, r: int, row: _Row, e: List[List[float]], labels: List[str], total_j: float,
              attribution: str, whole: Dict[str, Any]) -> Dict[str, Any]:
    tf, tb = run.acc_t[2 * r] * 1e-9, run.acc_t[2 * r + 1] * 1e-9
    cf, cb = run.calls[2 * r], run.calls[2 * r + 1]
    outside = row.kind == "outside"
    d: Dict[str, Any] = {
        "layer": row.name,
        "type": row.type,
        "phase": "" if row.phase is None else PHASES[row.phase],
        "steps": "",
        "sampled_steps": "",
        "calls": cf if not (outside and row.name == OUTSIDE_OTHER) else "",
        "backward_calls": cb if not outside else (cb if row.name == OUTSIDE_BACKWARD else ""),
        "time_s": tf + tb,
        "forward_time_s": tf,
        "backward_time_s": tb,
    }
    if outside and row.name in (OUTSIDE_OTHER, OUTSIDE_LEAD):  # (the lead row's halves: opening / short leads)
        d["forward_time_s"] = d["backward_time_s"] = ""
    if outside and row.name == OUTSIDE_BACKWARD:
        d["calls"] = ""
    tot = 0.0
    for i, lab in enumerate(labels):
        ef, eb = e[0][i], e[1][i]
        d["%s_energy_j" % lab] = ef + eb
        d["%s_forward_energy_j" % lab] = ef
        d["%s_forward_energy_j_per_call" % lab] = ef / cf if cf and not outside else ""
        d["%s_backward_energy_j" % lab] = eb
        d["%s_backward_energy_j_per_call" % lab] = eb / cb if cb and not outside else ""
        d["%s_power_w" % lab] = (ef + eb) / (tf + tb) if tf + tb > 0 else float("nan")
        if not math.isnan(ef + eb):
            tot += ef + eb
    if outside and row.name in (OUTSIDE_OTHER, OUTSIDE_LEAD):
        for lab in labels:
            d["%s_forward_energy_j" % lab] = d["%s_backward_energy_j" % lab] = ""
    d["energy_j"] = tot
    d["energy_j_per_call"] = tot / cf if cf and not outside else ""
    d["share_pct"] = 100.0 * tot / total_j if total_j > 0 else float("nan")
    d["attribution"] = attribution if attribution == "not sampled" or not outside else "measured"
    for lab, src in zip(labels, whole["source"]):
        d["%s_energy_source" % lab] = src
    return d


def _write_csv(path: str, result: LayerwiseResult) -> None:
    try:
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(result.columns)
            for row in result.rows:
                w.writerow([_cell(row[c]) for c in result.columns])
    except PermissionError as e:
        from ..errors import PermissionDenied

        raise PermissionDenied("permission denied: cannot write %s: %s" % (path, e.strerror)) from None
    except OSError as e:
        from ..errors import FileError

        raise FileError("input/output error: cannot write %s: %s" % (path, e.strerror)) from None


def _cell(v: Any) -> Any:
    if isinstance(v, float):
        if math.isnan(v):
            return ""
        return "%.10g" % v
    return v

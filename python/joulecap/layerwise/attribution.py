"""At stop(): the steps not sampled given to the rows (_extrapolate, _fit), and the replayed powers applied to the
layers (_apply_replay).  Both keep every energy column adding up to the whole run."""

from __future__ import annotations

import math
import warnings
from typing import Any, Dict, List, Optional, Tuple

from ..errors import JoulecapWarning
from .rows import INFER, OUTSIDE_BACKWARD, OUTSIDE_FORWARD, OUTSIDE_OTHER, OUTSIDE_UNSAMPLED, PHASES, TRAIN
from .sampling import _PROBE_STEPS


def _extrapolate(run: Any, energies: Dict[int, List[List[float]]], attribution: Dict[int, str],
                 ndev: int) -> Dict[str, Any]:
    """Gives the steps that were not sampled to the rows, per phase, and returns what was done.

    A step not sampled has one interval (its "not sampled" slot) with its measured time and energy.  Each layer
    row, and the forward / backward outside rows, get the steps not sampled times their time, energy and calls
    per sampled step: the same kernels do the same work in every step, and in a sampled step (run back to back
    behind the lead) their intervals hold that work.  What the steps not sampled measured beyond that goes to
    "(outside) other" of the phase: the host gaps, optimizer, data loading and idle time of those steps, and
    the warm-up's extra work.  Where the sampled steps' share exceeds what was measured, the outside rows' share
    is scaled down first, then, only if that is not enough, the layers' (_fit): a sampled step longer on the GPU
    than a step not sampled holds gaps, where the GPU waited for the host slowed by the hooks, and those fall
    between the layers' intervals, into the outside rows (a layer's interval holds its own kernels, launched
    between its two markers).  The rows still add up to the whole run.  A phase with no sampled step keeps a
    "(outside) not sampled" row."""
    out: Dict[str, Any] = {}
    for ph in (TRAIN, INFER):
        u = run.outside.get((OUTSIDE_UNSAMPLED, ph))
        k = run.sampled[ph]
        info = {"steps": run.steps[ph], "sampled_steps": k, "extrapolated": False}
        if run.steps[ph]:
            out[PHASES[ph]] = info
        if u is None:
            continue
        n = run.calls[2 * u]
        if k == 0:
            attribution[u] = "not sampled"
            warnings.warn(
                "no %s step was sampled layer by layer (%d step(s), %d warm-up%s): its energy stays in the row %r; "
                "run more steps, or pass warmup_steps=0 or sample='all'"
                % (PHASES[ph], n, run.tool.warmup_steps if run.tool else 0,
                   ", then up to %d waiting for the GPU to show whether the loop is GPU-bound" % _PROBE_STEPS
                   if run.leads() else "", OUTSIDE_UNSAMPLED),
                JoulecapWarning, stacklevel=4)
            continue
        info["extrapolated"] = True
        f = n / k
        rows = [r for r, row in enumerate(run.rows) if row.phase == ph and r != u and
                (row.kind == "layer" or row.name in (OUTSIDE_FORWARD, OUTSIDE_BACKWARD))]
        other = run._outside_row(OUTSIDE_OTHER, ph)
        if other not in energies:
            energies[other] = [[0.0] * ndev, [0.0] * ndev]
            attribution[other] = "interval"
        ut, ue = run.acc_t[2 * u], energies[u][0]
        is_layer = [run.rows[r].kind == "layer" for r in rows]

        def share(values: List[float]) -> Tuple[float, float]:
            return (sum(v for v, lay in zip(values, is_layer) if lay) * f,
                    sum(v for v, lay in zip(values, is_layer) if not lay) * f)

        st = _fit(ut, *share([run.acc_t[2 * r] + run.acc_t[2 * r + 1] for r in rows]))
        se = [_fit(ue[i], *share([energies[r][0][i] + energies[r][1][i] for r in rows])) for i in range(ndev)]
        for r, lay in zip(rows, is_layer):
            for d in (0, 1):
                sl = 2 * r + d
                t = run.acc_t[sl] * f * st[0 if lay else 1]
                run.acc_t[sl] += int(t)
                ut -= int(t)
                run.calls[sl] += int(round(run.calls[sl] * f))
                for i in range(ndev):
                    e = energies[r][d][i] * f * se[i][0 if lay else 1]
                    energies[r][d][i] += e
                    ue[i] -= e
        run.acc_t[2 * other] += ut
        for i in range(ndev):
            energies[other][0][i] += ue[i]
        run.acc_t[2 * u] = 0
        run.calls[2 * u] = 0
        energies[u][0] = [0.0] * ndev
        info["not_sampled_steps"] = n
    return out


def _fit(measured: float, layers: float, outside: float) -> Tuple[float, float]:
    """Factors for the layers' and the outside rows' extrapolated shares so that together they fit in what the
    steps not sampled measured: the outside rows give way first (see _extrapolate)."""
    if math.isnan(layers) or math.isnan(outside):
        return 0.0, 0.0
    if math.isnan(measured) or layers + outside <= measured:  # (nothing measured to fit in: as sampled)
        return 1.0, 1.0
    if layers <= measured:
        return 1.0, (measured - layers) / outside
    return (max(0.0, measured) / layers if layers > 0 else 0.0), 0.0


def _apply_replay(run: Any, energies: Dict[int, List[List[float]]], power: Dict[int, List[float]],
                  attribution: Dict[int, str], ndev: int) -> Dict[str, List[Optional[float]]]:
    """Gives the replayed layers their replayed power, scaled to what was measured, per phase and device.

    The pool is every layer row of the phase: its measured (interval) energy, summed, is kept, and split by time x
    power, where a replayed row's power is its replayed power and a row not replayed keeps its measured power.  So
    one factor k maps the powers alone onto the network (a GEMM alone at the power limit runs at lower clocks than
    among lighter layers), estimated from as much of the pool as was replayed: where every layer was replayed this
    is the replayed rows' split of their own energy, and where only a few were (the layers above replay_min_share),
    they get about their own power instead of absorbing the whole pool's difference from it, as a split among the
    replayed rows alone would have them do.  The outside rows keep their measured energy, so every column still adds
    up to the whole run.  Returns k per phase and device (None: not applied)."""
    scale: Dict[str, List[Optional[float]]] = {}
    for r in power:
        attribution[r] = "replay"
    for ph in (TRAIN, INFER):
        if not any(run.rows[r].phase == ph for r in power):
            continue
        ks: List[Optional[float]] = scale.setdefault(PHASES[ph], [None] * ndev)
        pool = [r for r, row in enumerate(run.rows) if row.kind == "layer" and row.phase == ph]
        for i in range(ndev):
            measured = 0.0
            weights = {}
            for r in pool:
                e = energies[r][0][i] + energies[r][1][i]
                measured += e
                if r in power:
                    t = (run.acc_t[2 * r] + run.acc_t[2 * r + 1]) * 1e-9
                    weights[r] = t * power[r][i]
                else:
                    weights[r] = e  # its time x its measured power
            wsum = sum(weights.values())
            if not (wsum > 0) or math.isnan(measured) or math.isnan(wsum):
                continue
            k = ks[i] = measured / wsum
            for r in pool:
                if r not in power:
                    energies[r][0][i] *= k
                    energies[r][1][i] *= k
                    continue
                tf, tb = run.acc_t[2 * r], run.acc_t[2 * r + 1]
                if tf + tb > 0:
                    e = k * weights[r]
                    energies[r][0][i] = e * tf / (tf + tb)
                    energies[r][1][i] = e * tb / (tf + tb)
    return scale

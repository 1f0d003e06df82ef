"""Each layer's power inside a burst from the energy counter's own steps (the "knots" of the series).

The counter gives one energy per step (100 ms on NVIDIA GPUs), and the library's series is linear between its
knots: within a step every instant has the step's power.  A burst holds many counter steps; where a layer (or a
stretch of one layer's calls) fills a good part of some steps and little of others, the steps' energies tell its
power apart from its neighbours'.  So, per burst and device: the steps lying inside the burst are recovered from
the series (counter_steps), and the powers of the burst's work slots are fitted to them by least squares, each
slot pulled towards the burst's work power by a prior (ridge) worth what ``_PRIOR_S`` of time in a step would
say: a slot that fills steps of its own gets its own power; slots whose stretches are shorter than half a step
share one power (what the counter cannot tell apart), and anything between is weighed accordingly.  The leads' power is known (the opening lead's interior) and taken out first.
"""

from __future__ import annotations

import bisect
import math
from typing import Dict, List, Optional, Sequence, Tuple

_GRID_NS = 1_000_000  # the series is read every 1 ms to find the counter's steps
_PRIOR_S = 0.01  # the prior's weight: as much as a slot with 10 ms in one step (about 2% of a step's energy)
_MIN_REL = 0.2  # a fitted power never below 0.2 x the burst's work power (the fit is a correction, not a sign flip)
# A slot gets a power of its own only where its stretches (a call, or calls back to back) last half a counter
# step or more: shorter ones sit in every step in nearly the same mix, where the fit turns the steps' noise into
# differences between them (H100: 2-6 ms layers 26% off with their own powers, 17% with one); they share one.
_OWN_MIN_NS = 50_000_000
_SHORT = -1  # the shared slot of the short ones
_JOIN_NS = 1_000_000  # intervals of one slot this close together form one stretch


def _groups(intervals: Sequence[Tuple[int, int, int]]) -> Dict[int, int]:
    """Slot -> the slot fitted for it: itself where its stretches last _OWN_MIN_NS on average, else _SHORT."""
    runs: Dict[int, List[int]] = {}
    last: Dict[int, List[int]] = {}  # slot -> [start, end] of its current stretch
    for sl, t0, t1 in sorted(intervals, key=lambda x: x[1]):
        cur = last.get(sl)
        if cur is not None and t0 - cur[1] <= _JOIN_NS:
            cur[1] = max(cur[1], t1)
            continue
        if cur is not None:
            runs.setdefault(sl, []).append(cur[1] - cur[0])
        last[sl] = [t0, t1]
    for sl, cur in last.items():
        runs.setdefault(sl, []).append(cur[1] - cur[0])
    return {sl: sl if sum(r) / len(r) >= _OWN_MIN_NS else _SHORT for sl, r in runs.items()}


def counter_steps(times: Sequence[int], energy: Sequence[float]) -> List[Tuple[int, int, float]]:
    """The counter's steps inside [times[0], times[-1]] from the cumulative energy on a regular grid: (t0, t1,
    J per ns) for every step whose both ends lie inside (steps of equal power next to each other come out as one,
    which loses nothing).  The series is linear within a step, so the slope is constant over the grid's cells
    inside it and the one cell holding a knot has a slope between its neighbours', which places the knot."""
    n = len(times)
    if n < 4:
        return []
    slopes: List[Optional[float]] = []
    for i in range(n - 1):
        e0, e1, dt = energy[i], energy[i + 1], times[i + 1] - times[i]
        slopes.append((e1 - e0) / dt if dt > 0 and e0 == e0 and e1 == e1 else None)
    # runs of equal slope (>= 2 cells)
    runs: List[Tuple[int, int, float]] = []  # (first cell, last cell, slope)
    i = 0
    while i < len(slopes):
        s = slopes[i]
        if s is None:
            i += 1
            continue
        j = i
        while j + 1 < len(slopes) and slopes[j + 1] is not None and \
                abs(slopes[j + 1] - s) <= 1e-6 * (abs(s) + abs(slopes[j + 1])) + 1e-18:
            j += 1
        if j > i:
            runs.append((i, j, s))
        i = j + 1
    # knots between consecutive runs: adjacent (the knot on a grid point) or one cell apart (solved inside it)
    knots: List[Optional[int]] = []
    for (a0, a1, sa), (b0, b1, sb) in zip(runs, runs[1:]):
        if b0 == a1 + 1:
            knots.append(times[b0])
        elif b0 == a1 + 2 and slopes[a1 + 1] is not None and sa != sb:
            c = a1 + 1
            f = (slopes[c] - sb) / (sa - sb)  # the share of the cell before the knot
            f = min(1.0, max(0.0, f))
            knots.append(times[c] + int(round(f * (times[c + 1] - times[c]))))
        else:
            knots.append(None)
    out = []
    for k in range(1, len(runs) - 1):
        t0, t1 = knots[k - 1], knots[k]
        if t0 is not None and t1 is not None and t1 > t0:
            out.append((t0, t1, runs[k][2]))
    return out


def fit_powers(steps: List[Tuple[int, int, float]], known: List[Tuple[int, int, float]],
               intervals: List[Tuple[int, int, int]], prior: float) -> Dict[int, float]:
    """Least-squares powers (J per ns) of the slots of ``intervals`` ((slot, t0, t1)), from the steps' energies
    less what ``known`` ((t0, t1, J per ns): the leads) drew, each pulled towards ``prior`` (ridge, weight
    _PRIOR_S^2).  Solved in its dual form (one equation per step): P = prior + A^T (A A^T + lam I)^-1 (e - A
    prior), A[j][s] = time of slot s in step j (s), e[j] = its energy less the leads' (J)."""
    if not steps or not intervals or not (prior > 0):
        return {}
    m = len(steps)
    slots: Dict[int, int] = {}
    rows: List[Dict[int, float]] = [dict() for _ in range(m)]
    e = []
    group = _groups(intervals)
    ivs = sorted(((group[sl], t0, t1) for sl, t0, t1 in intervals), key=lambda x: x[1])
    starts = [iv[1] for iv in ivs]

    prior_w = prior * 1e9  # W
    for j, (a, b, p) in enumerate(steps):
        ej = p * (b - a)  # J (p in J/ns, times in ns)
        for k0, k1, pk in known:
            ov = min(b, k1) - max(a, k0)
            if ov > 0:
                ej -= pk * ov
        lo = max(0, bisect.bisect_left(starts, a) - 1)
        for sl, t0, t1 in ivs[lo:]:
            if t0 >= b:
                break
            ov = min(b, t1) - max(a, t0)
            if ov > 0:
                rows[j][sl] = rows[j].get(sl, 0.0) + ov * 1e-9
                slots.setdefault(sl, len(slots))
        e.append(ej)
    if not slots:
        return {}
    lam = _PRIOR_S * _PRIOR_S
    # r = e - A prior; G = A A^T + lam I
    r = [e[j] - prior_w * sum(rows[j].values()) for j in range(m)]
    g = [[sum(v * rows[k].get(s, 0.0) for s, v in rows[j].items()) + (lam if j == k else 0.0) for k in range(m)]
         for j in range(m)]
    y = _solve(g, r)
    if y is None:
        return {}
    fitted: Dict[int, float] = {}
    for s in slots:
        p = prior_w + sum(rows[j].get(s, 0.0) * y[j] for j in range(m))
        fitted[s] = max(p, _MIN_REL * prior_w) * 1e-9
    return {sl: fitted[g] for sl, g in group.items() if g in fitted}


def _solve(a: List[List[float]], b: List[float]) -> Optional[List[float]]:
    """Gaussian elimination with partial pivoting (a is small: one row per counter step of a burst)."""
    n = len(b)
    m = [row[:] + [b[i]] for i, row in enumerate(a)]
    for c in range(n):
        p = max(range(c, n), key=lambda i: abs(m[i][c]))
        if not (abs(m[p][c]) > 0) or math.isnan(m[p][c]):
            return None
        m[c], m[p] = m[p], m[c]
        for i in range(c + 1, n):
            f = m[i][c] / m[c][c]
            if f:
                for k in range(c, n + 1):
                    m[i][k] -= f * m[c][k]
    x = [0.0] * n
    for i in range(n - 1, -1, -1):
        x[i] = (m[i][n] - sum(m[i][k] * x[k] for k in range(i + 1, n))) / m[i][i]
    return x

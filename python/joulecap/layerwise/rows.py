"""Rows and slots: a row per (layer, phase) and per kind of time outside the layers; each row has two slots,
2 x row (forward) and 2 x row + 1 (backward), which accumulate time, energy per device and calls."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

PHASES = ("train", "infer")
TRAIN, INFER = 0, 1
OUTSIDE_FORWARD = "(outside) forward"
OUTSIDE_BACKWARD = "(outside) backward"
OUTSIDE_OTHER = "(outside) other"
OUTSIDE_LEAD = "(outside) joulecap lead"  # the GPU-side waits the tool puts in sampled bursts (sampling.py)
OUTSIDE_UNSAMPLED = "(outside) not sampled"  # steps of a phase of which no step was sampled
_OUTSIDE_ORDER = [OUTSIDE_FORWARD, OUTSIDE_BACKWARD, OUTSIDE_OTHER, OUTSIDE_LEAD, OUTSIDE_UNSAMPLED]
ROOT_NAME = "(root)"


def _display_name(name: str) -> str:
    return name if name else ROOT_NAME


class _Row:
    __slots__ = ("name", "type", "phase", "kind", "layer")

    def __init__(self, name: str, type_: str, phase: Optional[int], kind: str, layer: int):
        self.name, self.type, self.phase, self.kind, self.layer = name, type_, phase, kind, layer


class _Rows:
    """Part of _Run: its rows and their slots' accumulators (time in ns, energy in J per device, calls)."""

    def _init_rows(self, layers: List[Tuple[str, Any]], ndev: int) -> None:
        self.layers = layers
        self.ndev = ndev
        self.rows: List[_Row] = []
        self.acc_t: List[int] = []
        self.acc_e: List[List[float]] = []
        self.acc_th: List[int] = []  # host time per slot (the tool's _host_shadow option)
        self.calls: List[int] = []
        self.layer_rows: List[List[Optional[int]]] = [[None, None] for _ in layers]
        self.outside: Dict[Tuple[str, Optional[int]], int] = {}

    def _new_row(self, row: _Row) -> int:
        self.rows.append(row)
        for _ in range(2):
            self.acc_t.append(0)
            self.acc_th.append(0)
            self.acc_e.append([0.0] * self.ndev)
            self.calls.append(0)
        return len(self.rows) - 1

    def layer_row(self, li: int, phase: int) -> int:
        r = self.layer_rows[li][phase]
        if r is None:
            name, m = self.layers[li]
            r = self._new_row(_Row(_display_name(name), type(m).__name__, phase, "layer", li))
            self.layer_rows[li][phase] = r
        return r

    def _outside_row(self, name: str, phase: Optional[int]) -> int:
        key = (name, phase)
        r = self.outside.get(key)
        if r is None:
            r = self._new_row(_Row(name, "outside", phase, "outside", -1))
            self.outside[key] = r
        return r

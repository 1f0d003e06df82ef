"""Reading joulecap's CSV files back."""

from __future__ import annotations

import os
from typing import Any

__all__ = ["read_csv"]


def _pandas(what: str):
    try:
        import pandas
    except ImportError:
        raise ImportError(
            "%s needs pandas, which is not installed: pip install pandas (or pip install 'joulecap[pandas]')" % what
        ) from None
    return pandas


def read_csv(path: Any, **kwargs: Any):
    """Reads a CSV written by EnergyMeasurementTool or AsynchronousMeasurementTool into a pandas DataFrame.

    Empty cells (values that cannot be measured here) become NaN; the ``*_energy_source`` columns and the
    ``window`` column are strings.  Extra keyword arguments go to ``pandas.read_csv``.
    """
    pd = _pandas("joulecap.read_csv()")
    path = os.fspath(path)
    dtype = kwargs.pop("dtype", None)
    if dtype is None:
        with open(path, newline="") as f:
            header = f.readline().strip().split(",")
        dtype = {c: object for c in header if c.endswith("_source") or c == "window"}
    return pd.read_csv(path, dtype=dtype, keep_default_na=True, **kwargs)

"""joulecap: energy of ML code on NVIDIA GPUs and CPUs, measured by a small C library.

    from joulecap import EnergyMeasurementTool, AsynchronousMeasurementTool, LayerwiseMeasurementTool

The tools keep the seed's names, arguments and CSV columns (see ``joulecap.measurement``); errors are the
classes of ``joulecap.errors``; ``joulecap.read_csv`` reads the CSV files back (with pandas).  Power caps:
``set_power_cap``, ``reset_power_cap``, ``get_power_cap`` (``joulecap.caps``); the power-cap profiler:
``profile_power_cap`` (the whole result), the seed's ``power_cap_profiler`` (the cap) and the online
``PowerCapOptimizer`` (``joulecap.profiler``).  ``joulecap.plot`` draws any of the CSVs (``joulecap.plots``,
needs matplotlib).  ``carbon_settings`` turns energy into gCO2e and cost at a grid intensity and price the user
gives (``joulecap.carbon``).  Trainer callbacks for PyTorch Lightning and Hugging Face transformers:
``joulecap.callbacks``.  ``python -m joulecap.example`` measures a small PyTorch training run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Union

if TYPE_CHECKING:
    import os

    import matplotlib.figure

from . import errors
from ._types import GpuSelection
from ._joulecap import LIB_VERSION as _LIB_VERSION
from .errors import JoulecapError
from .io import read_csv
from .caps import CapReset, PowerCap, get_power_cap, reset_power_cap, restore_power_caps, set_power_cap
from .profiler import PowerCapOptimizer, ProfileResult, power_cap_profiler, profile_power_cap
from .measurement import AsynchronousMeasurementTool, EnergyMeasurementTool, Measurement
from .layerwise import LayerwiseMeasurementTool
from .carbon import Carbon, carbon_settings

__version__ = "0.2.0"
__lib_version__ = _LIB_VERSION

__all__ = [
    "EnergyMeasurementTool",
    "AsynchronousMeasurementTool",
    "LayerwiseMeasurementTool",
    "Measurement",
    "JoulecapError",
    "errors",
    "read_csv",
    "devices",
    "set_power_cap",
    "reset_power_cap",
    "get_power_cap",
    "restore_power_caps",
    "PowerCap",
    "CapReset",
    "power_cap_profiler",
    "profile_power_cap",
    "PowerCapOptimizer",
    "ProfileResult",
    "plot",
    "Carbon",
    "carbon_settings",
    "__version__",
]


def devices(gpu_num: GpuSelection = "all") -> List[Dict[str, Any]]:
    """The devices joulecap would measure for gpu_num: a list of dicts, device 0 the CPU, then GPUs in CUDA
    order, each with its energy source and, where a value is estimated or missing, the reason."""
    from ._common import _gpu_selection
    from ._joulecap import Context

    with Context(_gpu_selection(gpu_num)) as ctx:
        return ctx.devices()


def plot(*files: Union[str, os.PathLike[str]], **kwargs: Any) -> matplotlib.figure.Figure:
    """Draws joulecap CSVs (time series, snippet windows, power-cap profile, layer-wise, several runs side by
    side) and returns the matplotlib Figure; ``out="x.png"`` (.svg, .pdf, .html) also writes it.  See
    ``joulecap.plots.plot`` for the arguments; needs matplotlib (``pip install 'joulecap[plot]'``)."""
    from .plots import plot as _plot  # imported here: `python -m joulecap.plots` must not find it loaded

    return _plot(*files, **kwargs)

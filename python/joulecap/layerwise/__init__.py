"""Energy per layer of a ``torch.nn`` model: :class:`LayerwiseMeasurementTool`.

    tracker = LayerwiseMeasurementTool("layers.csv", gpu_num=0)
    model = tracker.start(model)        # right before the loop
    for x, y in data:                   # train, or run inference
        ...
    result = tracker.stop()             # writes layers.csv; result.summary(), result.to_pandas()

How it works (docs/python.md, "Layer-wise", says it for users), module by module:

* ``hooks``: hooks put *markers* on one timeline: "from here on, the time belongs to X", where X is a layer's
  forward or backward (of the training or the inference phase) or one of the "outside layers" rows (``rows``).
  The intervals between markers tile ``[start(), stop()]`` exactly, so the rows add up to the whole run.
* ``clock``: on the CPU a marker is a CLOCK_MONOTONIC time (the library's clock); on a GPU a CUDA event, turned
  into a host time later through an anchor event (durations exact to the event resolution; ``result.clock``
  reports the placement's precision).
* ``resolve``: now and then, the markers get the cumulative energy of every device at their times from the
  library (interpolated as its windows are) and each interval the difference, so intervals inside one counter
  step share its average power (``mode="attribute"``).
* ``sampling``, ``bursts``: the layers' hooks run on sampled steps only, within ``max_overhead``; on a GPU in
  bursts behind GPU-side leads, whose work gets the power measured over the burst.
* ``attribution``: at stop(), the steps not sampled are given to the rows; ``replay`` (``mode="replay"``) runs
  each layer alone on inputs taken by ``capture`` and splits the layers' energy by time x replayed power.
* ``result``: LayerwiseResult, its rows, the CSV; ``tool``: LayerwiseMeasurementTool; ``run``: the state of one
  run, made of the parts above.
"""

from __future__ import annotations

from ..errors import JoulecapWarning  # noqa: F401  (tests use lw.JoulecapWarning)
from .attribution import _apply_replay, _extrapolate, _fit  # noqa: F401
from . import knots  # noqa: F401
from .bursts import _Burst  # noqa: F401
from .capture import _Capture, _key_of, _make, _TensorSpec  # noqa: F401
from .clock import _CudaClock, _host_clock, _HostClock  # noqa: F401
from .hooks import _walk_call_nodes  # noqa: F401
from .layers import select_layers
from .replay import _module_key, _run_until, measure_alone  # noqa: F401
from .result import LayerwiseResult
from .rows import (  # noqa: F401
    INFER,
    OUTSIDE_BACKWARD,
    OUTSIDE_FORWARD,
    OUTSIDE_LEAD,
    OUTSIDE_OTHER,
    OUTSIDE_UNSAMPLED,
    PHASES,
    ROOT_NAME,
    TRAIN,
    _Row,
)
from .run import _Run  # noqa: F401
from .sampling import _SETTLE_STEPS, LEAD_EVERY  # noqa: F401
from .tool import SAMPLES, LayerwiseMeasurementTool  # noqa: F401

__all__ = [
    "LayerwiseMeasurementTool",
    "LayerwiseResult",
    "select_layers",
    "measure_alone",
    "PHASES",
    "TRAIN",
    "INFER",
    "OUTSIDE_FORWARD",
    "OUTSIDE_BACKWARD",
    "OUTSIDE_OTHER",
    "OUTSIDE_LEAD",
    "OUTSIDE_UNSAMPLED",
    "ROOT_NAME",
]

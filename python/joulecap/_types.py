"""Type aliases for the public signatures: what each argument accepts."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Sequence, Union

if TYPE_CHECKING:  # torch is optional: only type checkers need its name
    import torch

#: One GPU: its CUDA number (as torch.cuda numbers GPUs), a UUID or a unique prefix of one, ``"cuda:1"``, a
#: ``torch.device`` of type cuda, or (caps and the profiler) ``"current"``: torch's current CUDA device.
OneGpu = Union[int, str, "torch.device"]

#: GPUs to measure: one GPU as above, a list of them, ``"all"``, or None (no GPU: the CPU only).
GpuSelection = Union[int, str, "torch.device", Sequence[Union[int, str]], None]

#: A file to write: a path (str or os.PathLike), or None for no file.
OutFile = Union[str, "os.PathLike[str]", None]

__all__ = ["OneGpu", "GpuSelection", "OutFile"]

"""Energy per epoch and per n steps inside the trainers people use, logged through the trainer's own loggers.

    from joulecap.callbacks.lightning import JoulecapCallback        # PyTorch Lightning (lightning.pytorch)
    from joulecap.callbacks.transformers import JoulecapCallback     # Hugging Face transformers' Trainer

Each module imports its trainer package when it is imported itself, so ``import joulecap`` needs neither.  Both
build on one :class:`~joulecap.EnergyMeasurementTool` (``joulecap.callbacks._meter.TrainerMeter``): a window per
epoch and per ``every_n_steps`` steps, its CSV (``out_file``) the snippet tool's.  See docs/trainers.md.
"""

from ._meter import TrainerMeter, metrics_of

__all__ = ["TrainerMeter", "metrics_of"]

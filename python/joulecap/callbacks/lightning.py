"""joulecap inside PyTorch Lightning: ``Trainer(callbacks=[JoulecapCallback()])``.

Per epoch (the training epoch, its validation included: Lightning validates before ``on_train_epoch_end``) the
metrics go through ``pl_module.log`` (every logger of the trainer, ``trainer.callback_metrics``); per block of
``every_n_steps`` training batches straight to ``trainer.loggers`` at the global step where the block ended
(``pl_module.log`` would drop them between ``log_every_n_steps``).  Names: ``joulecap.callbacks._meter``.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Optional

try:
    import lightning.pytorch as pl
except ImportError:  # the older package name
    try:
        import pytorch_lightning as pl  # type: ignore[no-redef]
    except ImportError:
        raise ImportError(
            "joulecap.callbacks.lightning needs PyTorch Lightning: pip install lightning"
        ) from None

from ._meter import TrainerMeter

__all__ = ["JoulecapCallback"]


def _cuda_index(device: Any) -> Optional[int]:
    if getattr(device, "type", None) == "cuda":
        return device.index or 0
    return None


class JoulecapCallback(pl.Callback):
    """Energy (J) per device and in total, mean power (W) and coverage per epoch and every ``every_n_steps``
    training batches, logged through the trainer's loggers; a summary at the end of ``fit``.

    * ``gpu_num``: ``"auto"`` (default): the CUDA GPU the LightningModule is on at the start of ``fit`` (none when
      it is on the CPU); else as :class:`~joulecap.EnergyMeasurementTool`'s (opened at once, so a wrong GPU
      fails here).  The CPU is always measured.
    * ``every_n_steps``: also a window per this many training batches (None: epochs only).
    * ``out_file``: the snippet CSV of every window (``epoch0``, ``steps1-50``, ...), as the snippet tool writes it.
    * ``carbon``: grid intensity and price (``joulecap.carbon_settings``); default from the environment.
    * ``power_cap``: True or a dict of :class:`~joulecap.PowerCapOptimizer` arguments: run the online power-cap
      optimizer on the training steps (needs one GPU and the right to set caps); the limit found is put back at
      the end of ``fit``.
    * ``prefix``: of the metric names (default ``"energy/"``); ``summary``: print the summary on rank 0.
    * ``distributed``: under DDP (None, the default: when a process group of several ranks exists at the start of
      ``fit``) every rank measures its own GPU and the epoch's and blocks' windows are gathered over the ranks:
      what is logged is the job's energy, each GPU and each host's CPU counted once, the same on every rank;
      False: each rank logs its own devices (the loggers write rank 0's).  Every rank runs the hooks; an
      exception ends the measuring locally, without gathering.

    ``records`` holds every window measured (with its ``measurement`` and ``metrics``) after training.
    """

    def __init__(
        self,
        gpu_num: Any = "auto",
        *,
        every_n_steps: Optional[int] = None,
        out_file: Any = None,
        carbon: Any = None,
        power_cap: Any = None,
        prefix: str = "energy/",
        summary: bool = True,
        interval_s: Optional[float] = None,
        distributed: Optional[bool] = None,
    ) -> None:
        super().__init__()
        self.meter = TrainerMeter(gpu_num, every_n_steps=every_n_steps, out_file=out_file, carbon=carbon,
                                  power_cap=power_cap, prefix=prefix, summary=summary, interval_s=interval_s,
                                  distributed=distributed)
        self.summary: Optional[str] = None

    @property
    def records(self):
        return self.meter.records

    # -- hooks

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        self.meter.summary = self.meter.summary and trainer.is_global_zero
        self.meter.begin(_cuda_index(pl_module.device))

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self.meter.epoch_start(trainer.current_epoch)

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self.meter.step_start()

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._log_blocks(trainer, self.meter.step_end(log_step=trainer.global_step))

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        rec = self.meter.epoch_end()
        self._log_blocks(trainer, self.meter.ready(wait=True))
        if rec is None:
            return
        import torch

        # In job mode every rank holds the job's values (rank 0's, broadcast): synchronised with "max" they stay
        # exact, and Lightning does not warn that epoch-level values are not synchronised.
        job = self.meter.job is not None
        device = pl_module.device if job else None
        for name, value in rec["metrics"].items():
            if math.isfinite(value):
                # float64: a float would become a float32 tensor, 7 digits of a value the CSV has with 10.
                pl_module.log(name, torch.tensor(value, dtype=torch.float64, device=device), on_step=False,
                              on_epoch=True, logger=True, prog_bar=False, sync_dist=job,
                              reduce_fx="max" if job else "mean")

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        self._end(trainer)

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        # Local: under DDP the other ranks may not be failing, and a gather would wait for them.
        self._end(trainer, abort=True)

    # -- logging

    def _end(self, trainer: Any, abort: bool = False) -> None:
        n = len(self.meter.records)
        self.summary = self.meter.abort() if abort else self.meter.end()
        self._log_blocks(trainer, self.meter.records[n:])

    @staticmethod
    def _log_blocks(trainer: Any, records: Any) -> None:
        for rec in records:
            if rec["scope"] != "steps":
                continue
            metrics: Dict[str, float] = {k: v for k, v in rec["metrics"].items() if math.isfinite(v)}
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=rec.get("log_step", rec["last_step"]))

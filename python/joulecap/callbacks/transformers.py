"""joulecap inside Hugging Face transformers' ``Trainer``.

    cb = JoulecapCallback(gpu_num=0, every_n_steps=50).attach(trainer)   # or Trainer(callbacks=[cb])

Attached, the metrics go through ``trainer.log``: ``state.log_history``, every ``report_to`` integration
(TensorBoard, W&B, ...) and the console, as the Trainer's own logs do.  Only passed in ``callbacks=[...]``, the
callback cannot reach the integrations (the Trainer calls them before user callbacks, with no handle on the
trainer): the metrics then go to ``state.log_history`` only, and a ``report_to`` integration gets a warning
that says to attach.  Names: ``joulecap.callbacks._meter``; a block of steps also carries
``{prefix}steps_first`` and ``{prefix}steps_last`` (its result is known ~0.1 s after its last step, so it is
logged at a later step).
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Dict, List, Optional

try:
    from transformers import TrainerCallback
except ImportError:
    raise ImportError("joulecap.callbacks.transformers needs transformers: pip install transformers") from None

from ..errors import JoulecapWarning
from ._meter import TrainerMeter

__all__ = ["JoulecapCallback"]


def _cuda_index(device: Any) -> Optional[int]:
    if getattr(device, "type", None) == "cuda":
        return device.index or 0
    return None


def _integrations(args: Any) -> List[str]:
    report_to = getattr(args, "report_to", None)
    if report_to is None:
        return []
    if isinstance(report_to, str):
        report_to = [report_to]
    return [r for r in report_to if r not in ("none", None)]


class JoulecapCallback(TrainerCallback):
    """Energy (J) per device and in total, mean power (W) and coverage per epoch and every ``every_n_steps``
    optimizer steps, logged as the Trainer's own logs; a summary at the end of training.

    Arguments as :class:`joulecap.callbacks.lightning.JoulecapCallback`'s; ``gpu_num="auto"`` is the CUDA GPU of
    ``TrainingArguments.device`` (none on the CPU).  Launched with torchrun / accelerate (DDP), every rank's
    callback measures its GPU and logs the job's energy (each GPU and each host's CPU once), unless
    ``distributed=False``.  ``attach(trainer)`` adds the callback to the trainer and
    logs through ``trainer.log``.  ``records`` holds every window measured; ``summary`` the summary text.
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
        self.meter = TrainerMeter(gpu_num, every_n_steps=every_n_steps, out_file=out_file, carbon=carbon,
                                  power_cap=power_cap, prefix=prefix, summary=summary, interval_s=interval_s,
                                  distributed=distributed)
        self.summary: Optional[str] = None
        self._trainer: Any = None
        self._epochs = 0

    @property
    def records(self):
        return self.meter.records

    def attach(self, trainer: Any) -> "JoulecapCallback":
        """Adds this callback to ``trainer`` (unless it is there) and logs through ``trainer.log``; returns self."""
        if self not in trainer.callback_handler.callbacks:
            trainer.add_callback(self)
        self._trainer = trainer
        return self

    # -- events

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.meter.summary = self.meter.summary and state.is_world_process_zero
        if self._trainer is None and _integrations(args) and state.is_world_process_zero:
            warnings.warn(
                "joulecap's callback was passed in callbacks=[...]: report_to=%s will not get its energy metrics "
                "(they go to state.log_history only); use JoulecapCallback(...).attach(trainer) instead"
                % _integrations(args), JoulecapWarning, stacklevel=2)
        self.meter.begin(_cuda_index(getattr(args, "device", None)))

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.meter.epoch_start(self._epochs)
        self._epochs += 1

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.meter.step_start()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._emit(state, self.meter.step_end(log_step=state.global_step))

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        rec = self.meter.epoch_end()
        self._emit(state, self.meter.ready(wait=True) + ([rec] if rec is not None else []))

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        n = len(self.meter.records)
        self.summary = self.meter.end()
        self._emit(state, self.meter.records[n:])

    # -- logging

    def _emit(self, state: Any, records: List[Dict[str, Any]]) -> None:
        p = self.meter.prefix
        for rec in records:
            logs = {k: v for k, v in rec["metrics"].items() if math.isfinite(v)}
            if rec["scope"] == "steps":
                logs[p + "steps_first"] = rec["first_step"]
                logs[p + "steps_last"] = rec["last_step"]
            if self._trainer is not None:
                self._trainer.log(logs)
            else:
                entry = dict(logs)
                if state.epoch is not None:
                    entry["epoch"] = state.epoch
                entry["step"] = state.global_step
                state.log_history.append(entry)

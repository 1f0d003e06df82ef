"""One rank of a real trainer under DDP on the CPU (gloo) with the trainer callbacks (tests/python/test_trainers.py).

python _trainer_ddp_worker.py lightning|transformers OUT_DIR
The launcher's variables (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT) come from the test, as torchrun
sets them: Lightning's "ddp" strategy and transformers (accelerate) take the ranks from them and initialise the
process group.  The callback is left at gpu_num="auto": the model is on the CPU, so each rank measures the fake
GPU of its local rank.  Writes OUT_DIR/rank<R>.json: the callback's records, and on rank 0 the job's results.
"""

import json
import os
import sys
import time

import torch

from joulecap.distributed import JobMeasurement

mode, out_dir = sys.argv[1], sys.argv[2]
rank = int(os.environ["RANK"])
torch.set_num_threads(1)
STEP_S = 0.02


def dataset(n=32):
    g = torch.Generator().manual_seed(0)
    return torch.utils.data.TensorDataset(torch.randn(n, 8, generator=g), torch.randint(0, 2, (n,), generator=g))


def result(m):
    if isinstance(m, JobMeasurement):
        d = m.as_dict()
        d["rank_elapsed_s"] = {str(k): v for k, v in d["rank_elapsed_s"].items()}
        return {"type": "job", **d}
    return {"type": "local", "energy_j": m.energy_j, "elapsed_s": m.elapsed_s}


def records(cb):
    return [{k: (result(v) if k == "measurement" else v) for k, v in r.items()} for r in cb.records]


def run_lightning():
    import lightning.pytorch as L
    from lightning.pytorch.loggers import CSVLogger

    from joulecap.callbacks.lightning import JoulecapCallback

    class Tiny(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(8, 2)

        def training_step(self, batch, batch_idx):
            x, y = batch
            time.sleep(STEP_S)
            return torch.nn.functional.cross_entropy(self.lin(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    cb = JoulecapCallback(every_n_steps=2, carbon={"grid_gco2_per_kwh": 400}, out_file=os.path.join(out_dir, "job.csv"))
    logger = CSVLogger(out_dir, name="run", version=0)
    trainer = L.Trainer(strategy="ddp", accelerator="cpu", devices=2, max_epochs=2, logger=logger, callbacks=[cb],
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        log_every_n_steps=1)
    # 32 samples, 2 ranks, batches of 4: 4 steps per rank and epoch.
    trainer.fit(Tiny(), torch.utils.data.DataLoader(dataset(), batch_size=4))
    return cb, {"callback_metrics": {k: float(v) for k, v in trainer.callback_metrics.items()
                                     if k.startswith("energy/")}}


def run_lightning_cap():
    """power_cap under DDP: each rank's steps follow its fake GPU's limit (test_profiler's SweepWorkload)."""
    import lightning.pytorch as L

    from joulecap.callbacks.lightning import JoulecapCallback
    from test_profiler import SweepWorkload

    wl = SweepWorkload(gpu_num=rank)

    class Capped(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(8, 2)

        def training_step(self, batch, batch_idx):
            x, y = batch
            wl.step()
            return torch.nn.functional.cross_entropy(self.lin(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    cb = JoulecapCallback(power_cap={"time_budget_s": 3}, carbon=False)
    trainer = L.Trainer(strategy="ddp", accelerator="cpu", devices=2, max_epochs=3, logger=False, callbacks=[cb],
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    # 320 samples, 2 ranks, batches of 4: 40 steps per rank and epoch.
    trainer.fit(Capped(), torch.utils.data.DataLoader(dataset(320), batch_size=4))
    pco = cb.meter.optimizer
    return cb, {"cap": {"steps": pco.steps, "ran": wl.steps, "cap_w": pco.cap_w, "owner": pco._owner,
                        "limits": sorted(set(wl.limits))}}


def run_transformers():
    import transformers

    from joulecap.callbacks.transformers import JoulecapCallback

    class Seq(torch.utils.data.Dataset):
        def __init__(self, n=32):
            g = torch.Generator().manual_seed(0)
            self.ids = torch.randint(0, 50, (n, 8), generator=g)
            self.labels = torch.randint(0, 2, (n,), generator=g)

        def __len__(self):
            return len(self.ids)

        def __getitem__(self, i):
            return {"input_ids": self.ids[i], "labels": self.labels[i]}

    class Slow(transformers.TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            time.sleep(STEP_S)

    config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=16, num_labels=2)
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config)
    args = transformers.TrainingArguments(
        output_dir=os.path.join(out_dir, "hf"), num_train_epochs=2, per_device_train_batch_size=4, use_cpu=True,
        report_to="none", save_strategy="no", logging_strategy="no", disable_tqdm=True, dataloader_num_workers=0,
        ddp_backend="gloo")
    trainer = transformers.Trainer(model=model, args=args, train_dataset=Seq(), callbacks=[Slow()])
    cb = JoulecapCallback(every_n_steps=2).attach(trainer)
    trainer.train()
    return cb, {"log_history": [h for h in trainer.state.log_history if any(k.startswith("energy/") for k in h)],
                "world_size": trainer.args.world_size}


def run_alone():
    """distributed=False, driven by hand in the same job: this rank's devices only."""
    from joulecap.callbacks import TrainerMeter

    meter = TrainerMeter(distributed=False, summary=False, gpu_num=rank)
    meter.begin(None)
    meter.epoch_start(0)
    time.sleep(0.2)
    rec = meter.epoch_end()
    meter.end()
    return {"metrics": rec["metrics"], "summary": meter.summary_text()}


cb, extra = {"lightning": run_lightning, "lightning-cap": run_lightning_cap, "transformers": run_transformers}[mode]()
out = {"rank": rank, "out_dir": out_dir, "records": records(cb), "summary": cb.summary, "alone": run_alone(), **extra}
with open(os.path.join(out_dir, "rank%d.json" % rank), "w") as f:
    json.dump(out, f)

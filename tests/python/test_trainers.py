"""The trainer callbacks (joulecap.callbacks) with the real lightning and transformers packages on the fake GPU.

Tiny models made here, plain torch datasets, nothing downloaded.  The values the callbacks log through the
trainers' own loggers must be the snippet tool's: the callback's tool writes its windows to a CSV (the library's
window CSV), and every logged epoch and block of steps must equal its row there.
"""

import csv
import math
import os
import time

import pytest

import joulecap
from joulecap.errors import InvalidArgument

torch = pytest.importorskip("torch")

J_PER_KWH = 3.6e6
CARBON = {"grid_gco2_per_kwh": 400, "price_per_kwh": 0.3, "currency": "EUR"}


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def dataset(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.utils.data.TensorDataset(torch.randn(n, 8, generator=g), torch.randint(0, 2, (n,), generator=g))


def snippet_rows(path):
    """The callback tool's CSV: window name -> (row, energies in J per device)."""
    out = {}
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            e = {k[: -len("_energy_kwh")]: float(v) * J_PER_KWH for k, v in r.items() if k.endswith("_energy_kwh") and v}
            out[r["window"]] = (r, e)
    return out


def assert_metrics_match_row(metrics, prefix, row, energies, carbon=True):
    """Logged metrics of one window == the snippet tool's CSV row of it."""
    for dev, e in energies.items():
        assert metrics[prefix + dev + "_j"] == pytest.approx(e, rel=1e-8, abs=1e-9)
    total = sum(energies.values())
    assert metrics[prefix + "j"] == pytest.approx(total, rel=1e-8)
    assert metrics[prefix + "s"] == pytest.approx(float(row["elapsed_s"]), abs=2e-6)
    assert metrics[prefix + "power_w"] == pytest.approx(total / float(row["elapsed_s"]), rel=1e-4)
    assert metrics[prefix + "coverage"] == 1.0
    if carbon:
        assert metrics[prefix + "kwh"] == pytest.approx(total / J_PER_KWH, rel=1e-8)
        assert metrics[prefix + "gco2e"] == pytest.approx(total / J_PER_KWH * 400, rel=1e-8)
        assert metrics[prefix + "cost"] == pytest.approx(total / J_PER_KWH * 0.3, rel=1e-8)
    # The fake GPU draws a constant 300 W: its energy is 300 W x the window, within one 30 J counter step.
    assert metrics[prefix + "gpu0_j"] == pytest.approx(300 * float(row["elapsed_s"]), abs=30)


# --------------------------------------------------------------------------------------------------------------
# PyTorch Lightning


def lightning_module(step_s=0.01, workload=None):
    L = pytest.importorskip("lightning.pytorch")

    class Tiny(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(8, 2)

        def training_step(self, batch, batch_idx):
            x, y = batch
            if workload is not None:
                workload.step()
            else:
                time.sleep(step_s)  # a step that takes a moment, as real ones do
            return torch.nn.functional.cross_entropy(self.lin(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    return Tiny()


def lightning_trainer(tmp_path, callbacks, max_epochs=2, **kw):
    L = pytest.importorskip("lightning.pytorch")
    from lightning.pytorch.loggers import CSVLogger

    logger = CSVLogger(str(tmp_path), name="run", version=0)
    trainer = L.Trainer(max_epochs=max_epochs, accelerator="cpu", devices=1, logger=logger, callbacks=callbacks,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        log_every_n_steps=1, **kw)
    return trainer, logger


def logged_rows(logger):
    """CSVLogger's metrics.csv: a list of dicts of the non-empty cells, as floats."""
    with open(os.path.join(logger.log_dir, "metrics.csv"), newline="") as f:
        return [{k: float(v) for k, v in r.items() if v != ""} for r in csv.DictReader(f)]


def test_lightning_logs_the_snippet_tools_values_per_epoch_and_per_n_steps(fake, tmp_path):
    from joulecap.callbacks.lightning import JoulecapCallback

    out = tmp_path / "energy.csv"
    cb = JoulecapCallback(gpu_num=0, every_n_steps=3, out_file=out, carbon=CARBON)
    trainer, logger = lightning_trainer(tmp_path, [cb])
    loader = torch.utils.data.DataLoader(dataset(64), batch_size=8)  # 8 steps per epoch
    trainer.fit(lightning_module(), loader)

    rows = snippet_rows(out)
    blocks = ["steps%d-%d" % (a, a + 2) for a in range(1, 17, 3)]  # 16 steps: 5 whole blocks, then step 16 alone
    assert sorted(rows) == sorted(["epoch0", "epoch1"] + blocks)

    logged = logged_rows(logger)
    epochs = [r for r in logged if "energy/epoch_j" in r]
    assert [int(r["epoch"]) for r in epochs] == [0, 1]
    for r in epochs:
        assert_metrics_match_row(r, "energy/epoch_", *rows["epoch%d" % int(r["epoch"])])
    steps = [r for r in logged if "energy/steps_j" in r]
    assert [int(r["step"]) for r in steps] == [3, 6, 9, 12, 15, 16]
    for r, name in zip(steps, blocks):
        assert_metrics_match_row(r, "energy/steps_", *rows[name])
    # The epoch's metrics are in callback_metrics too (ModelCheckpoint, EarlyStopping can use them).
    assert float(trainer.callback_metrics["energy/epoch_j"]) == pytest.approx(epochs[-1]["energy/epoch_j"], rel=1e-6)
    # The records and the summary.
    assert [r["name"] for r in cb.records if r["scope"] == "epoch"] == ["epoch0", "epoch1"]
    assert cb.records[-1]["last_step"] == 16 and cb.records[-1]["first_step"] == 16
    total = sum(r["energy/epoch_j"] for r in epochs)
    assert "2 epochs" in cb.summary and ("%.4g J" % total) in cb.summary
    assert "gCO2e (at 400 g/kWh)" in cb.summary and "EUR" in cb.summary
    assert cb.meter.tool is None  # closed at the end of fit


def test_lightning_auto_gpu_measures_the_cpu_for_a_cpu_model(fake, tmp_path):
    from joulecap.callbacks.lightning import JoulecapCallback

    cb = JoulecapCallback(carbon=False, summary=False)  # gpu_num="auto": the module is on the CPU
    trainer, logger = lightning_trainer(tmp_path, [cb], max_epochs=1)
    trainer.fit(lightning_module(), torch.utils.data.DataLoader(dataset(16), batch_size=8))
    (epoch,) = [r for r in logged_rows(logger) if "energy/epoch_j" in r]
    assert "energy/epoch_cpu_j" in epoch and not any(k.startswith("energy/epoch_gpu") for k in epoch)
    assert "energy/epoch_gco2e" not in epoch and "energy/epoch_kwh" not in epoch
    assert epoch["energy/epoch_j"] == epoch["energy/epoch_cpu_j"] > 0


def test_lightning_partial_coverage_is_logged(fake_env, tmp_path):
    """A GPU lost inside the epoch: the epoch's coverage is below 1 and says which device."""
    from joulecap.callbacks.lightning import JoulecapCallback

    fake_env(scenario="gpu-lost.scn")
    cb = JoulecapCallback(gpu_num=0, summary=False, carbon=False)
    trainer, logger = lightning_trainer(tmp_path, [cb], max_epochs=1)
    t0 = time.monotonic()
    trainer.fit(lightning_module(step_s=0.05), torch.utils.data.DataLoader(dataset(96), batch_size=4))
    (epoch,) = [r for r in logged_rows(logger) if "energy/epoch_j" in r]
    assert epoch["energy/epoch_coverage"] < 1
    assert epoch["energy/epoch_gpu0_coverage"] == epoch["energy/epoch_coverage"]
    assert "partial" in cb.meter.records[0]["estimates"]["gpu0"]
    assert "partial" in cb.meter.summary_text()

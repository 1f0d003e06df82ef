"""The trainer callbacks (joulecap.callbacks) with the real lightning and transformers packages on the fake GPU.

Tiny models made here, plain torch datasets, nothing downloaded.  The values the callbacks log through the
trainers' own loggers must be the snippet tool's: the callback's tool writes its windows to a CSV (the library's
window CSV), and every logged epoch and block of steps must equal its row there.
"""

import csv
import math
import os
import time
from pathlib import Path

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


# --------------------------------------------------------------------------------------------------------------
# Hugging Face transformers


class SeqDataset(torch.utils.data.Dataset):
    def __init__(self, n=32, seq=8, vocab=50, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(0, vocab, (n, seq), generator=g)
        self.labels = torch.randint(0, 2, (n,), generator=g)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def hf_trainer(tmp_path, callbacks, epochs=2, report_to="none"):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=16, num_labels=2)
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config)  # made from a config: nothing downloaded
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "hf"), num_train_epochs=epochs, per_device_train_batch_size=4, use_cpu=True,
        report_to=report_to, save_strategy="no", logging_strategy="no", disable_tqdm=True,
        dataloader_num_workers=0)
    return transformers.Trainer(model=model, args=args, train_dataset=SeqDataset(), callbacks=callbacks)


def test_transformers_logs_the_snippet_tools_values_through_trainer_log(fake, tmp_path):
    from transformers import TrainerCallback

    from joulecap.callbacks.transformers import JoulecapCallback

    class Integration(TrainerCallback):
        """Stands where report_to's integrations stand: before user callbacks."""

        logs = []

        def on_log(self, args, state, control, logs=None, **kwargs):
            self.logs.append(dict(logs))

    seen = Integration()
    trainer = hf_trainer(tmp_path, [seen])
    out = tmp_path / "energy.csv"
    cb = JoulecapCallback(gpu_num=0, every_n_steps=3, out_file=out, carbon=CARBON).attach(trainer)
    trainer.train()

    rows = snippet_rows(out)
    blocks = ["steps%d-%d" % (a, a + 2) for a in range(1, 17, 3)]  # 2 x 8 steps: 5 whole blocks, then step 16
    assert sorted(rows) == sorted(["epoch0", "epoch1"] + blocks)

    epochs = [h for h in trainer.state.log_history if "energy/epoch_j" in h]
    assert [h["step"] for h in epochs] == [8, 16]
    for h, name in zip(epochs, ["epoch0", "epoch1"]):
        assert_metrics_match_row(h, "energy/epoch_", *rows[name])
    steps = [h for h in trainer.state.log_history if "energy/steps_j" in h]
    assert [(h["energy/steps_first"], h["energy/steps_last"]) for h in steps] == [
        (1, 3), (4, 6), (7, 9), (10, 12), (13, 15), (16, 16)]
    for h, name in zip(steps, blocks):
        assert_metrics_match_row(h, "energy/steps_", *rows[name])
        assert h["step"] >= h["energy/steps_last"]  # logged once its result is known
    # The integrations got the same logs.
    assert [x for x in seen.logs if "energy/epoch_j" in x or "energy/steps_j" in x] == [
        {k: v for k, v in h.items() if k != "step"} for h in trainer.state.log_history
        if "energy/epoch_j" in h or "energy/steps_j" in h]
    assert "2 epochs" in cb.summary and "EUR" in cb.summary


def test_transformers_in_callbacks_list_goes_to_log_history_and_warns_about_report_to(fake, tmp_path, monkeypatch):
    from joulecap.callbacks.transformers import JoulecapCallback
    from joulecap.errors import JoulecapWarning

    monkeypatch.setenv("JOULECAP_GRID_GCO2_PER_KWH", "250")
    cb = JoulecapCallback(gpu_num=0, summary=False)
    trainer = hf_trainer(tmp_path, [cb], epochs=1, report_to="tensorboard")
    with pytest.warns(JoulecapWarning, match="attach"):
        trainer.train()
    (h,) = [h for h in trainer.state.log_history if "energy/epoch_j" in h]
    m = cb.records[0]["measurement"]
    assert h["energy/epoch_gpu0_j"] == m.gpu_energy_j[0] and h["energy/epoch_cpu_j"] == m.cpu_energy_j
    assert h["energy/epoch_gco2e"] == pytest.approx(m.total_energy_j / J_PER_KWH * 250, rel=1e-12)
    assert m.gco2e == pytest.approx(h["energy/epoch_gco2e"]) and m.cost is None
    assert "energy/epoch_cost" not in h


# --------------------------------------------------------------------------------------------------------------
# Arguments checked before training; the online power-cap optimizer


def test_bad_arguments_fail_before_training(fake, monkeypatch):
    from joulecap.callbacks.lightning import JoulecapCallback

    for kw, what in [({"every_n_steps": 0}, "every_n_steps"), ({"every_n_steps": 2.5}, "every_n_steps"),
                     ({"power_cap": "yes"}, "power_cap"), ({"power_cap": {"bogus": 1}}, "bogus"),
                     ({"carbon": {"grid_gco2_per_kwh": -1}}, "negative"),
                     ({"gpu_num": 7}, "GPU")]:
        with pytest.raises(joulecap.JoulecapError, match=what):
            JoulecapCallback(**kw)
    monkeypatch.setenv("JOULECAP_PRICE_PER_KWH", "nan")
    with pytest.raises(InvalidArgument, match="JOULECAP_PRICE_PER_KWH.*not finite"):
        JoulecapCallback(gpu_num=0)


@pytest.fixture
def sweep_env(fake_env, tmp_path, monkeypatch):
    """The fake GPU whose power follows its limit, a private state file and journal directory (test_profiler)."""
    fake_env(scenario="h100-sweep.scn", sysfs="norapl", proc="qemu")
    monkeypatch.setenv("JOULECAP_FAKE_NVML_STATE", str(tmp_path / "fake.state"))
    monkeypatch.setenv("JOULECAP_STATE_DIR", str(tmp_path / "journals"))
    monkeypatch.delenv("JOULECAP_CLI", raising=False)
    yield
    joulecap.restore_power_caps()


def test_lightning_power_cap_optimizer_runs_on_the_training_steps_and_puts_the_limit_back(sweep_env, tmp_path):
    from test_profiler import SweepWorkload

    from joulecap.callbacks.lightning import JoulecapCallback

    wl = SweepWorkload()
    cb = JoulecapCallback(gpu_num=0, power_cap={"time_budget_s": 3}, summary=False)
    trainer, logger = lightning_trainer(tmp_path, [cb], max_epochs=3)
    trainer.fit(lightning_module(workload=wl), torch.utils.data.DataLoader(dataset(160), batch_size=4))
    pco = cb.meter.optimizer
    assert pco.steps == wl.steps == 120  # stepped once per training batch
    assert min(wl.limits) < 700  # the steps ran at the caps it tried
    assert pco.result is not None and 200 <= pco.result.cap_w <= 700
    epochs = [r for r in logged_rows(logger) if "energy/epoch_j" in r]
    assert len(epochs) == 3 and all(200 <= r["energy/power_cap_w"] <= 700 for r in epochs)
    cap = joulecap.get_power_cap(0)
    assert cap.limit_w == 700 and cap.manager == "none"  # put back at the end of fit


def test_import_joulecap_needs_no_trainer_package():
    import subprocess
    import sys

    code = ("import sys, joulecap, joulecap.callbacks\n"
            "print(sorted(m for m in ('lightning', 'pytorch_lightning', 'transformers') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_lightning_exception_in_training_puts_the_limit_back_and_closes(sweep_env, tmp_path):
    from test_profiler import SweepWorkload

    from joulecap.callbacks.lightning import JoulecapCallback

    class Failing(SweepWorkload):
        def step(self):
            if self.steps == 60:
                raise RuntimeError("boom")
            super().step()

    wl = Failing()
    out = tmp_path / "energy.csv"
    cb = JoulecapCallback(gpu_num=0, every_n_steps=4, out_file=out, power_cap={"time_budget_s": 20}, summary=False)
    trainer, _ = lightning_trainer(tmp_path, [cb], max_epochs=1)
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit(lightning_module(workload=wl), torch.utils.data.DataLoader(dataset(320), batch_size=4))
    assert min(wl.limits) < 700  # it was profiling when the step raised
    cap = joulecap.get_power_cap(0)
    assert cap.limit_w == 700 and cap.manager == "none"
    assert cb.meter.tool is None
    # The epoch that raised is measured up to the exception; every window has its row.
    names = [r["name"] for r in cb.records]
    assert "epoch0" in names and names.count("epoch0") == 1
    assert sorted(snippet_rows(out)) == sorted(names)


# --------------------------------------------------------------------------------------------------------------
# Under torch.distributed: 2 gloo ranks of a real trainer on the CPU, each on one of the two fake GPUs


TWO_GPUS_W = {"GPU-11111111-2222-4333-8444-555555555555": 300.0, "GPU-aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee": 150.0}


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ddp(tmp_path, mode, world=2, env=None):
    """Starts the ranks as torchrun does (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT) on the fake machine:
    two-gpus.scn, two Intel sockets whose RAPL counters move.  Returns each rank's JSON.  A port taken between
    choosing it and binding it (another process on the machine) gets one more try on another port."""
    for attempt in range(2):
        run = tmp_path / ("try%d" % attempt)
        run.mkdir()
        codes, logs = _start_ddp(run, mode, world, env or {})
        if codes == [0] * world or attempt or not any("EADDRINUSE" in x or "address already in use" in x.lower()
                                                     for x in logs.values()):
            break
    assert codes == [0] * world, logs
    import json

    return [json.loads((run / ("rank%d.json" % r)).read_text()) for r in range(world)]


def _start_ddp(tmp_path, mode, world, extra):
    import shutil
    import subprocess
    import sys

    from conftest import PROC, SCENARIOS, SYSFS, RaplDriver, fake_nvml_library

    sysfs = tmp_path / "sysfs"
    shutil.copytree(SYSFS / "intel-2socket", sysfs, symlinks=True)
    rapl = RaplDriver(sysfs)
    env = dict(os.environ)
    for k in ("JOULECAP_FAKE", "JOULECAP_FAKE_NVML_STATE", "CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER",
              "JOULECAP_DAEMON_SOCKET", "JOULECAP_TEST_HOST_ID", "SLURM_PROCID", "SLURM_LOCALID",
              "OMPI_COMM_WORLD_RANK", "JOULECAP_GRID_GCO2_PER_KWH", "JOULECAP_PRICE_PER_KWH"):
        env.pop(k, None)
    env.update({
        "JOULECAP_NVML_LIBRARY": fake_nvml_library(), "JOULECAP_FAKE_NVML_SCENARIO": str(SCENARIOS / "two-gpus.scn"),
        "JOULECAP_SYSFS_ROOT": str(sysfs), "JOULECAP_PROC_ROOT": str(PROC / "xeon-8480"), "TMPDIR": str(tmp_path),
        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": str(world),
        "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"})
    env.update(extra)
    procs = []
    try:
        for r in range(world):
            e = dict(env, RANK=str(r), LOCAL_RANK=str(r))
            log = open(tmp_path / ("log%d.txt" % r), "w")
            procs.append(subprocess.Popen([sys.executable, str(Path(__file__).parent / "_trainer_ddp_worker.py"),
                                           mode, str(tmp_path)], env=e, stdout=log, stderr=subprocess.STDOUT))
        codes = [p.wait(timeout=180) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        rapl.stop()
    return codes, {r: (tmp_path / ("log%d.txt" % r)).read_text()[-3000:] for r in range(world)}


def assert_job_totals(rec, prefix):
    """One window of rank 0 in job mode: the logged total is the job's distinct devices, each GPU and the host's
    CPU once; the sum over the ranks' own values would count the CPU twice."""
    job = rec["measurement"]
    assert job["type"] == "job"
    devs = job["devices"]
    assert [(d["kind"], d["ranks"]) for d in devs] == [("cpu", [0, 1]), ("gpu", [0]), ("gpu", [1])]
    cpu, gpu0, gpu1 = (d["energy_j"] for d in devs)
    assert cpu > 0 and gpu0 > 0 and gpu1 > 0
    m = rec["metrics"]
    assert m[prefix + "j"] == pytest.approx(cpu + gpu0 + gpu1, rel=1e-12)
    assert m[prefix + "j"] == pytest.approx(job["total_energy_j"], rel=1e-12)
    assert (m[prefix + "cpu_j"], m[prefix + "gpu0_j"], m[prefix + "gpu1_j"]) == (cpu, gpu0, gpu1)
    assert m[prefix + "gpu_j"] == pytest.approx(gpu0 + gpu1, rel=1e-12)
    assert (m[prefix + "hosts"], m[prefix + "gpus"]) == (1, 2)
    assert m[prefix + "s"] == job["elapsed_s"]
    # Each rank measured its own GPU (local rank 0 -> gpu0, 1 -> gpu1) over its window, at the fake GPU's power.
    for d in devs[1:]:
        w = TWO_GPUS_W[d["uuid"]]
        assert d["energy_j"] == pytest.approx(w * d["elapsed_s"], rel=0.1, abs=0.05 * w)
    # What the ranks sent: the CPU by both.  Their plain sum is the double count the job totals avoid.
    sent = sum(x["energy_j"] for r in job["ranks"] for x in r["devices"])
    cpu_sent = [x["energy_j"] for r in job["ranks"] for x in r["devices"] if x["kind"] == "cpu"]
    assert len(cpu_sent) == 2 and all(c > 0 for c in cpu_sent)
    assert sent == pytest.approx(m[prefix + "j"] + cpu_sent[1], rel=1e-9)


@pytest.fixture(scope="module")
def lightning_ddp(tmp_path_factory):
    pytest.importorskip("lightning.pytorch")
    tmp = tmp_path_factory.mktemp("lightning-ddp")
    ranks = run_ddp(tmp, "lightning")
    return Path(ranks[0]["out_dir"]), ranks


def test_lightning_ddp_logs_the_jobs_totals_on_rank_0(lightning_ddp):
    tmp, (r0, r1) = lightning_ddp
    names = ["steps1-2", "steps3-4", "epoch0", "steps5-6", "steps7-8", "epoch1"]  # 4 steps per rank and epoch
    assert [r["name"] for r in r0["records"]] == names
    for rec in r0["records"]:
        assert_job_totals(rec, "energy/%s_" % rec["scope"])
    # What rank 0's logger wrote (CSVLogger: rank 0 only) is the job's, epoch by epoch and block by block.
    with open(tmp / "run" / "version_0" / "metrics.csv", newline="") as f:
        logged = [{k: float(v) for k, v in r.items() if v != ""} for r in csv.DictReader(f)]
    epochs = [r for r in logged if "energy/epoch_j" in r]
    assert [int(r["epoch"]) for r in epochs] == [0, 1]
    for row, rec in zip(epochs, [r for r in r0["records"] if r["scope"] == "epoch"]):
        for k, v in rec["metrics"].items():
            assert row[k] == pytest.approx(v, rel=1e-12), k
    steps = [r for r in logged if "energy/steps_j" in r]
    assert [r["energy/steps_j"] for r in steps] == [
        pytest.approx(r["metrics"]["energy/steps_j"], rel=1e-12) for r in r0["records"] if r["scope"] == "steps"]
    # Every rank holds the same values (rank 0's, broadcast), so monitors agree across ranks.
    assert [r["metrics"] for r in r1["records"]] == [r["metrics"] for r in r0["records"]]
    assert r1["records"][0]["measurement"]["type"] == "local"
    assert r0["callback_metrics"] == r1["callback_metrics"]
    assert r0["callback_metrics"]["energy/epoch_j"] == pytest.approx(epochs[-1]["energy/epoch_j"], rel=1e-12)
    # Rank 0 wrote the job's CSV: one row per window and distinct device.
    from joulecap import read_csv

    df = read_csv(tmp / "job.csv")
    assert len(df) == 6 * 3 and list(df["window"].unique()) == names
    assert "2 ranks on 1 host" in r0["summary"] and "not in joulecap yet" not in r0["summary"]


def test_lightning_ddp_distributed_false_logs_each_ranks_own_devices(lightning_ddp):
    _, ranks = lightning_ddp
    for r, own in zip(ranks, ["gpu0", "gpu1"]):
        m = r["alone"]["metrics"]
        assert sorted(k for k in m if k.endswith("_j")) == sorted(
            ["energy/epoch_j", "energy/epoch_cpu_j", "energy/epoch_%s_j" % own])
        assert "this rank's devices only" in r["alone"]["summary"] and "distributed=False" in r["alone"]["summary"]


def test_transformers_ddp_logs_the_jobs_totals(tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    r0, r1 = run_ddp(tmp_path, "transformers")
    assert r0["world_size"] == 2
    names = ["steps1-2", "steps3-4", "epoch0", "steps5-6", "steps7-8", "epoch1"]  # 32 samples / 2 ranks / 4
    assert [r["name"] for r in r0["records"]] == names
    for rec in r0["records"]:
        assert_job_totals(rec, "energy/%s_" % rec["scope"])
    epochs = [h for h in r0["log_history"] if "energy/epoch_j" in h]
    assert [h["energy/epoch_j"] for h in epochs] == [
        r["metrics"]["energy/epoch_j"] for r in r0["records"] if r["scope"] == "epoch"]
    assert r1["log_history"] == r0["log_history"]  # the same logs on every rank
    assert "2 ranks on 1 host" in r0["summary"]


def _rank_payload(rank, host, gpus, cpu=2.0, elapsed=1.0):
    devs = [{"kind": "cpu", "label": "cpu", "uuid": "", "name": "cpu", "index": -1, "energy_j": cpu,
             "source": "rapl", "coverage": 1.0, "uncertainty_j": 0.0, "state": "ok"}]
    for label, uuid, e in gpus:
        devs.append({"kind": "gpu", "label": label, "uuid": uuid, "name": "H100", "index": 0, "energy_j": e,
                     "source": "counter", "coverage": 1.0 if e == e else 0.0, "uncertainty_j": 0.0, "state": "ok"})
    return {"rank": rank, "host_id": host, "hostname": "node-" + host, "name": "w", "elapsed_s": elapsed,
            "resolved": True, "devices": devs}


def test_job_metric_names_on_two_hosts_and_ranks_that_see_their_gpu_as_cuda0():
    """Job metrics without processes: hosts numbered in rank order, every device once; two GPUs of one host that
    their ranks both call gpu0 (CUDA_VISIBLE_DEVICES per rank) are told apart by rank."""
    from joulecap.callbacks import metrics_of
    from joulecap.distributed import JobMeasurement

    ranks = [_rank_payload(0, "a", [("gpu0", "GPU-A0", 100.0)], cpu=10.0),
             _rank_payload(1, "a", [("gpu0", "GPU-A1", 50.0)], cpu=11.0, elapsed=2.0),
             _rank_payload(2, "b", [("gpu0", "GPU-B0", 30.0)], cpu=20.0),
             _rank_payload(3, "b", [("gpu0", "GPU-B0", 31.0)], cpu=21.0)]  # shares rank 2's GPU
    jm = JobMeasurement("w", ranks)
    carbon = joulecap.carbon_settings(grid_gco2_per_kwh=400)
    m = metrics_of(jm, "energy/", "epoch", carbon)
    assert m["energy/epoch_j"] == 10 + 100 + 50 + 20 + 30 == jm.total_energy_j
    assert {k: v for k, v in m.items() if k.endswith("_j")} == {
        "energy/epoch_j": 210.0, "energy/epoch_host0_cpu_j": 10.0, "energy/epoch_host0_gpu0_rank0_j": 100.0,
        "energy/epoch_host0_gpu0_rank1_j": 50.0, "energy/epoch_host1_cpu_j": 20.0, "energy/epoch_host1_gpu0_j": 30.0,
        "energy/epoch_host0_j": 160.0, "energy/epoch_host1_j": 50.0, "energy/epoch_gpu_j": 180.0,
        "energy/epoch_cpu_j": 30.0}
    assert (m["energy/epoch_hosts"], m["energy/epoch_gpus"]) == (2, 3)
    assert m["energy/epoch_s"] == 2.0 and m["energy/epoch_power_w"] == 105.0
    assert m["energy/epoch_host0_gpu0_rank1_power_w"] == 25.0  # over its own rank's window
    assert m["energy/epoch_gco2e"] == pytest.approx(210 / J_PER_KWH * 400)
    # A GPU lost on its only rank: left out of the sums, its coverage logged.
    ranks[1]["devices"][1].update(energy_j=math.nan, coverage=0.0, state="lost")
    m = metrics_of(JobMeasurement("w", ranks), "energy/", "epoch")
    assert "energy/epoch_host0_gpu0_rank1_j" not in m and m["energy/epoch_j"] == 160.0
    assert m["energy/epoch_coverage"] == 0.0 and m["energy/epoch_host0_gpu0_rank1_coverage"] == 0.0
    with pytest.raises(TypeError, match="Measurement"):
        metrics_of({"energy_j": 1.0}, "energy/", "epoch")


def test_callback_pickles_without_its_tool(fake, tmp_path):
    """ddp_spawn pickles the trainer with its callbacks into each process: the tool stays behind, and each
    process opens its own when fit starts."""
    import pickle

    from joulecap.callbacks.lightning import JoulecapCallback

    cb = JoulecapCallback(gpu_num=0, summary=False, carbon=False, out_file=tmp_path / "e.csv")
    assert cb.meter.tool is None and not (tmp_path / "e.csv").exists()  # GPU checked; measured from fit's start
    cb.meter.begin(None)
    assert cb.meter.tool is not None
    copy = pickle.loads(pickle.dumps(cb))
    assert copy.meter.tool is None and copy.meter.gpu_num == 0 and cb.meter.tool is not None
    cb.meter.end()
    assert (tmp_path / "e.csv").exists()


def test_distributed_true_needs_a_process_group_at_the_start_of_training(fake):
    from joulecap.callbacks import TrainerMeter
    from joulecap.errors import StateError

    import torch.distributed as dist

    if dist.is_initialized():
        pytest.skip("a process group is initialised in this process")
    with pytest.raises(InvalidArgument, match="distributed"):
        TrainerMeter(distributed="yes")
    meter = TrainerMeter(distributed=True, summary=False)
    with pytest.raises(StateError, match="init_process_group"):
        meter.begin(None)


def test_lightning_ddp_power_cap_one_cap_for_every_rank_and_the_limits_back(fake_env, tmp_path, monkeypatch):
    """power_cap under DDP: each rank's optimizer is made at the start of fit, after the process group, on its GPU
    (h100x2-sweep: rank r on GPU r); they profile on the training steps and end on one cap, logged the same on
    every rank; both limits are back after fit."""
    pytest.importorskip("lightning.pytorch")
    from conftest import SCENARIOS

    fake_env(scenario="h100x2-sweep.scn", sysfs="norapl", proc="qemu")
    extra = {"JOULECAP_FAKE_NVML_SCENARIO": str(SCENARIOS / "h100x2-sweep.scn"),
             "JOULECAP_FAKE_NVML_STATE": str(tmp_path / "fake.state"), "JOULECAP_STATE_DIR": str(tmp_path / "journals")}
    for k, v in extra.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("JOULECAP_CLI", raising=False)
    try:
        ranks = run_ddp(tmp_path, "lightning-cap", env=extra)
    finally:
        joulecap.restore_power_caps()
    for r in ranks:
        assert r["cap"]["steps"] == r["cap"]["ran"] == 120  # stepped once per training batch on every rank
        assert min(r["cap"]["limits"]) < 700  # the steps ran at the caps tried
        assert r["cap"]["cap_w"] == ranks[0]["cap"]["cap_w"] and 200 <= r["cap"]["cap_w"] <= 700
    assert [x["owner"] for x in (r["cap"] for r in ranks)] == [True, True]
    logged = [[rec["metrics"]["energy/power_cap_w"] for rec in r["records"] if rec["scope"] == "epoch"] for r in ranks]
    assert len(logged[0]) == 3 and logged[0] == logged[1]
    assert all(rec["measurement"]["type"] == "job" for rec in ranks[0]["records"])
    for g in range(2):
        cap = joulecap.get_power_cap(g)
        assert cap.limit_w == 700 and cap.manager == "none"

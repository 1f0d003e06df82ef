"""The power-cap profiler from Python (power_cap_profiler, PowerCapOptimizer) on the fake NVML in sweep mode.

The fake GPU of tests/scenarios/h100-sweep.scn draws the power that tests/scenarios/h100-sweep.csv gives at the
limit in force; the fake cannot slow the test's code down, so the workload (SweepWorkload below) reads the limit
through joulecap and takes the sweep's time per step at that limit (docs/fake-nvml.md, "Sweep mode").  The
sweep's ED2P optimum is 420 W (its knee), with the 50 W coarse caps either side 2.5% and 3.1% worse.
"""

import bisect
import copy
import csv
import datetime
import json
import os
import sys
import time
import warnings

import pytest

import joulecap
from joulecap import _joulecap
from joulecap.errors import FileError, InvalidArgument, JoulecapWarning, PermissionDenied

torch = pytest.importorskip("torch")

from conftest import SCENARIOS  # noqa: E402

SWEEP_CSV = SCENARIOS / "h100-sweep.csv"


# --------------------------------------------------------------------------------------------------------------
# The workload helper (tests only, not part of joulecap)


class SweepWorkload:
    """A step that takes as long as the sweep says at the GPU's current power limit (read through joulecap).

    The fake GPU's power follows its limit by itself (sweep mode); its speed must be played by the caller.
    Steps follow one another on a fixed schedule: a step ends time_per_step(limit) after the previous one
    ended, so the caller's own work between steps (the training step's CPU work, the profiler's bookkeeping)
    is part of the step as it would overlap with the GPU's work, unless it took longer than half a step.
    """

    def __init__(self, path=SWEEP_CSV, gpu_num=0):
        with open(path, newline="") as f:
            rows = sorted(csv.DictReader(f), key=lambda r: float(r["power_limit_w"]))
        self.caps = [float(r["power_limit_w"]) for r in rows]
        self.times = [float(r["time_per_step_s"]) for r in rows]
        self.powers = [float(r["avg_power_w"]) for r in rows]
        self.gpu_num = gpu_num
        self.steps = 0
        self.limits = []
        self._last_end = None

    def time_per_step(self, cap):
        return self._interp(cap, self.times)

    def power(self, cap):
        return self._interp(cap, self.powers)

    def _interp(self, cap, ys):
        c = self.caps
        if cap <= c[0]:
            return ys[0]
        if cap >= c[-1]:
            return ys[-1]
        i = bisect.bisect_left(c, cap)
        return ys[i - 1] + (ys[i] - ys[i - 1]) * (cap - c[i - 1]) / (c[i] - c[i - 1])

    def ed2p(self, cap):
        t = self.time_per_step(cap)
        return self.power(cap) * t**3

    def step(self):
        now = time.monotonic()
        limit = joulecap.get_power_cap(self.gpu_num).limit_w
        t = self.time_per_step(limit)
        start = self._last_end if self._last_end is not None and now - self._last_end < 0.5 * t else now
        end = start + t
        while True:
            left = end - time.monotonic()
            if left <= 0:
                break
            time.sleep(left)
        self._last_end = end
        self.steps += 1
        self.limits.append(limit)


class SweepModel(torch.nn.Module):
    """A tiny model whose forward pass is one SweepWorkload step."""

    def __init__(self, workload, fail_at=None, exc=RuntimeError):
        super().__init__()
        self.workload = workload
        self.lin = torch.nn.Linear(8, 4)
        self.bn = torch.nn.BatchNorm1d(4)
        self.fail_at, self.exc = fail_at, exc
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.fail_at is not None and self.calls >= self.fail_at:
            raise self.exc("boom at step %d" % self.calls)
        self.workload.step()
        return self.bn(self.lin(x))


def batches(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(16, 8, generator=g), torch.randint(0, 4, (16,), generator=g)) for _ in range(n)]


def trained(model, data):
    """A model and an Adam optimizer with state (two steps taken), as in a job that already trained a little."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss_fn = torch.nn.CrossEntropyLoss()
    for x, y in data[:2]:
        opt.zero_grad()
        loss_fn(model.bn(model.lin(x)), y).backward()
        opt.step()
    return opt, loss_fn


def tensors_equal(a, b):
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(tensors_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(tensors_equal(x, y) for x, y in zip(a, b))
    if hasattr(a, "shape"):
        return torch.equal(a, b)
    return a == b


# --------------------------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(autouse=True)
def _one_thread():
    # On a busy 2-core machine torch's second intra-op thread wakes late after every sleep and adds ~10 ms to
    # random steps; the tiny model needs no threads.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def sweep_env(fake_env, tmp_path, monkeypatch):
    """fake_env plus a state file shared with the guardian and the CLI, and a private journal directory."""

    def setup(scenario="h100-sweep.scn"):
        fake_env(scenario=scenario, sysfs="norapl", proc="qemu")
        monkeypatch.setenv("JOULECAP_FAKE_NVML_STATE", str(tmp_path / "fake.state"))
        monkeypatch.setenv("JOULECAP_STATE_DIR", str(tmp_path / "journals"))
        monkeypatch.delenv("JOULECAP_CLI", raising=False)
        return dict(os.environ)

    yield setup
    joulecap.restore_power_caps()


def journals(env):
    d = env["JOULECAP_STATE_DIR"]
    return sorted(f for f in os.listdir(d) if not f.endswith(".lock")) if os.path.isdir(d) else []


def assert_untouched(env, limit=700.0):
    cap = joulecap.get_power_cap(0)
    assert cap.limit_w == limit and cap.manager == "none"
    assert journals(env) == []


# --------------------------------------------------------------------------------------------------------------
# The fake's sweep mode


def test_sweep_mode_power_follows_the_limit(sweep_env):
    sweep_env()
    wl = SweepWorkload()
    tool = joulecap.EnergyMeasurementTool(None, gpu_num=0)
    try:
        for cap in (420, 700, 300):
            joulecap.set_power_cap(0, cap)
            time.sleep(0.15)  # the new limit takes effect at the next 100 ms counter step
            tool.start()
            time.sleep(0.5)
            m = tool.stop()
            assert m.gpu_energy_j[0] / m.elapsed_s == pytest.approx(wl.power(cap), rel=0.07)
    finally:
        tool.close()
    joulecap.reset_power_cap(0)


def test_sweep_key_errors_are_reported(sweep_env, tmp_path, capfd):
    sweep_env()
    bad = tmp_path / "bad.scn"
    bad.write_text("[device]\nloaded_w = 300\nsweep = %s\n" % SWEEP_CSV)
    os.environ["JOULECAP_FAKE_NVML_SCENARIO"] = str(bad)
    with pytest.raises(joulecap.JoulecapError):
        joulecap.get_power_cap(0)
    assert "sweep and loaded_w both set" in capfd.readouterr().err
    missing = tmp_path / "missing.scn"
    missing.write_text("[device]\nsweep = no-such.csv\n")
    os.environ["JOULECAP_FAKE_NVML_SCENARIO"] = str(missing)
    with pytest.raises(joulecap.JoulecapError):
        joulecap.get_power_cap(0)
    assert "no-such.csv" in capfd.readouterr().err


# --------------------------------------------------------------------------------------------------------------
# power_cap_profiler


def test_profiler_finds_the_known_optimum_and_leaves_everything_as_it_was(sweep_env, tmp_path):
    env = sweep_env()
    wl = SweepWorkload()
    model = SweepModel(wl)
    data = batches()
    opt, loss_fn = trained(model, data)
    weights = copy.deepcopy(model.state_dict())
    opt_state = copy.deepcopy(opt.state_dict())
    model.eval()
    out = tmp_path / "caps.csv"

    t0 = time.monotonic()
    r = joulecap.profile_power_cap(model, data, 0, train=True, loss_fn=loss_fn, optimizer=opt, out_file=out,
                                   time_budget_s=15, steps_on_gpu=True)
    took = time.monotonic() - t0
    cap = r.cap_w
    print("took %.2f s, profiled %.2f s, cap %g W, trials %s" % (took, r.profile_seconds, cap,
                                                                 [round(t["cap_w"]) for t in r.trials]))
    assert took < 20

    best_cap, best = _joulecap.Sweep(str(SWEEP_CSV)).best_cap("ed2p")
    assert best_cap == 420
    assert 200 <= cap <= 700
    assert abs(cap - best_cap) <= 40, cap
    assert wl.ed2p(cap) <= 1.035 * wl.ed2p(best_cap), (cap, wl.ed2p(cap) / wl.ed2p(best_cap))

    # The limit found in force is back, the session is closed, the model and optimizer are as they were.
    assert_untouched(env)
    assert tensors_equal(model.state_dict(), weights)
    assert tensors_equal(opt.state_dict(), opt_state)
    assert model.training is False
    assert all(p.grad is not None for p in model.parameters())  # as trained() left them
    assert min(wl.limits) < 700 and max(wl.limits) == 700  # caps did change while profiling

    assert r.cap_w == cap and r.binding and r.objective == "ed2p" and r.limit_before_w == 700
    assert r.profile_seconds <= 15.5
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0].keys()) == joulecap.profiler.CSV_COLUMNS
    trials = [row for row in rows if row["row"] == "trial"]
    assert len(trials) == len(r.trials) >= 11 and rows[-1]["row"] == "recommended"
    assert float(rows[-1]["cap_w"]) == cap and rows[-1]["binding"] == "1" and "ED2P" in rows[-1]["reason"]
    assert {float(t["cap_w"]) for t in trials} >= {700.0, 650.0, 450.0, 400.0, 200.0}
    for t in trials:
        assert 200 <= float(t["cap_w"]) <= 700
        p = float(t["power_w"])
        assert p == pytest.approx(wl.power(float(t["cap_w"])), rel=0.1)


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_profiler_restores_the_cap_after_an_exception(sweep_env, exc):
    env = sweep_env()
    wl = SweepWorkload()
    model = SweepModel(wl, fail_at=30, exc=exc)  # ~1.2 s in: the second cap is in force
    data = batches()
    opt, loss_fn = trained(model, data)
    weights = copy.deepcopy(model.state_dict())
    with pytest.raises(exc, match="boom"):
        joulecap.power_cap_profiler(model, data, 0, train=True, loss_fn=loss_fn, optimizer=opt, time_budget_s=10,
                                    steps_on_gpu=True)
    assert wl.limits[-1] < 700
    assert_untouched(env)
    assert tensors_equal(model.state_dict(), weights)


def test_profiler_restores_a_cap_set_before(sweep_env):
    """The limit found in force (here set by set_power_cap) is what comes back, and the session keeps it."""
    env = sweep_env()
    joulecap.set_power_cap(0, 600)
    wl = SweepWorkload()
    cap = joulecap.power_cap_profiler(SweepModel(wl), batches(), 0, caps_w=[500, 400], time_budget_s=6, steps_on_gpu=True)
    assert cap in (500, 400)
    assert set(wl.limits) <= {600.0, 500.0, 400.0} and 400.0 in wl.limits
    now = joulecap.get_power_cap(0)
    assert now.limit_w == 600 and now.manager == "session" and now.saved_limit_w == 700
    assert joulecap.reset_power_cap(0).did == "saved"
    assert_untouched(env)


class KwModel(torch.nn.Module):
    def __init__(self, workload):
        super().__init__()
        self.workload, self.lin, self.seen = workload, torch.nn.Linear(8, 4), []

    def forward(self, x, y=None):
        self.workload.step()
        self.seen.append(("kw" if y is not None else "x", tuple(x.shape)))
        return self.lin(x)


def test_profiler_batch_forms(sweep_env):
    """A dict of keyword arguments (loss_fn(outputs, batch)) for training; bare input tensors for inference."""
    env = sweep_env()
    wl = SweepWorkload()
    model = KwModel(wl)
    data = [{"x": x, "y": y} for x, y in batches(3)]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = copy.deepcopy(model.state_dict())
    cap = joulecap.power_cap_profiler(model, data, 0, train=True, loss_fn=lambda out, b: out.sum() * 0 + out.mean(),
                                      optimizer=opt, caps_w=[700, 450], time_budget_s=2.5, steps_on_gpu=True)
    assert cap in (700, 450) and model.seen and all(k == "kw" for k, _ in model.seen)
    assert tensors_equal(model.state_dict(), before)
    model.seen.clear()
    model.train()
    cap = joulecap.power_cap_profiler(model, [x for x, _ in batches(3)], 0, caps_w=[450], time_budget_s=1.5,
                                      steps_on_gpu=True)
    assert cap == 450 and all(k == "x" for k, _ in model.seen) and model.training  # mode put back
    assert_untouched(env)


def _invalid_calls(model, data, tmp_path):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss_fn = torch.nn.CrossEntropyLoss()
    p = joulecap.power_cap_profiler
    return [
        (lambda: p(model, data, 0, train=True), "loss_fn and optimizer"),
        (lambda: p(model, data, 0, train=True, loss_fn=loss_fn), "loss_fn and optimizer"),
        (lambda: p(model, data, 0, objective="joules"), "ed2p, edp, energy"),
        (lambda: p(model, data, 0, objective="energy-slowdown", max_slowdown=0), "max_slowdown"),
        (lambda: p(model, data, 0, objective="energy-slowdown", max_slowdown=-0.1), "max_slowdown"),
        (lambda: p(model, data, 0, max_slowdown=0.05), "energy-slowdown"),
        (lambda: p(model, data, 0, caps_w=[500, 150]), "200 W to 700 W"),
        (lambda: p(model, data, 0, caps_w=[800]), "200 W to 700 W"),
        (lambda: p(model, data, 0, caps_w=[]), "caps is empty"),
        (lambda: p(model, data, 0, time_budget_s=0), "time_budget"),
        (lambda: p(model, [], 0), "no batch"),
        (lambda: p(model, iter([]), 0), "no batch"),
        (lambda: p(model, data, 7), "GPU"),
        (lambda: p(model, data, 0, out_file=tmp_path / "no-such-dir" / "x.csv"), "cannot create the CSV file"),
    ]


def test_profiler_checks_its_arguments_before_any_change(sweep_env, tmp_path):
    env = sweep_env()
    model = SweepModel(SweepWorkload())
    for call, words in _invalid_calls(model, batches(2), tmp_path):
        with pytest.raises(joulecap.JoulecapError, match=words) as e:
            call()
        assert isinstance(e.value, (InvalidArgument, FileError, LookupError)), e.value
        assert model.calls == 0
        assert_untouched(env)


def test_profiler_without_permission_says_so_before_any_step(sweep_env):
    env = sweep_env("h100-sweep-no-permission.scn")
    model = SweepModel(SweepWorkload())
    with pytest.raises(PermissionDenied, match="CAP_SYS_ADMIN") as e:
        joulecap.power_cap_profiler(model, batches(2), 0, time_budget_s=3)
    assert "root" in str(e.value)
    assert model.calls == 0
    assert_untouched(env)
    with pytest.raises(PermissionDenied):
        joulecap.PowerCapOptimizer(0)
    assert_untouched(env)


class ConstantStep(torch.nn.Module):
    def __init__(self, seconds):
        super().__init__()
        self.seconds = seconds
        self.lin = torch.nn.Linear(8, 4)

    def forward(self, x):
        time.sleep(self.seconds)
        return self.lin(x)


def test_profiler_reports_caps_that_do_not_bind(sweep_env, tmp_path):
    env = sweep_env("h100-constant-300w.scn")  # the GPU draws 300 W whatever the cap above it
    out = tmp_path / "caps.csv"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = joulecap.profile_power_cap(ConstantStep(0.02), batches(4), 0, caps_w=[700, 550, 400], out_file=out,
                                       time_budget_s=4, steps_on_gpu=True)
    cap = r.cap_w
    assert cap in (700, 550, 400)
    msgs = [str(w.message) for w in caught if issubclass(w.category, JoulecapWarning)]
    assert any("do not bind" in m for m in msgs), msgs
    assert not r.binding and "bind" in r.reason
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows[-1]["row"] == "recommended" and rows[-1]["binding"] == "0"
    assert_untouched(env)


class NoisyCpuStep(torch.nn.Module):
    """A small CNN's training step on the CPU, as a new user's first try: its time varies from step to step and
    drifts with whatever else the host does, and it does not depend on the GPU's cap at all."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3)
        self.lin = torch.nn.Linear(8 * 14 * 14, 4)
        self.rng = __import__("random").Random(15)

    def forward(self, x):
        time.sleep(self.rng.lognormvariate(-4.6, 0.3))  # ~10 ms, 30% spread: a busy host
        return self.lin(torch.relu(self.conv(x)).flatten(1))


def test_issue15_fake_constant_gpu_and_a_cpu_model_keeps_the_default_and_says_why(sweep_env, tmp_path):
    """The issue's case: the fake H100 draws 300 W whatever the job does, the model is on the CPU.  Before, the
    profiler recommended 650 W ("energy -9.7%, time -9.7% vs 700 W") on a trial with 31% relative error, and 200 W
    on a rerun.  Now: the default limit, the reason why, a warning, and every saving with its interval."""
    env = sweep_env("h100-constant-300w.scn")
    model = NoisyCpuStep()
    data = [(torch.randn(8, 3, 16, 16), torch.randint(0, 4, (8,))) for _ in range(4)]
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    out = tmp_path / "caps.csv"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = joulecap.profile_power_cap(model, data, 0, train=True, loss_fn=torch.nn.CrossEntropyLoss(),
                                       optimizer=opt, out_file=out, time_budget_s=8)
    cap = r.cap_w
    assert cap == 700 == r.cap_w == r.default_limit_w and not r.measurably_better
    assert r.reason.startswith("No cap can be shown to make these steps better: the model is on cpu, not on GPU 0")
    assert r.energy_saving == 0 and r.slowdown == 0 and r.energy_saving_ci == 0
    msgs = [str(w.message) for w in caught if issubclass(w.category, JoulecapWarning)]
    assert any("not on GPU 0" in m and "model.to('cuda:0')" in m for m in msgs), msgs
    assert r.warnings and "not on GPU 0" in r.warnings[0]
    # Every trial's spread is in the CSV, and the recommended row says what was kept and why.
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0].keys()) == joulecap.profiler.CSV_COLUMNS
    for row in rows[:-1]:
        assert float(row["rel_se_time"]) > 0 and float(row["rel_se_objective"]) > 0
    last = rows[-1]
    assert last["cap_w"] == "700" and last["measurably_better"] == "0" and last["default_limit_w"] == "700"
    assert last["energy_saving"] == "0" and last["energy_saving_ci"] == "0" and "not on GPU 0" in last["warnings"]
    assert_untouched(env)


def test_savings_carry_intervals_on_the_sweep(sweep_env):
    """On the sweep scenario the knee is still found (test above) and the savings come with intervals."""
    sweep_env()
    wl = SweepWorkload()
    r = joulecap.profile_power_cap(SweepModel(wl), batches(), 0, time_budget_s=12, steps_on_gpu=True)
    cap = r.cap_w
    assert r.measurably_better and r.cap_w == cap == r.candidate_cap_w and abs(cap - 420) <= 40
    assert 0 < r.energy_saving_ci < 0.1 and 0 < r.slowdown_ci < 0.1
    lo, hi = r.energy_saving_interval
    true_saving = 1 - wl.power(cap) * wl.time_per_step(cap) / (wl.power(700) * wl.time_per_step(700))
    assert lo - r.energy_saving_ci < true_saving < hi + r.energy_saving_ci  # twice the 90% half-width
    assert "+/-" in r.reason and "(90% confidence)" in r.reason
    assert r.candidate_gain > r.candidate_gain_ci > 0


# --------------------------------------------------------------------------------------------------------------
# PowerCapOptimizer


def test_online_optimizer_profiles_in_the_loop_then_keeps_its_cap(sweep_env, tmp_path):
    env = sweep_env()
    wl = SweepWorkload()
    model = SweepModel(wl)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loss_fn = torch.nn.CrossEntropyLoss()
    data = batches(8)
    out = tmp_path / "online.csv"
    ran = after = 0
    with joulecap.PowerCapOptimizer(0, time_budget_s=6, out_file=out) as pco:
        assert not pco.done and pco.cap_w == 700
        while after < 10 and ran < 1000:
            x, y = data[ran % len(data)]
            opt.zero_grad()
            loss_fn(model(x), y).backward()
            opt.step()
            ran += 1
            pco.step()
            if pco.done:
                after += 1
                assert joulecap.get_power_cap(0).limit_w == pytest.approx(pco.cap_w)
        assert pco.done and pco.steps == ran == wl.steps
        assert 200 <= pco.cap_w <= 700 and pco.cap_w == pco.result.cap_w
        assert pco.result.binding and len(pco.result.trials) >= 5
        assert pco.result.profile_seconds <= 6.5
        # Every step ran at a cap the profiler set; after profiling at the chosen one.
        assert wl.limits[-10:] == [pytest.approx(pco.cap_w)] * 10
        assert min(wl.limits) < 700
    assert_untouched(env)
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows[-1]["row"] == "recommended" and float(rows[-1]["cap_w"]) == pco.cap_w


def test_online_optimizer_close_before_done_restores(sweep_env):
    env = sweep_env()
    wl = SweepWorkload()
    pco = joulecap.PowerCapOptimizer(0, time_budget_s=20)
    for _ in range(40):
        wl.step()
        pco.step()
    assert not pco.done and wl.limits[-1] < 700
    pco.close()
    assert pco.result is not None and 200 <= pco.result.cap_w <= 700  # the recommendation so far
    assert_untouched(env)
    pco.close()  # twice is fine


# --------------------------------------------------------------------------------------------------------------
# torch.distributed: two ranks on two fake GPUs agree on one cap


def _rank_done():
    """Ends a DDP rank that finished and wrote its results, skipping the interpreter's teardown: after a gloo
    DDP backward, torch can abort a process at exit ("terminate called without an active exception", SIGABRT;
    1 run in 20 of a plain DDP script without joulecap), which spawn reported as the test failing."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _ddp_rank(rank, world, port, env, out_dir, gpus=None):
    os.environ.update(env)
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method="tcp://127.0.0.1:%d" % port, rank=rank, world_size=world)
    gpu = rank % (gpus or world)
    try:
        wl = SweepWorkload(gpu_num=gpu)
        model = torch.nn.parallel.DistributedDataParallel(SweepModel(wl))
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        loss_fn = torch.nn.CrossEntropyLoss()
        data = batches(4, seed=rank)
        caps_seen = []
        ran = after = 0
        with joulecap.PowerCapOptimizer(gpu_num=gpu, time_budget_s=5) as pco:
            owner = pco._hold is not None
            while after < 5 and ran < 1000:
                x, y = data[ran % len(data)]
                opt.zero_grad()
                loss_fn(model(x), y).backward()
                opt.step()
                ran += 1
                pco.step()
                if pco.done:
                    after += 1
                    caps_seen.append(joulecap.get_power_cap(gpu).limit_w)
            res = {"rank": rank, "owner": owner, "done": pco.done, "cap_w": pco.cap_w, "steps": pco.steps, "ran": ran,
                   "caps_seen": caps_seen, "result_cap": pco.result.cap_w, "trials": len(pco.result.trials),
                   "limits": sorted(set(wl.limits))}
        dist.barrier()  # every rank's cap back before anyone reads it
        res["after_close"] = joulecap.get_power_cap(gpu).limit_w
        with open(os.path.join(out_dir, "rank%d.json" % rank), "w") as f:
            json.dump(res, f)
    finally:
        dist.destroy_process_group()
    _rank_done()


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_ranks_choose_one_cap(sweep_env, tmp_path):
    env = sweep_env("h100x2-sweep.scn")
    import torch.multiprocessing as mp

    mp.spawn(_ddp_rank, args=(2, _free_port(), env, str(tmp_path)), nprocs=2, join=True)
    res = [json.loads((tmp_path / ("rank%d.json" % r)).read_text()) for r in range(2)]
    for r in res:
        assert r["done"] and r["steps"] == r["ran"]
        assert r["caps_seen"] == [r["cap_w"]] * 5 and r["result_cap"] == r["cap_w"] and r["trials"] >= 3
        assert r["after_close"] == 700 and min(r["limits"]) < 700
    assert res[0]["cap_w"] == res[1]["cap_w"] and 200 <= res[0]["cap_w"] <= 700
    assert res[0]["limits"] == res[1]["limits"]  # every cap was set on both GPUs
    for g in range(2):
        cap = joulecap.get_power_cap(g)
        assert cap.limit_w == 700 and cap.manager == "none"
    assert journals(env) == []


def test_ddp_ranks_sharing_a_gpu_leave_its_cap_to_one(sweep_env, tmp_path):
    """4 ranks on 2 GPUs: the lowest rank on each GPU owns its cap; all 4 follow rank 0's decisions."""
    env = sweep_env("h100x2-sweep.scn")
    import torch.multiprocessing as mp

    mp.spawn(_ddp_rank, args=(4, _free_port(), env, str(tmp_path), 2), nprocs=4, join=True)
    res = [json.loads((tmp_path / ("rank%d.json" % r)).read_text()) for r in range(4)]
    assert [r["owner"] for r in res] == [True, True, False, False]
    for r in res:
        assert r["done"] and r["steps"] == r["ran"] and r["cap_w"] == res[0]["cap_w"]
    for r in res[:2]:
        # (a follower may see the limit put back already: its owner's close() does not wait for it)
        assert r["caps_seen"] == [r["cap_w"]] * 5 and r["after_close"] == 700
    assert res[0]["limits"] == res[1]["limits"] and min(res[0]["limits"]) < 700
    for g in range(2):
        cap = joulecap.get_power_cap(g)
        assert cap.limit_w == 700 and cap.manager == "none"
    assert journals(env) == []


def _ddp_rank_seed_profiler(rank, world, port, env, out_dir):
    os.environ.update(env)
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method="tcp://127.0.0.1:%d" % port, rank=rank, world_size=world)
    try:
        wl = SweepWorkload(gpu_num=rank)
        model = torch.nn.parallel.DistributedDataParallel(SweepModel(wl))
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        cap = joulecap.power_cap_profiler(model, batches(4, seed=rank), rank, train=True,
                                          loss_fn=torch.nn.CrossEntropyLoss(), optimizer=opt, caps_w=[500, 400],
                                          time_budget_s=4, steps_on_gpu=True,
                                          out_file=os.path.join(out_dir, "caps.csv"))
        dist.barrier()
        res = {"cap": cap, "limits": sorted(set(wl.limits)), "after": joulecap.get_power_cap(rank).limit_w}
        with open(os.path.join(out_dir, "rank%d.json" % rank), "w") as f:
            json.dump(res, f)
    finally:
        dist.destroy_process_group()
    _rank_done()


def test_ddp_seed_profiler_decides_once_for_every_rank(sweep_env, tmp_path):
    """power_cap_profiler on every rank of a DDP model: same steps, same caps, one recommendation, one CSV."""
    env = sweep_env("h100x2-sweep.scn")
    import torch.multiprocessing as mp

    mp.spawn(_ddp_rank_seed_profiler, args=(2, _free_port(), env, str(tmp_path)), nprocs=2, join=True)
    res = [json.loads((tmp_path / ("rank%d.json" % r)).read_text()) for r in range(2)]
    assert res[0]["cap"] == res[1]["cap"] and res[0]["limits"] == res[1]["limits"]
    assert [r["after"] for r in res] == [700, 700]
    assert (tmp_path / "caps.csv").read_text().count("recommended") == 1
    assert journals(env) == []


def _spawn_within(mp, fn, args, nprocs, seconds, why):
    """mp.spawn(fn, args) on nprocs ranks, failing the test with ``why`` (the ranks killed) if they have not all
    ended within ``seconds``: a rank left waiting in a collective must not hang the suite."""
    ctx = mp.spawn(fn, args=args, nprocs=nprocs, join=False)
    deadline = time.monotonic() + seconds
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(why)


def _ddp_rank_setup_error(rank, world, port, env, out_dir):
    os.environ.update(env)
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method="tcp://127.0.0.1:%d" % port, rank=rank, world_size=world)
    try:
        try:
            joulecap.PowerCapOptimizer(gpu_num=rank, time_budget_s=5)
            got = "no error"
        except Exception as e:  # noqa: BLE001
            got = "%s: %s" % (type(e).__name__, e)
        with open(os.path.join(out_dir, "rank%d.txt" % rank), "w") as f:
            f.write(got)
    finally:
        dist.destroy_process_group()


def test_ddp_a_rank_that_cannot_cap_fails_every_rank(sweep_env, tmp_path):
    """Rank 1 may not set its GPU's limit: both ranks raise at construction (none waits for the other)."""
    text = (SCENARIOS / "h100x2-sweep.scn").read_text().replace("h100-sweep.csv", str(SWEEP_CSV))
    (tmp_path / "x2-rank1-no-permission.scn").write_text(text + "allow_set_limit = 0\n")  # the last device
    env = sweep_env(str(tmp_path / "x2-rank1-no-permission.scn"))
    import torch.multiprocessing as mp

    _spawn_within(mp, _ddp_rank_setup_error, (2, _free_port(), env, str(tmp_path)), 2, 60, "a rank hung")
    got = [(tmp_path / ("rank%d.txt" % r)).read_text() for r in range(2)]
    assert got[1].startswith("PermissionDenied") and "CAP_SYS_ADMIN" in got[1]
    assert got[0].startswith("StateError") and "rank 1" in got[0]
    for g in range(2):
        cap = joulecap.get_power_cap(g)
        assert cap.limit_w == 700 and cap.manager == "none"
    assert journals(env) == []


def _ddp_rank_bad_out_file(rank, world, port, env, out_dir, which):
    os.environ.update(env)
    import torch.distributed as dist

    torch.set_num_threads(1)
    # rank 0's out_file lies in a folder that does not exist; the group's timeout is far above the test's bound
    dist.init_process_group("gloo", init_method="tcp://127.0.0.1:%d" % port, rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=300))
    out = os.path.join(out_dir, "missing", "caps.csv")
    try:
        try:
            if which == "optimizer":
                joulecap.PowerCapOptimizer(gpu_num=rank, time_budget_s=5, out_file=out).close()
            else:
                wl = SweepWorkload(gpu_num=rank)
                model = torch.nn.parallel.DistributedDataParallel(SweepModel(wl))
                opt = torch.optim.SGD(model.parameters(), lr=0.01)
                joulecap.power_cap_profiler(model, batches(4, seed=rank), rank, train=True,
                                            loss_fn=torch.nn.CrossEntropyLoss(), optimizer=opt, caps_w=[500, 400],
                                            time_budget_s=4, steps_on_gpu=True, out_file=out)
            got = "no error"
        except Exception as e:  # noqa: BLE001
            got = "%s: %s" % (type(e).__name__, e)
        with open(os.path.join(out_dir, "rank%d.txt" % rank), "w") as f:
            f.write(got)
    finally:
        dist.destroy_process_group()
    _rank_done()


@pytest.mark.parametrize("which", ["optimizer", "profiler"])
def test_ddp_rank_0s_out_file_error_fails_every_rank_at_once(sweep_env, tmp_path, which):
    """Only rank 0 writes the CSV: where it cannot, rank 1 must not wait for it in a collective until the
    process group's timeout; both raise at once, rank 1 naming rank 0's error."""
    env = sweep_env("h100x2-sweep.scn")
    import torch.multiprocessing as mp

    _spawn_within(mp, _ddp_rank_bad_out_file, (2, _free_port(), env, str(tmp_path), which), 2, 90,
                  "a rank waited for rank 0")
    got = [(tmp_path / ("rank%d.txt" % r)).read_text() for r in range(2)]
    assert got[0].startswith("FileError"), got
    assert got[1].startswith("StateError") and "rank 0" in got[1], got
    assert journals(env) == []


# --------------------------------------------------------------------------------------------------------------
# The example's profiler part


def test_example_part_runs_the_profiler_on_a_fake_gpu_and_says_so(tmp_path, monkeypatch):
    import argparse

    import joulecap.example as ex

    monkeypatch.delenv("JOULECAP_NVML_LIBRARY", raising=False)
    s = ex.Setup(args=argparse.Namespace(quiet=True, quick=True, profile_caps=False), torch=torch,
                 device=torch.device("cpu"), gpu_num=None, out_dir=str(tmp_path))
    ex.part_power_caps(s)
    text = "\n".join(s.summary)
    assert "fake GPU" in text and "simulated" in text and "recommended:" in text, text
    assert "limit afterwards: 700 W" in text
    with open(tmp_path / "power_caps.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["row"] == "trial" and rows[-1]["row"] == "recommended"
    assert s.files == [str(tmp_path / "power_caps.csv")]

    # A GPU without --profile-caps: its limit is left alone; the simulator shows the profiler.
    s = ex.Setup(args=argparse.Namespace(quiet=True, quick=True, profile_caps=False), torch=torch,
                 device=torch.device("cpu"), gpu_num=0, out_dir=str(tmp_path))
    ex.part_power_caps(s)
    text = "\n".join(s.summary)
    assert "left alone" in text and "--profile-caps" in text and "simulator" in text and "optimum: 420 W" in text

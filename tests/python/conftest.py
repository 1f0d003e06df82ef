"""Shared fixtures: every test runs against the fake NVML and the fake sysfs/procfs trees of tests/.

The tests import the *installed* joulecap (scripts/test.sh runs them from this folder after `pip install .`).
The fake NVML library is the one bundled in the package (joulecap/_fake/), or JC_FAKE_NVML when set.
"""

import os
import shutil
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = REPO / "tests" / "scenarios"
SYSFS = REPO / "tests" / "sysfs"
PROC = REPO / "tests" / "proc"


def fake_nvml_library():
    path = os.environ.get("JC_FAKE_NVML")
    if path and os.path.exists(path):
        return path
    from joulecap._paths import fake_nvml_library as bundled

    return bundled()


class RaplDriver:
    """Makes the RAPL counters of a copied fake sysfs tree move, as real ones do (every ~1 ms): each energy_uj
    file gains watts_per_zone, wrapping at its max_energy_range_uj.  joulecap treats a counter that stands
    still for seconds as stuck (and falls back to its estimate)."""

    def __init__(self, root, watts_per_zone=5.0):
        self.files = sorted(Path(root).glob("class/powercap/*/energy_uj"))
        self.start = [int(f.read_text()) for f in self.files]
        self.wrap = []
        for f in self.files:
            m = f.parent / "max_energy_range_uj"
            self.wrap.append(int(m.read_text()) if m.exists() else 2**32)
        self.watts = watts_per_zone
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        t0 = time.monotonic()
        while not self.stop_event.wait(0.005):
            uj = int(self.watts * 1e6 * (time.monotonic() - t0))
            for f, s0, w in zip(self.files, self.start, self.wrap):
                write_atomic(f, "%d\n" % ((s0 + uj) % (w + 1)))

    def stop(self):
        self.stop_event.set()
        self.thread.join()


@pytest.fixture
def fake_env(monkeypatch, tmp_path):
    """Call it to point joulecap at a fake GPU scenario and fake CPU trees (before constructing a tool).

    fake_env(scenario="h100-constant-300w.scn", sysfs="intel-2socket", proc="xeon-8480"); sysfs/proc may be a
    tree name under tests/ or a path.  scenario=None makes NVML unavailable.  A named tree with RAPL is copied
    and its counters move (RaplDriver) unless rapl_moving=False.
    """
    lib = fake_nvml_library()
    if lib is None:
        pytest.fail("the fake NVML library is not installed with joulecap (joulecap/_fake/) and JC_FAKE_NVML is unset")
    drivers = []

    def setup(scenario="h100-constant-300w.scn", sysfs="intel-2socket", proc="xeon-8480", rapl_moving=True):
        if scenario is None:
            monkeypatch.setenv("JOULECAP_NVML_LIBRARY", str(tmp_path / "no-such-libnvidia-ml.so"))
        else:
            monkeypatch.setenv("JOULECAP_NVML_LIBRARY", lib)
            monkeypatch.setenv("JOULECAP_FAKE_NVML_SCENARIO", str(SCENARIOS / scenario))
        sysfs_path = Path(sysfs if os.path.isabs(str(sysfs)) else SYSFS / sysfs)
        if rapl_moving and not os.path.isabs(str(sysfs)) and list(sysfs_path.glob("class/powercap/*/energy_uj")):
            copy = tmp_path / ("sysfs-" + str(sysfs))
            if not copy.exists():
                shutil.copytree(sysfs_path, copy, symlinks=True)
                drivers.append(RaplDriver(copy))
            sysfs_path = copy
        monkeypatch.setenv("JOULECAP_SYSFS_ROOT", str(sysfs_path))
        monkeypatch.setenv("JOULECAP_PROC_ROOT", str(proc if os.path.isabs(str(proc)) else PROC / proc))
        monkeypatch.delenv("JOULECAP_FAKE_NVML_STATE", raising=False)
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
        monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)
        monkeypatch.setenv("TMPDIR", str(tmp_path))
        return dict(os.environ)

    yield setup
    for d in drivers:
        d.stop()


@pytest.fixture
def fake(fake_env):
    """The default fake machine: one H100 at a constant 300 W, two Intel sockets with RAPL."""
    return fake_env()


@pytest.fixture
def rapl_tree(tmp_path):
    """A writable copy of the one-socket AMD tree (package-0 with a core subzone)."""
    dst = tmp_path / "sysfs"
    shutil.copytree(SYSFS / "amd-1socket", dst)
    return dst


def write_atomic(path, text):
    tmp = str(path) + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)

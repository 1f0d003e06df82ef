"""The seed's AsynchronousMeasurementTool, re-implemented for comparison (bench/bench_python.py only).

The seed's code is not available; this follows its README (same class name, ``out_file``, ``gpu_num``,
``start(interval)``, ``stop()``, same columns) and docs/DESIGN.md, "Where the seed falls short":

* a separate process (``multiprocessing.Process``, the platform's default start method: fork on Linux up to
  Python 3.13) takes the readings, one every ``interval`` seconds (``time.sleep(interval)`` after each);
* each reading calls ``psutil.cpu_percent(0.1)``, which blocks 100 ms, reads the hard-coded
  ``/sys/class/thermal/thermal_zone3/temp``, the socket-0 RAPL package counter
  (``/sys/class/powercap/intel-rapl:0/energy_uj``, no DRAM, no wraparound correction), and with pynvml the
  GPU's energy counter (``nvmlDeviceGetTotalEnergyConsumption``, ~4 ms on an H100), utilisation, temperature and
  ``nvmlDeviceGetPowerUsage`` (a 1 s average on Hopper, reported as "GPU power");
* GPU energy is written in mJ although the header says kWh (the seed's bug, kept);
* ``gpu_num`` is used as the NVML index (the seed's; not the CUDA number);
* every row is kept in memory and the CSV is written only at ``stop()`` (a crash loses everything).

Liberties, none of which changes what runs while it samples: an unreadable RAPL or thermal file gives an empty
cell instead of the seed's exception; the sampler is a daemon process; ``start()`` waits until the first
reading is about to be taken (so that a benchmark times only steps with the sampler running); ``stop()`` kills a
sampler that has not stopped within 20 s; ``JCB_SEED_START_METHOD`` can choose another start method.  ``fake_pynvml()`` lets pynvml (and
so this module, Zeus and CodeCarbon) run against joulecap's fake NVML for testing on a machine without a GPU.
"""

from __future__ import annotations

import csv
import multiprocessing
import os
import time

__all__ = ["AsynchronousMeasurementTool", "fake_pynvml", "fake_nvml_path"]

RAPL_FILE = "/sys/class/powercap/intel-rapl:0/energy_uj"
THERMAL_FILE = "/sys/class/thermal/thermal_zone3/temp"
HEADER = [
    "elapsed time (s)",
    "CPU energy (kWh)",
    "CPU utilisation (%)",
    "CPU temp (C)",
    "GPU energy (kWh)",  # the values are mJ: the seed's bug
    "GPU utilisation (%)",
    "GPU temp (C)",
    "GPU power (W)",
]


def _read_number(path):
    try:
        with open(path) as f:
            return float(f.read())
    except (OSError, ValueError):
        return None


def _sampler(out_file, gpu_num, interval, stop_event, ready_event):
    import psutil
    import pynvml

    fake_pynvml()  # no-op unless JOULECAP_NVML_LIBRARY names joulecap's fake NVML
    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(gpu_num)
    rows = []
    start_time = time.time()
    cpu_start = _read_number(RAPL_FILE)
    gpu_start = pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    psutil.cpu_percent(None)
    ready_event.set()
    while not stop_event.is_set():
        cpu_util = psutil.cpu_percent(0.1)  # blocks 100 ms
        temp = _read_number(THERMAL_FILE)
        cpu_temp = temp / 1000 if temp is not None else None
        cpu_now = _read_number(RAPL_FILE)
        cpu_kwh = (cpu_now - cpu_start) / 3.6e12 if cpu_now is not None and cpu_start is not None else None
        gpu_energy = pynvml.nvmlDeviceGetTotalEnergyConsumption(handle) - gpu_start  # mJ, labelled kWh
        gpu_util = pynvml.nvmlDeviceGetUtilizationRates(handle).gpu
        gpu_temp = pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU)
        gpu_power = pynvml.nvmlDeviceGetPowerUsage(handle) / 1000
        rows.append([time.time() - start_time, cpu_kwh, cpu_util, cpu_temp, gpu_energy, gpu_util, gpu_temp, gpu_power])
        time.sleep(interval)
    pynvml.nvmlShutdown()
    with open(out_file, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(HEADER)
        w.writerows([["" if v is None else v for v in r] for r in rows])


class AsynchronousMeasurementTool:
    """The seed's asynchronous tool: ``start(interval)`` starts the sampler process, ``stop()`` ends it and the
    process writes every row it kept in memory to ``out_file``."""

    def __init__(self, out_file, gpu_num=0):
        self.out_file = out_file
        self.gpu_num = gpu_num
        self.process = None

    def start(self, interval=1, wait_ready=True):
        # The platform's default start method, as the seed; JCB_SEED_START_METHOD=spawn (say) overrides it.
        mp = multiprocessing.get_context(os.environ.get("JCB_SEED_START_METHOD") or None)
        self.stop_event = mp.Event()
        self.ready_event = mp.Event()
        self.process = mp.Process(
            target=_sampler,
            args=(self.out_file, self.gpu_num, interval, self.stop_event, self.ready_event),
            daemon=True,
        )
        self.process.start()
        if wait_ready:  # not in the seed: lets the benchmark time only steps with the sampler running
            deadline = time.monotonic() + 60
            while not self.ready_event.wait(0.05):
                if not self.process.is_alive() or time.monotonic() > deadline:
                    code = self.process.exitcode
                    self._kill()
                    raise RuntimeError("the seed's sampler process did not start (exit code %s)" % code)

    def stop(self):
        if self.process is None:
            return
        self.stop_event.set()
        self.process.join(20)  # not in the seed: a sampler stuck in the driver must not hang the benchmark
        if self.process.is_alive():
            self._kill()
            raise RuntimeError("the seed's sampler process did not stop within 20 s: killed")
        self.process = None

    def _kill(self):
        p, self.process = self.process, None
        if p is not None and p.is_alive():
            p.kill()
            p.join(5)


def fake_nvml_path():
    """The fake NVML named by JOULECAP_NVML_LIBRARY, or None (real NVML)."""
    p = os.environ.get("JOULECAP_NVML_LIBRARY")
    if p and "fake" in os.path.basename(p):
        return p
    return None


_FAKE_BIN = None


def fake_pynvml():
    """Points pynvml at joulecap's fake NVML when JOULECAP_NVML_LIBRARY names it; returns whether it did.

    The fake exports what joulecap needs (docs/fake-nvml.md), not all of NVML: pynvml's nvmlInit (which calls
    nvmlInitWithFlags) is mapped to nvmlInit_v2, nvmlDeviceGetArchitecture answers Hopper (Zeus asks for it),
    and a do-nothing ``nvidia-smi`` is put on PATH (CodeCarbon looks for it before using pynvml).  Other missing
    functions raise pynvml's NVMLError_FunctionNotFound, as an old driver would.  For tests without a GPU only.
    """
    global _FAKE_BIN
    path = fake_nvml_path()
    if path is None:
        return False
    import ctypes

    import pynvml

    if getattr(pynvml, "_joulecap_fake", None) == path:
        return True
    lib = ctypes.CDLL(path)
    pynvml.nvmlLib = lib
    cache = pynvml._nvmlGetFunctionPointer_cache
    cache["nvmlInitWithFlags"] = lambda flags: lib.nvmlInit_v2()

    def _architecture(handle, arch_ref):
        arch_ref._obj.value = 9  # NVML_DEVICE_ARCH_HOPPER
        return 0

    cache["nvmlDeviceGetArchitecture"] = _architecture

    class _Memory:  # what CodeCarbon reads of nvmlDeviceGetMemoryInfo
        total, used, free = 80 << 30, 1 << 30, 79 << 30

    pynvml.nvmlDeviceGetMemoryInfo = lambda handle, version=None: _Memory()
    pynvml.nvmlDeviceGetComputeMode = lambda handle: 0  # NVML_COMPUTEMODE_DEFAULT
    pynvml.nvmlDeviceGetComputeRunningProcesses = lambda handle: []
    pynvml.nvmlDeviceGetGraphicsRunningProcesses = lambda handle: []
    pynvml._joulecap_fake = path
    if _FAKE_BIN is None:
        import tempfile

        _FAKE_BIN = tempfile.mkdtemp(prefix="jc-fake-smi-")
        smi = os.path.join(_FAKE_BIN, "nvidia-smi")
        with open(smi, "w") as f:
            f.write("#!/bin/sh\nexit 0\n")
        os.chmod(smi, 0o755)
        os.environ["PATH"] = _FAKE_BIN + os.pathsep + os.environ.get("PATH", "")
    return True

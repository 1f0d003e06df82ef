"""What `pip install .` puts in place: the extension, the CLI, the fake NVML, the console script."""

import os
import shutil
import subprocess
import sys

import pytest

import joulecap
from joulecap import _joulecap, _paths


def test_public_names():
    from joulecap import AsynchronousMeasurementTool, EnergyMeasurementTool  # noqa: F401
    from joulecap.measurement import AsynchronousMeasurementTool as A, EnergyMeasurementTool as E

    assert A is joulecap.AsynchronousMeasurementTool and E is joulecap.EnergyMeasurementTool
    assert joulecap.__lib_version__ == _joulecap.version()


def test_extension_is_c_and_has_no_python_dependency():
    assert _joulecap.__file__.endswith(".so")
    # importing joulecap imports no third-party package
    code = "import sys, joulecap; bad = [m for m in ('pandas', 'numpy', 'torch') if m in sys.modules]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_bundled_files():
    lib = _paths.fake_nvml_library()
    assert lib and os.path.isfile(lib)
    cli = _paths.cli_binary()
    assert cli and os.access(cli, os.X_OK)


def test_console_script_runs_the_cli(fake):
    script = shutil.which("joulecap", path=os.path.dirname(sys.executable))
    if script is None:
        pytest.skip("the console script is not installed beside this interpreter")
    out = subprocess.run([script, "info", "--gpu", "0"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "H100" in out.stdout
    # the module entry point does the same
    out2 = subprocess.run([sys.executable, "-m", "joulecap._cli", "help"], capture_output=True, text=True, timeout=60)
    assert out2.returncode == 0 and "joulecap" in out2.stdout


def test_read_csv_without_pandas_says_how_to_get_it(tmp_path):
    code = (
        "import sys; sys.modules['pandas'] = None\n"
        "import joulecap\n"
        "try:\n    joulecap.read_csv(sys.argv[1])\n"
        "except ImportError as e:\n    print(e)\n"
    )
    p = tmp_path / "x.csv"
    p.write_text("elapsed_s\n1\n")
    out = subprocess.run([sys.executable, "-c", code, str(p)], capture_output=True, text=True, check=True).stdout
    assert "pip install pandas" in out


def test_now_ns_is_the_monotonic_clock():
    import time

    a = time.monotonic_ns()
    b = _joulecap.now_ns()
    c = time.monotonic_ns()
    assert a <= b <= c

"""Where the files installed beside the package lie: the `joulecap` command-line binary, the fake NVML with its
scenarios, and the reference docs.

The CMake build installs them next to the extension module (``joulecap/bin/joulecap``,
``joulecap/_fake/libjoulecap-fakenvml.so``, ``joulecap/_fake/scenarios/*.scn``, ``joulecap/_docs/*.md``).  In an editable install the Python sources stay in the source tree
while the built files are in site-packages, so the extension module's own location is searched as well.
"""

from __future__ import annotations

import os

__all__ = ["package_dirs", "cli_binary", "daemon_binary", "fake_nvml_library", "fake_scenarios_dir", "docs_dir"]


def package_dirs() -> list:
    dirs = [os.path.dirname(os.path.abspath(__file__))]
    try:
        from . import _joulecap

        ext_dir = os.path.dirname(os.path.abspath(_joulecap.__file__))
        if ext_dir not in dirs:
            dirs.append(ext_dir)
    except ImportError:  # pragma: no cover - a broken install; the callers say what is missing
        pass
    return dirs


def _find(*parts: str) -> str | None:
    for d in package_dirs():
        p = os.path.join(d, *parts)
        if os.path.exists(p):
            return p
    return None


def cli_binary() -> str | None:
    """Path of the bundled `joulecap` command-line tool, or None when this install has none."""
    return _find("bin", "joulecap")


def daemon_binary() -> str | None:
    """Path of the bundled `joulecapd` (the node service for power caps, docs/daemon.md), or None."""
    return _find("bin", "joulecapd")


def fake_nvml_library() -> str | None:
    """Path of the bundled fake NVML library (for tests and trying joulecap without a GPU), or None.

    ``JOULECAP_FAKE=h100`` (or ``joulecap --fake h100``) loads it with a bundled scenario and private state;
    by hand: ``JOULECAP_NVML_LIBRARY=<path>`` and ``JOULECAP_FAKE_NVML_SCENARIO=<scenario file>``.
    """
    return _find("_fake", "libjoulecap-fakenvml.so")


def fake_scenarios_dir() -> str | None:
    """Folder of the bundled fake-GPU scenarios (``h100-constant-300w.scn``, ``h100-sweep.scn``, ...), or None."""
    return _find("_fake", "scenarios")


def docs_dir() -> str | None:
    """Folder of the reference docs installed with the package (what ``joulecap help TOPIC`` prints), or None."""
    return _find("_docs")

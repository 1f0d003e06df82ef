"""The `joulecap` console script: runs the bundled command-line tool (written in C) with the same arguments."""

from __future__ import annotations

import os
import sys

from ._paths import cli_binary


def main() -> None:
    binary = cli_binary()
    if binary is None:
        sys.stderr.write(
            "joulecap: the command-line tool is not part of this install (it is built with the package when "
            "cli/ has sources); reinstall with `pip install .` from a joulecap checkout\n"
        )
        raise SystemExit(127)
    argv = ["joulecap"] + sys.argv[1:]
    # `joulecap plot` draws with this Python (joulecap.plots and matplotlib live here), not whatever python3 is
    # first on PATH.
    os.environ.setdefault("JOULECAP_PYTHON", sys.executable)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(binary, argv)
    except OSError as e:
        sys.stderr.write("joulecap: cannot run %s: %s\n" % (binary, e))
        raise SystemExit(126)


if __name__ == "__main__":
    main()

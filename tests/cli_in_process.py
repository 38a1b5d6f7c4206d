"""`edgekd ARGV` run in this process (monkeypatched argv), for tests that read its exit code and output,
or in a fresh Python (`run_subprocess`), for tests about what the process imports."""

from __future__ import annotations

import subprocess
import sys

from edgekd import cli


def run(monkeypatch, capsys, *argv):
    """(exit code, stdout, stderr) of `edgekd *argv`."""
    monkeypatch.setattr(sys, "argv", ["edgekd", *map(str, argv)])
    code = 0
    try:
        cli.main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


def run_subprocess(*argv, prelude: str = "", timeout: float = 60) -> subprocess.CompletedProcess:
    """`edgekd *argv` in a fresh Python, after `prelude` (code run first: hiding torch, an atexit hook)."""
    args = ["edgekd", *map(str, argv)]
    code = prelude + f"import sys\nfrom edgekd.cli import main\nsys.argv = {args!r}\nmain()\n"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)


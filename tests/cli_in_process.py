"""`edgekd ARGV` run in this process (monkeypatched argv), for tests that read its exit code and output."""

from __future__ import annotations

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

"""Why a path given as an input file (model, audio, config, password) cannot be read as one.

Checked before anything opens the file: a FIFO would block the reader and `/dev/zero` would fill
memory, and "no such file" for a directory, or "cannot decode" for a file this user may not read,
points at the wrong fix.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path


PERMISSION_FIX = "let this user read it (chmod, chown, or run edgekd as a user that may)"


def file_problem(path: str | Path, fix: str) -> str | None:
    """None when `path` is a regular file this process can open; else what is wrong and how to
    fix it, in words that fit after the path (`model x.onnx: is a directory, not a file; FIX`).
    `fix` is the caller's advice for a wrong path; a permission problem gets PERMISSION_FIX."""
    problem = _problem(Path(path))
    if problem is None:
        return None
    return f"{problem}; {PERMISSION_FIX if 'permission denied' in problem else fix}"


def _problem(p: Path) -> str | None:
    try:
        mode = p.stat().st_mode
    except FileNotFoundError:
        return "no such file"
    except NotADirectoryError:
        return "no such file (a part of the path is not a directory)"
    except PermissionError:
        return "cannot be reached: permission denied on a directory in its path"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if stat.S_ISDIR(mode):
        return "is a directory, not a file"
    if stat.S_ISFIFO(mode):
        return "is a named pipe (FIFO), not a regular file"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "is a device, not a regular file"
    if stat.S_ISSOCK(mode):
        return "is a socket, not a regular file"
    if not stat.S_ISREG(mode):
        return "is not a regular file"
    try:
        fd = os.open(p, os.O_RDONLY)
    except PermissionError:
        return f"cannot be read by this user (uid {os.geteuid()}): permission denied"
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return "no such file"
        return f"cannot be read ({exc.strerror or exc})"
    os.close(fd)
    return None

"""A process's CPU time and memory from Linux's /proc, for `edgekd bench` and the benchmark scripts.

Both return None where /proc cannot be read (another OS, a process that has gone).
"""

from __future__ import annotations

import os
from pathlib import Path


def cpu_seconds(pid: int | str = "self") -> float | None:
    """User plus system CPU time of `pid` (fields 14 and 15 of /proc/PID/stat), in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def status_bytes(field: str, pid: int | str = "self") -> int | None:
    """A kB field of /proc/PID/status (e.g. VmRSS, VmHWM), in bytes."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None

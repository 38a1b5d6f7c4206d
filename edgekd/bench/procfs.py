"""A process's CPU time and memory from Linux's /proc, for `edgekd bench` and the benchmark scripts.

The readers return None where /proc cannot be read (another OS, a process that has gone).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Footprint:
    """A process's memory in bytes: resident (RSS), proportional (PSS: shared pages divided among
    the processes mapping them) and unique (USS: pages no other process maps, Private_Clean +
    Private_Dirty)."""

    rss: int
    pss: int
    uss: int


def parse_smaps_rollup(text: str) -> Footprint:
    """The footprint from the text of /proc/PID/smaps_rollup (its kB lines; the header line is skipped)."""
    kb: dict[str, int] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if len(parts) == 2 and parts[1] == "kB":
            kb[name.strip()] = int(parts[0])
    missing = [k for k in ("Rss", "Pss", "Private_Clean", "Private_Dirty") if k not in kb]
    if missing:
        raise ValueError(f"smaps_rollup: no {', '.join(missing)} line (Linux 4.14 or later has them)")
    return Footprint(rss=kb["Rss"] * 1024, pss=kb["Pss"] * 1024, uss=(kb["Private_Clean"] + kb["Private_Dirty"]) * 1024)


def footprint(pid: int | str = "self") -> Footprint | None:
    """RSS, PSS and USS of `pid` from /proc/PID/smaps_rollup."""
    try:
        return parse_smaps_rollup(Path(f"/proc/{pid}/smaps_rollup").read_text())
    except (OSError, ValueError):
        return None

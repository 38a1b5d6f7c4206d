"""Facts about the machine a benchmark ran on, so that reports from different devices compare."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any

# CPU features that decide how fast ONNX kernels run: wide FP32 vectors and int8 dot products.
_INTERESTING_FLAGS = (
    "avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8",  # x86
    "asimd", "asimddp", "i8mm", "sve", "bf16",  # Arm (a Pi 4 has asimd; a Pi 5 / Orin add asimddp)
)


def _cpuinfo() -> list[dict[str, str]]:
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return []
    blocks = []
    for block in text.strip().split("\n\n"):
        entry = {}
        for line in block.splitlines():
            key, _, value = line.partition(":")
            entry[key.strip()] = value.strip()
        blocks.append(entry)
    return blocks


def _board_model() -> str | None:
    """Raspberry Pi and Jetson boards name themselves in the device tree."""
    for path in ("/proc/device-tree/model", "/sys/firmware/devicetree/base/model"):
        try:
            return Path(path).read_text(errors="replace").strip("\x00\n ")
        except OSError:
            continue
    return None


def _memory_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    if hasattr(os, "sysconf"):
        try:
            return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
        except (ValueError, OSError):
            return None
    return None


def _max_mhz() -> float | None:
    try:
        khz = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").read_text().strip()
        return int(khz) / 1000.0
    except (OSError, ValueError):
        return None


def device_facts() -> dict[str, Any]:
    """CPU model, cores, memory, OS, Python, onnxruntime version and providers."""
    import onnxruntime as ort

    info = _cpuinfo()
    first = info[0] if info else {}
    cpu = first.get("model name") or first.get("Model") or first.get("Hardware") or platform.processor() or platform.machine()
    flags = set((first.get("flags") or first.get("Features") or "").split())
    mhz: float | None
    try:
        mhz = float(first["cpu MHz"]) if "cpu MHz" in first else None
    except ValueError:
        mhz = None
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
    return {
        "cpu": cpu,
        "board": _board_model(),
        "machine": platform.machine(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "cpu_mhz_now": mhz,
        "cpu_mhz_max": _max_mhz(),
        "cpu_flags": [f for f in _INTERESTING_FLAGS if f in flags],
        "memory_bytes": _memory_bytes(),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "onnxruntime": ort.__version__,
        "onnxruntime_providers": list(ort.get_available_providers()),
    }

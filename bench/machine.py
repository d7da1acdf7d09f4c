"""The machine a report was measured on: CPU model, cores, Python and library versions."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from typing import Any


def cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def describe() -> dict[str, Any]:
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = None
    try:
        with open("/proc/meminfo") as fh:
            mem_kib = int(fh.readline().split()[1])
    except (OSError, ValueError, IndexError):
        mem_kib = None
    return {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": usable,
        "memory_mib": round(mem_kib / 1024) if mem_kib else None,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "av": _version("av"),
        "aiortc": _version("aiortc"),
        "numpy": _version("numpy"),
        "aiohttp": _version("aiohttp"),
    }

"""CPU time and resident memory of processes, read from /proc (Linux only).

CPU is utime + stime from ``/proc/<pid>/stat`` (clock ticks, converted to seconds);
memory is ``VmRSS`` from ``/proc/<pid>/status``. A process that is gone reads as
None, so a sampler survives a worker restart mid-run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class ProcStat:
    pid: int
    ppid: int
    cpu_s: float  # user + system time so far
    rss_bytes: int | None


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            text = fh.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    return text[text.rindex(")") + 2 :].split()


def read(pid: int) -> ProcStat | None:
    fields = _stat_fields(pid)
    if fields is None:
        return None
    # fields[0] is field 3 (state): ppid = field 4, utime = 14, stime = 15.
    ppid = int(fields[1])
    cpu_s = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS_PER_S
    return ProcStat(pid=pid, ppid=ppid, cpu_s=cpu_s, rss_bytes=rss_bytes(pid))


def rss_bytes(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024  # the kernel writes kB (KiB)
    except OSError:
        return None
    return None


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def alive(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")

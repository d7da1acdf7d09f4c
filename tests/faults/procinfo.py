"""Open file descriptors, resident memory and threads of a process, read from ``/proc``.

The cycle tests (issue 10) compare these before and after a hundred drops and returns,
for both of the node's processes: the control process (whose pid the test started)
and the media worker (whose pid ``/healthz`` gives). Linux only, like the node's own
``procstats``; a process that is gone reads as an error, never as zeros.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class ProcFigures:
    pid: int
    fds: int
    rss_kib: int
    threads: int

    def row(self) -> str:
        return f"fds {self.fds:4d}  rss {self.rss_kib / 1024:7.1f} MiB  threads {self.threads:3d}"


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def fd_kinds(pid: int) -> Counter[str]:
    """What the fds are: ``socket``, ``pipe``, ``anon_inode:[eventfd]``, a file path...

    Printed when the fd check fails, so a leak says which kind of descriptor leaked.
    """
    kinds: Counter[str] = Counter()
    base = Path(f"/proc/{pid}/fd")
    for entry in base.iterdir():
        try:
            target = os.readlink(entry)
        except OSError:  # closed while we looked
            continue
        kinds[target.split(":[", 1)[0] if target.startswith(("socket:", "pipe:")) else target] += 1
    return kinds


def status_fields(pid: int) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        fields[name] = value.strip()
    return fields


def figures(pid: int) -> ProcFigures:
    """The process's figures now; raises OSError when it is gone."""
    status = status_fields(pid)
    return ProcFigures(
        pid=pid,
        fds=fd_count(pid),
        rss_kib=int(status["VmRSS"].split()[0]),
        threads=int(status["Threads"]),
    )

"""CPU time and resident memory of the node's processes, read from ``/proc``.

The control process and the media worker are separate processes, so an operator
needs both: ``/metrics`` carries each one's CPU seconds and RSS, and the one-second
summaries carry the CPU used over the window (in cores) and the total RSS. Linux only;
elsewhere (no ``/proc``) the readings are absent rather than invented.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass(frozen=True, slots=True)
class ProcSample:
    cpu_s: float  # user + system seconds since the process started
    rss_bytes: int


def parse_stat(text: str) -> float:
    """User + system CPU seconds from the text of ``/proc/<pid>/stat``.

    The command name (field 2) is in parentheses and may itself contain spaces or
    parentheses, so fields are counted from the last ``)``.
    """
    rest = text[text.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(rest[11]) + int(rest[12])) / _TICKS


def parse_statm(text: str) -> int:
    """Resident bytes from the text of ``/proc/<pid>/statm`` (second field, pages)."""
    return int(text.split()[1]) * _PAGE


def sample(pid: int | None = None) -> ProcSample | None:
    """This process (``pid`` None) or another; None when it is gone or /proc is absent."""
    base = Path("/proc") / (str(pid) if pid is not None else "self")
    try:
        return ProcSample(
            parse_stat((base / "stat").read_text()), parse_statm((base / "statm").read_text())
        )
    except (OSError, ValueError, IndexError):
        return None


class CpuMeter:
    """CPU cores used between two calls (sum over processes), fed with ``now``."""

    def __init__(self) -> None:
        self._last: dict[int | None, tuple[float, float]] = {}

    def cores(self, pids: list[int | None], now: float) -> tuple[float | None, int]:
        """(cores used since the previous call or None the first time, total RSS bytes)."""
        used = 0.0
        elapsed: float | None = None
        rss = 0
        seen: dict[int | None, tuple[float, float]] = {}
        for pid in pids:
            s = sample(pid)
            if s is None:
                continue
            rss += s.rss_bytes
            seen[pid] = (now, s.cpu_s)
            last = self._last.get(pid)
            if last is not None and now > last[0] and s.cpu_s >= last[1]:
                used += s.cpu_s - last[1]
                elapsed = now - last[0]
        self._last = seen
        if elapsed is None:
            return None, rss
        return used / elapsed, rss

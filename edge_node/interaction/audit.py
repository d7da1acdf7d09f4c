"""The audit log: every moderation, review and anti-cheat decision, append-only, on disk.

An operator (or a platform's trust team) must be able to answer "why was this comment
blocked, and who approved that one" after the show, after a crash and after a
restart. So each decision is one JSON line in a file that is only ever appended to:
``{"at":<unix s>,"kind":...,"action":...,"user":...,"text":...,"rule":...,"by":...,
"item":...,"detail":{...}}`` (keys whose value is null are left out).

Durability: every ``append`` writes one whole line and flushes it to the kernel, so a
killed process (kill -9 included) loses nothing it appended. ``fsync`` (surviving a
power cut) is per write with ``fsync="write"``, or per batch with ``fsync="batch"``
(the default): every ``sync_every`` entries and whenever the adapter calls ``sync()``
(e.g. once a second from its timer) or ``close()``. fsync costs milliseconds on a
real disk, which the event loop must not pay per comment.

Crash damage: a power cut can leave the last line cut short. Reopening finishes such a
line with a newline, so that new entries never glue onto it, and readers skip any line
that is not a valid entry and count it (``damaged``): damage is reported, never fatal,
and never silently fixed by rewriting the file.

What goes in: who the decision is about (user id), what they wrote, the rule, the
action, the wall time the caller passes in, who decided (operator id, "system").
Never tokens, secrets or addresses: ``detail`` refuses keys that look like secrets.

What this module must never do: read a clock (the caller gives ``at``), rewrite or
truncate the file, or raise into the engine on a disk error (a failed write is
counted in ``write_errors`` and kept in ``last_error`` for health checks).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Literal, Protocol, TypeAlias

log = logging.getLogger(__name__)

DetailValue: TypeAlias = str | int | float | bool | None
FsyncPolicy: TypeAlias = Literal["write", "batch"]

DEFAULT_SYNC_EVERY: Final = 256
_TAIL_BLOCK_BYTES: Final = 64 * 1024
_SECRET_WORDS: Final = frozenset(
    {"token", "secret", "password", "passwd", "key", "authorization", "cookie", "credential"}
)
_KEY_PARTS: Final = re.compile(r"[a-z0-9]+")
_FIELDS: Final = ("at", "kind", "action", "user", "text", "rule", "by", "item")


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One decision.

    ``kind`` says which part decided: ``moderation`` (word list), ``review`` (the
    operator or the queue's bound), ``words`` (list replaced), ``anticheat``, ...;
    ``action`` what it did (``block``, ``mask``, ``hold``, ``approve``, ``reject``,
    ``expire``, ``set``, ``mute``, ...); ``user`` whom it concerns; ``text`` what they
    wrote; ``rule`` the rule that fired; ``by`` who decided (operator id, ``system``);
    ``item`` the review item; ``at`` wall-clock Unix seconds from the caller.
    """

    at: float
    kind: str
    action: str
    user: str | None = None
    text: str | None = None
    rule: str | None = None
    by: str | None = None
    item: str | None = None
    detail: Mapping[str, DetailValue] = field(
        default_factory=lambda: MappingProxyType({}), hash=False
    )

    def __post_init__(self) -> None:
        if not isinstance(self.at, (int, float)) or isinstance(self.at, bool):
            raise TypeError("at: expected wall-clock seconds (a number)")
        if not math.isfinite(self.at):
            raise ValueError("at: must be finite")
        for name in ("kind", "action"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name}: expected a non-empty string")
        for name in ("user", "text", "rule", "by", "item"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise TypeError(f"{name}: expected a string or None")
        for key, value in self.detail.items():
            if not isinstance(key, str):
                raise TypeError("detail: keys must be strings")
            if not _SECRET_WORDS.isdisjoint(_KEY_PARTS.findall(key.lower())):
                raise ValueError(f"detail.{key}: looks like a secret; the audit log keeps none")
            if value is not None and not isinstance(value, (str, int, float, bool)):
                raise TypeError(f"detail.{key}: expected a string, number, boolean or None")
        object.__setattr__(self, "detail", MappingProxyType(dict(self.detail)))

    def to_json(self) -> dict[str, Any]:
        """The line's map: None fields left out, ``detail`` only when it has keys."""
        out: dict[str, Any] = {}
        for name in _FIELDS:
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.detail:
            out["detail"] = dict(self.detail)
        return out

    @classmethod
    def from_json(cls, obj: object) -> AuditEntry:
        """A parsed line back to an entry; ValueError/TypeError when it is not one."""
        if not isinstance(obj, dict):
            raise TypeError("an audit line must be a JSON object")
        unknown = set(obj) - {*_FIELDS, "detail"}
        if unknown:
            raise ValueError(f"unknown keys {sorted(unknown)}")
        detail = obj.get("detail", {})
        if not isinstance(detail, dict):
            raise TypeError("detail: expected an object")
        return cls(
            at=obj.get("at"),  # type: ignore[arg-type]  # checked in __post_init__
            kind=obj.get("kind"),  # type: ignore[arg-type]
            action=obj.get("action"),  # type: ignore[arg-type]
            user=obj.get("user"),
            text=obj.get("text"),
            rule=obj.get("rule"),
            by=obj.get("by"),
            item=obj.get("item"),
            detail=MappingProxyType(detail),
        )


class AuditSink(Protocol):
    """Where decisions go: ``AuditLog`` in the node, anything with ``append`` in tests."""

    def append(self, entry: AuditEntry) -> None: ...


class MemoryAudit:
    """An in-memory sink for tests and for an engine built without a data dir.

    Keeps the last ``maxlen`` entries (None: all); ``dropped`` counts the older ones
    it let go, so even this sink never forgets silently.
    """

    def __init__(self, maxlen: int | None = None) -> None:
        self.entries: deque[AuditEntry] = deque(maxlen=maxlen)
        self.dropped = 0

    def append(self, entry: AuditEntry) -> None:
        if self.entries.maxlen is not None and len(self.entries) == self.entries.maxlen:
            self.dropped += 1
        self.entries.append(entry)


def encode_line(entry: AuditEntry) -> bytes:
    """One entry as one UTF-8 JSON line (``\\n`` terminated)."""
    obj = entry.to_json()
    try:
        text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        return (text + "\n").encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate slipped through: keep it, escaped
        text = json.dumps(obj, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
        return (text + "\n").encode("ascii")


def decode_line(line: bytes) -> AuditEntry:
    """One line (without its newline) back to an entry; ValueError/TypeError if damaged."""
    return AuditEntry.from_json(json.loads(line.decode("utf-8")))


class AuditLog:
    """An append-only JSON-lines file of ``AuditEntry``; see the module docstring.

    Opening appends to what is there (a restart continues the same log); the parent
    directory is created. One instance per file: two writers would interleave lines.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        fsync: FsyncPolicy = "batch",
        sync_every: int = DEFAULT_SYNC_EVERY,
    ) -> None:
        if fsync not in ("write", "batch"):
            raise ValueError(f"fsync: expected 'write' or 'batch', got {fsync!r}")
        if sync_every < 1:
            raise ValueError(f"sync_every: must be >= 1, got {sync_every}")
        self.path = Path(path)
        self.fsync: FsyncPolicy = fsync
        self.sync_every = sync_every
        self.appended = 0  # entries written by this instance
        self.write_errors = 0
        self.last_error: str | None = None
        self.damaged = 0  # lines skipped by the last read()/tail()
        self.repaired_tail = False  # the file ended inside a line when opened
        self._unsynced = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "ab")  # noqa: SIM115  # kept open for appends
        self._finish_torn_tail()

    def _finish_torn_tail(self) -> None:
        size = self._file.seek(0, os.SEEK_END)
        if size == 0:
            return
        with open(self.path, "rb") as reader:
            reader.seek(size - 1)
            last = reader.read(1)
        if last != b"\n":
            # A crash cut the last line. End it, so the next entry starts a line of its
            # own; readers will count the fragment as damaged.
            self.repaired_tail = True
            log.warning("audit log %s ended inside a line (crash?); continuing after it", self.path)
            self._write(b"\n")

    # ---- writing --------------------------------------------------------------------

    def append(self, entry: AuditEntry) -> None:
        """Write one entry as one line and flush it; fsync per the policy."""
        if self._write(encode_line(entry)):
            self.appended += 1
            self._unsynced += 1
            if self.fsync == "write" or self._unsynced >= self.sync_every:
                self.sync()

    def _write(self, data: bytes) -> bool:
        try:
            self._file.write(data)
            self._file.flush()
        except (OSError, ValueError) as exc:  # ValueError: written after close()
            self._failed(exc)
            return False
        return True

    def sync(self) -> None:
        """fsync what was appended (the adapter calls this from its timer)."""
        if self._unsynced == 0 or self._file.closed:
            return
        try:
            os.fsync(self._file.fileno())
        except OSError as exc:
            self._failed(exc)
            return
        self._unsynced = 0

    def _failed(self, exc: Exception) -> None:
        self.write_errors += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        if self.write_errors == 1 or self.write_errors % 1000 == 0:
            log.error(
                "audit log %s: write failed (%d so far): %s",
                self.path,
                self.write_errors,
                self.last_error,
            )

    def close(self) -> None:
        if not self._file.closed:
            self.sync()
            self._file.close()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- reading --------------------------------------------------------------------

    def read(self) -> list[AuditEntry]:
        """Every entry in the file, oldest first; damaged lines skipped and counted."""
        entries: list[AuditEntry] = []
        damaged = 0
        with open(self.path, "rb") as reader:
            for line in reader:
                entry = _parse(line)
                if entry is None:
                    damaged += 1 if line.strip() else 0
                else:
                    entries.append(entry)
        self.damaged = damaged
        return entries

    def tail(self, n: int) -> list[AuditEntry]:
        """The last ``n`` entries, oldest first, reading the file backwards in blocks."""
        if n <= 0:
            self.damaged = 0
            return []
        found: deque[AuditEntry] = deque()
        damaged = 0
        with open(self.path, "rb") as reader:
            pos = reader.seek(0, os.SEEK_END)
            rest = b""  # the start of a line whose beginning is in an earlier block
            while pos > 0 and len(found) < n:
                step = min(_TAIL_BLOCK_BYTES, pos)
                pos -= step
                reader.seek(pos)
                block = reader.read(step) + rest
                lines = block.split(b"\n")
                rest = lines[0] if pos > 0 else b""
                complete = lines[1:] if pos > 0 else lines
                for line in reversed(complete):
                    if not line.strip():
                        continue
                    entry = _parse(line)
                    if entry is None:
                        damaged += 1
                    else:
                        found.appendleft(entry)
                        if len(found) == n:
                            break
        self.damaged = damaged
        return list(found)


def _parse(line: bytes) -> AuditEntry | None:
    if not line.strip():
        return None
    try:
        return decode_line(line.rstrip(b"\n"))
    except (ValueError, TypeError):  # JSONDecodeError and UnicodeDecodeError included
        return None

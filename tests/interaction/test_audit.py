"""The audit log: one line per decision, survives reopen, a torn tail and a full disk."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_node.interaction import audit as audit_mod
from edge_node.interaction.audit import AuditEntry, AuditLog, MemoryAudit, decode_line, encode_line

WALL = 1_760_000_000.0


def entry(i: int, **kw: object) -> AuditEntry:
    fields: dict[str, object] = {
        "at": WALL + i,
        "kind": "moderation",
        "action": "block",
        "user": f"u{i}",
        "text": f"text {i} 傻逼",
        "rule": "傻逼",
    }
    fields.update(kw)
    return AuditEntry(**fields)  # type: ignore[arg-type]


def test_append_then_read_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "audit" / "log.jsonl"  # the directory is created
    with AuditLog(path) as log:
        log.append(entry(1))
        log.append(entry(2, kind="review", action="approve", by="op", item="h3", rule=None))
        log.append(entry(3, detail={"msg_id": "m3", "count": 2, "flag": True, "none": None}))
        assert log.read() == [
            entry(1),
            entry(2, kind="review", action="approve", by="op", item="h3", rule=None),
            entry(3, detail={"msg_id": "m3", "count": 2, "flag": True, "none": None}),
        ]
        assert log.appended == 3 and log.damaged == 0
    lines = path.read_text("utf-8").splitlines()
    assert len(lines) == 3
    assert json.loads(lines[1]) == {
        "at": WALL + 2,
        "kind": "review",
        "action": "approve",
        "user": "u2",
        "text": "text 2 傻逼",
        "by": "op",
        "item": "h3",
    }  # None fields left out, Chinese kept readable
    assert "傻逼" in lines[0]


def test_one_line_per_entry_whatever_the_text() -> None:
    tricky = entry(1, text='line\nbreak\r\u2028sep "quote" \\ \x00', user="x\ny")
    line = encode_line(tricky)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert decode_line(line.rstrip(b"\n")) == tricky
    lone = entry(2, text="bad \ud800 surrogate")
    line = encode_line(lone)
    assert line.count(b"\n") == 1 and decode_line(line.rstrip(b"\n")) == lone


def test_reopen_appends_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    with AuditLog(path) as log:
        for i in range(3):
            log.append(entry(i))
    with AuditLog(path) as log:
        assert not log.repaired_tail
        log.append(entry(3))
        log.append(entry(4))
        assert [e.user for e in log.read()] == ["u0", "u1", "u2", "u3", "u4"]


def test_torn_tail_is_skipped_counted_and_not_glued_to(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    with AuditLog(path) as log:
        log.append(entry(1))
        log.append(entry(2))
    whole = path.read_bytes()
    # A crash in the middle of writing the third line.
    path.write_bytes(whole + encode_line(entry(3))[:25])
    with AuditLog(path) as log:
        assert log.repaired_tail
        assert [e.user for e in log.read()] == ["u1", "u2"] and log.damaged == 1
        log.append(entry(4))
        assert [e.user for e in log.read()] == ["u1", "u2", "u4"] and log.damaged == 1
        assert [e.user for e in log.tail(5)] == ["u1", "u2", "u4"] and log.damaged == 1
    with AuditLog(path) as log:
        assert not log.repaired_tail  # repaired once, for good


def test_read_skips_damaged_lines_anywhere(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    good = [encode_line(entry(i)) for i in range(3)]
    bad = [
        b"not json\n",
        b'{"at": 1}\n',
        b'["a list"]\n',
        b"\xff\xfe\n",
        b'{"at":"x","kind":"k","action":"a"}\n',
    ]
    path.write_bytes(good[0] + b"".join(bad) + good[1] + b"\n" + good[2])
    log = AuditLog(path)
    assert [e.user for e in log.read()] == ["u0", "u1", "u2"]
    assert log.damaged == len(bad)  # blank lines are not damage
    log.close()


def test_write_per_entry_policy_fsyncs_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append(fd))
    with AuditLog(tmp_path / "a.jsonl", fsync="write") as log:
        for i in range(3):
            log.append(entry(i))
        assert len(calls) == 3
    assert len(calls) == 3  # nothing left to sync at close


def test_batch_policy_fsyncs_every_n_and_on_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append(fd))
    log = AuditLog(tmp_path / "b.jsonl", fsync="batch", sync_every=3)
    log.append(entry(1))
    log.append(entry(2))
    assert calls == []
    # Flushed all the same: another reader sees both lines before any fsync.
    assert len((tmp_path / "b.jsonl").read_bytes().splitlines()) == 2
    log.append(entry(3))
    assert len(calls) == 1
    log.append(entry(4))
    log.sync()
    assert len(calls) == 2
    log.sync()  # nothing new: no fsync
    assert len(calls) == 2
    log.append(entry(5))
    log.close()
    assert len(calls) == 3


def test_disk_errors_are_counted_not_raised() -> None:
    full = Path("/dev/full")
    if not full.exists():
        pytest.skip("no /dev/full here")
    log = AuditLog(full)
    log.append(entry(1))
    log.append(entry(2))
    assert log.write_errors >= 2 and log.appended == 0
    assert log.last_error is not None and "No space" in log.last_error


def test_append_after_close_is_counted(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "c.jsonl")
    log.close()
    log.append(entry(1))
    assert log.write_errors == 1 and log.appended == 0


@pytest.mark.parametrize(
    ("kw", "error"),
    [
        ({"at": math.inf}, "at: must be finite"),
        ({"at": "now"}, "at: expected wall-clock seconds"),
        ({"at": True}, "at: expected wall-clock seconds"),
        ({"kind": ""}, "kind: expected a non-empty string"),
        ({"action": None}, "action: expected a non-empty string"),
        ({"user": 5}, "user: expected a string or None"),
        ({"detail": {"token": "abc"}}, "detail.token: looks like a secret"),
        ({"detail": {"stream_key": "abc"}}, "detail.stream_key: looks like a secret"),
        ({"detail": {"nested": {"a": 1}}}, "detail.nested: expected a string"),
    ],
)
def test_bad_entries_are_refused(kw: dict[str, object], error: str) -> None:
    with pytest.raises((TypeError, ValueError), match=error):
        entry(1, **kw)


def test_detail_is_frozen_and_keyword_is_not_a_secret() -> None:
    source = {"keyword": "抽奖"}
    e = entry(1, detail=source)
    source["keyword"] = "changed"
    assert e.detail["keyword"] == "抽奖"
    with pytest.raises(TypeError):
        e.detail["x"] = 1  # type: ignore[index]


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(n_entries=st.integers(0, 60), n=st.integers(0, 70), block=st.integers(16, 400))
def test_tail_matches_the_end_of_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, n_entries: int, n: int, block: int
) -> None:
    monkeypatch.setattr(audit_mod, "_TAIL_BLOCK_BYTES", block)  # lines cross blocks
    path = tmp_path / f"t{n_entries}-{n}-{block}.jsonl"
    with AuditLog(path) as log:
        for i in range(n_entries):
            log.append(entry(i, text="x" * (i % 7) + "长" * (i % 5)))
        assert log.tail(n) == log.read()[-n:] if n else log.tail(n) == []


def test_memory_sink_counts_what_it_lets_go() -> None:
    sink = MemoryAudit(maxlen=2)
    for i in range(5):
        sink.append(entry(i))
    assert [e.user for e in sink.entries] == ["u3", "u4"] and sink.dropped == 3

"""Tokens: mint and verify, every way a token is refused, the secret file, role gates."""

from __future__ import annotations

import base64
import json
import os
import random
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_node.errors import ConfigError
from edge_node.interaction import auth
from edge_node.interaction.auth import AuthError, Claims, allowed, mint, verify
from edge_node.interaction.messages import MESSAGE_TYPES, WireError

SECRET = bytes(range(32))
NOW = 1_700_000_000.0
AUD = "edge-node"


def refused(token: str, *, secret: bytes = SECRET, now: float = NOW, aud: object = AUD) -> str:
    with pytest.raises(AuthError) as exc:
        verify(secret, token, now, aud)  # type: ignore[arg-type]
    e = exc.value
    assert isinstance(e, WireError) and e.code == "unauthorized" and e.id is None
    assert len(token) < 8 or token not in e.msg  # never echoes the token
    return e.reason


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(payload: dict[str, object], secret: bytes = SECRET) -> str:
    """A token with an arbitrary payload, correctly signed (to reach the later checks)."""
    body = b64(json.dumps(payload).encode())
    return f"{body}.{auth._signature(secret, body)}"


def test_mint_and_verify() -> None:
    token = mint(SECRET, "user-1", "operator", 60, NOW, AUD)
    assert verify(SECRET, token, NOW, AUD) == Claims("user-1", "operator", int(NOW) + 60)
    assert verify(SECRET, token, NOW + 59.9, AUD).role == "operator"
    assert "=" not in token and token.count(".") == 1


@pytest.mark.parametrize("role", auth.ROLES)
def test_every_role_round_trips(role: str) -> None:
    assert verify(SECRET, mint(SECRET, "u", role, 10, NOW), NOW, AUD).role == role


def test_unicode_user_ids() -> None:
    token = mint(SECRET, "观众-42 🎉", "viewer", 10, NOW)
    assert verify(SECRET, token, NOW, AUD).user == "观众-42 🎉"


def test_expired() -> None:
    token = mint(SECRET, "u", "viewer", 60, NOW)
    assert refused(token, now=NOW + 60) == "expired"
    assert refused(token, now=NOW + 10**6) == "expired"


def test_forged_signature() -> None:
    token = mint(SECRET, "u", "viewer", 60, NOW)
    assert refused(token, secret=b"\x01" * 32) == "bad_signature"
    body, sig = token.split(".")
    flipped = sig[:-2] + ("A" if sig[-2] != "A" else "B") + sig[-1]
    assert refused(f"{body}.{flipped}") == "bad_signature"
    assert refused(f"{body}.{b64(b'x' * 32)}") == "bad_signature"


def test_tampered_payload() -> None:
    token = mint(SECRET, "u", "viewer", 60, NOW)
    body, sig = token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=="))
    payload["role"] = "operator"
    assert refused(f"{b64(json.dumps(payload).encode())}.{sig}") == "bad_signature"
    payload["role"], payload["exp"] = "viewer", payload["exp"] + 3600
    assert refused(f"{b64(json.dumps(payload).encode())}.{sig}") == "bad_signature"


def test_wrong_audience() -> None:
    token = mint(SECRET, "u", "viewer", 60, NOW, "edge-node:box-1")
    assert refused(token) == "wrong_audience"
    assert refused(token, aud=("edge-node", "edge-node:box-2")) == "wrong_audience"
    ok = verify(SECRET, token, NOW, auth.node_audiences("edge-node", "box-1"))
    assert ok.user == "u"
    # The generic audience is accepted by every node that lists it.
    generic = mint(SECRET, "u", "viewer", 60, NOW)
    assert verify(SECRET, generic, NOW, auth.node_audiences("edge-node", "box-9")).user == "u"


def test_unknown_role() -> None:
    token = forge({"sub": "u", "role": "admin", "exp": int(NOW) + 60, "aud": AUD, "iat": 0})
    assert refused(token) == "unknown_role"


@pytest.mark.parametrize(
    "token",
    [
        "",
        "abc",
        ".",
        "a.",
        ".b",
        "a.b.c",
        "a b.c",
        "a=.b",
        "é.b",
        "x" * 5000,
    ],
)
def test_malformed_tokens(token: str) -> None:
    assert refused(token) == "malformed"


@pytest.mark.parametrize(
    "payload",
    [
        [1, 2],
        {"role": "viewer", "exp": 2**40, "aud": AUD, "iat": 0},
        {"sub": "", "role": "viewer", "exp": 2**40, "aud": AUD, "iat": 0},
        {"sub": 5, "role": "viewer", "exp": 2**40, "aud": AUD, "iat": 0},
        {"sub": "u", "role": 1, "exp": 2**40, "aud": AUD, "iat": 0},
        {"sub": "u", "role": "viewer", "exp": "never", "aud": AUD, "iat": 0},
        {"sub": "u", "role": "viewer", "exp": True, "aud": AUD, "iat": 0},
        {"sub": "u", "role": "viewer", "exp": 2**40, "aud": AUD},
        {"sub": "u", "role": "viewer", "exp": 2**40, "iat": 0},
    ],
)
def test_malformed_payloads_even_when_signed(payload: object) -> None:
    body = b64(json.dumps(payload).encode())
    assert refused(f"{body}.{auth._signature(SECRET, body)}") == "malformed"


def test_signed_garbage_payload_is_malformed() -> None:
    for raw in (b"\xff\xfe", b"{", b"null"):
        body = b64(raw)
        assert refused(f"{body}.{auth._signature(SECRET, body)}") == "malformed"


@given(token=st.text(max_size=300))
def test_random_text_is_refused_with_auth_error(token: str) -> None:
    with pytest.raises(AuthError):
        verify(SECRET, token, NOW, AUD)


def test_mint_rejects_what_no_token_may_carry() -> None:
    for kwargs in (
        {"role": "admin"},
        {"user": ""},
        {"user": "x" * 129},
        {"user": "a\nb"},
        {"ttl_s": 0},
        {"ttl_s": -5},
        {"audience": ""},
        {"secret": b"short"},
    ):
        args = {"secret": SECRET, "user": "u", "role": "viewer", "ttl_s": 10, "now": NOW}
        args.update(kwargs)
        with pytest.raises(ValueError):
            mint(**args)  # type: ignore[arg-type]


def test_secret_file_created_once_with_mode_0600_and_reused(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = auth.load_or_create_secret(data_dir)
    path = data_dir / "node.secret"
    assert len(first) == 32 and path.read_bytes() == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert auth.load_or_create_secret(data_dir) == first
    assert [p.name for p in data_dir.iterdir()] == ["node.secret"]  # no temp files left
    token = mint(first, "u", "viewer", 60, NOW)
    assert verify(auth.load_or_create_secret(data_dir), token, NOW, AUD).user == "u"


def test_concurrent_first_starts_agree_on_one_secret(tmp_path: Path) -> None:
    # A node and an `edge-node token` starting together must not end with two secrets.
    with ThreadPoolExecutor(8) as pool:
        got = set(pool.map(lambda _: auth.load_or_create_secret(tmp_path), range(32)))
    assert got == {(tmp_path / "node.secret").read_bytes()}
    assert [p.name for p in tmp_path.iterdir()] == ["node.secret"]


def test_secret_created_where_hard_links_are_not_supported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(src: object, dst: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    secret = auth.load_or_create_secret(tmp_path)
    path = tmp_path / "node.secret"
    assert path.read_bytes() == secret and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["node.secret"]


def test_secrets_differ_between_nodes(tmp_path: Path) -> None:
    assert auth.load_or_create_secret(tmp_path / "a") != auth.load_or_create_secret(tmp_path / "b")


def test_named_secret_file(tmp_path: Path) -> None:
    named = tmp_path / "keys" / "edge.key"
    assert auth.secret_path(tmp_path, str(named)) == named
    assert auth.secret_path(tmp_path, "") == tmp_path / "node.secret"
    secret = auth.load_or_create_secret(tmp_path, path=named)
    assert named.read_bytes() == secret and not (tmp_path / "node.secret").exists()
    named.write_bytes(b"operator-provided secret, long enough")
    assert auth.load_or_create_secret(tmp_path, path=named) == named.read_bytes()


def test_short_secret_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "node.secret").write_bytes(b"123")
    with pytest.raises(ConfigError) as exc:
        auth.load_or_create_secret(tmp_path)
    assert exc.value.key == "auth.secret_file"


def test_secret_never_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    secret = auth.load_or_create_secret(tmp_path)
    os.chmod(tmp_path / "node.secret", 0o644)
    auth.load_or_create_secret(tmp_path)  # warns about the mode
    assert any("readable" in r.getMessage() for r in caplog.records)
    for record in caplog.records:
        text = record.getMessage() + repr(vars(record))
        assert secret.hex() not in text and repr(secret) not in text


ROLE_GATES = {
    "viewer": {"comment", "like", "vote", "join"},
    "operator": {"comment", "like", "vote", "join", "gift", "command"},
    "platform": {"comment", "like", "vote", "join", "gift", "command"},
    "bench": {"comment", "like", "vote", "join", "probe"},
}


@pytest.mark.parametrize("role", sorted(ROLE_GATES))
def test_roles_gate_message_types(role: str) -> None:
    assert {t for t in MESSAGE_TYPES if allowed(role, t)} == ROLE_GATES[role]


def test_unknown_roles_and_types_are_not_allowed() -> None:
    assert not allowed("admin", "comment")
    assert not allowed("operator", "ack")
    assert not allowed("", "")


def test_anonymous_claims() -> None:
    a = auth.anonymous_claims(random.Random(1))
    b = auth.anonymous_claims(random.Random(2))
    assert a.role == "viewer" and a.exp is None and a.user.startswith("anon:")
    assert a.user != b.user
    assert a == auth.anonymous_claims(random.Random(1))  # deterministic given the rng

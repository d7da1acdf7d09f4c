"""Access tokens: who a client is, which role it has, and what that role may send.

A token is ``base64url(payload) + "." + base64url(signature)`` without padding, where
the payload is compact JSON ``{"sub", "role", "exp", "aud", "iat"}`` and the signature
is HMAC-SHA256 under the node's secret over a fixed domain tag and the payload's
base64url text. One algorithm, pinned: there is no header to choose another.

``verify`` checks the signature (constant time) before it parses anything, then the
payload's shape, the audience, the expiry and the role. Time is a parameter
(``now``, Unix seconds) so the checks are pure; only ``load_or_create_secret``
touches the disk, once at start-up. The secret's bytes are never logged or printed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import random
import re
import secrets
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Literal, TypeAlias, get_args

from edge_node.errors import ConfigError
from edge_node.interaction.messages import WireError

log = logging.getLogger(__name__)

Role: TypeAlias = Literal["viewer", "operator", "bench", "platform"]
ROLES: Final[tuple[Role, ...]] = get_args(Role)

AuthReason: TypeAlias = Literal[
    "malformed", "bad_signature", "expired", "wrong_audience", "unknown_role"
]

SECRET_FILE_NAME: Final = "node.secret"
SECRET_BYTES: Final = 32
MIN_SECRET_BYTES: Final = 16
MAX_TOKEN_CHARS: Final = 2048
MAX_USER_CHARS: Final = 128
DEFAULT_AUDIENCE: Final = "edge-node"

# Domain separation: a MAC made with this secret for anything else never verifies here.
_SIGNING_TAG: Final = b"edge-node token v1\x00"
_B64URL: Final = re.compile(r"[A-Za-z0-9_-]+")
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class AuthError(WireError):
    """A token the node refuses; answered with the wire code ``unauthorized``.

    ``reason`` says which check failed (one of ``AuthReason``); the message never
    echoes the token.
    """

    def __init__(self, reason: AuthReason, detail: str = "") -> None:
        text = f"token: {reason.replace('_', ' ')}" + (f" ({detail})" if detail else "")
        super().__init__("unauthorized", text, None, field="token")
        self.reason: AuthReason = reason


@dataclass(frozen=True, slots=True)
class Claims:
    """Who is talking: the token's subject and role; ``exp`` None for anonymous viewers,
    whose identity lives only as long as their connection."""

    user: str
    role: Role
    exp: int | None


# Which roles may send which message type: the one table, read by ``allowed``.
_ANY_ROLE: Final = frozenset(ROLES)
_ALLOWED: Final[Mapping[str, frozenset[str]]] = MappingProxyType(
    {
        "comment": _ANY_ROLE,
        "like": _ANY_ROLE,
        "vote": _ANY_ROLE,
        "join": _ANY_ROLE,
        # Trusted roles: gifts are payments, so only the platform (or the operator) says
        # one happened; a viewer's client could claim anything.
        "gift": frozenset({"platform", "operator"}),
        # Operators on site, and the platform for the cloud's commands.
        "command": frozenset({"operator", "platform"}),
        # Latency probes are drawn on the picture: the benchmark's role only.
        "probe": frozenset({"bench"}),
    }
)


def allowed(role: str, message_type: str) -> bool:
    """May ``role`` send ``message_type``? Unknown roles and types: no."""
    roles = _ALLOWED.get(message_type)
    return roles is not None and role in roles


def anonymous_claims(rng: random.Random) -> Claims:
    """A fresh anonymous viewer, for connections without a token where config allows."""
    return Claims(user=f"anon:{rng.getrandbits(64):016x}", role="viewer", exp=None)


def node_audiences(audience: str, node_id: str) -> tuple[str, str]:
    """The audiences a node accepts: every node's (``edge-node``) and its own
    (``edge-node:<node id>``)."""
    return audience, f"{audience}:{node_id}"


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    if not _B64URL.fullmatch(text):
        raise AuthError("malformed", "not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise AuthError("malformed", "not base64url") from None


def _signature(secret: bytes, payload_b64: str) -> str:
    mac = hmac.new(secret, _SIGNING_TAG + payload_b64.encode("ascii"), hashlib.sha256)
    return _b64encode(mac.digest())


def _check_user(user: str) -> bool:
    return 1 <= len(user) <= MAX_USER_CHARS and not _CONTROL.search(user)


def mint(
    secret: bytes,
    user: str,
    role: str,
    ttl_s: int,
    now: float,
    audience: str = DEFAULT_AUDIENCE,
) -> str:
    """A signed token for ``user`` with ``role``, valid from ``now`` for ``ttl_s`` seconds.

    Raises ValueError for arguments no token may carry (the caller's mistake).
    """
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r} (known: {', '.join(ROLES)})")
    if not _check_user(user):
        raise ValueError(f"user must be 1 to {MAX_USER_CHARS} characters, no control characters")
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int) or ttl_s <= 0:
        raise ValueError(f"ttl_s must be a positive integer, got {ttl_s!r}")
    if not audience:
        raise ValueError("audience must not be empty")
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"secret must be at least {MIN_SECRET_BYTES} bytes")
    iat = int(now)
    payload = {"sub": user, "role": role, "exp": iat + ttl_s, "aud": audience, "iat": iat}
    raw = json.dumps(payload, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    payload_b64 = _b64encode(raw.encode("utf-8"))
    return f"{payload_b64}.{_signature(secret, payload_b64)}"


def _int_claim(payload: Mapping[str, Any], name: str) -> int:
    value = payload.get(name)
    if type(value) is not int:
        raise AuthError("malformed", f"{name} must be an integer")
    return value


def verify(secret: bytes, token: str, now: float, audience: str | Collection[str]) -> Claims:
    """The claims of a valid token, or ``AuthError`` naming the failed check.

    ``audience`` is the audience this node accepts, or several (``node_audiences``).
    A token expires at ``exp``: valid while ``now < exp``.
    """
    if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
        raise AuthError("malformed", "not a token string of sane length")
    payload_b64, dot, sig_b64 = token.partition(".")
    if not dot or not payload_b64 or not sig_b64 or "." in sig_b64:
        raise AuthError("malformed", "expected payload.signature")
    if not _B64URL.fullmatch(payload_b64) or not _B64URL.fullmatch(sig_b64):
        raise AuthError("malformed", "not base64url")
    # Compare the encoded signatures: no decoding of attacker bytes before the MAC check.
    if not hmac.compare_digest(_signature(secret, payload_b64), sig_b64):
        raise AuthError("bad_signature")
    try:
        payload = json.loads(_b64decode(payload_b64).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise AuthError("malformed", "payload is not JSON") from None
    if type(payload) is not dict:
        raise AuthError("malformed", "payload is not a map")
    user, role, aud = payload.get("sub"), payload.get("role"), payload.get("aud")
    if type(user) is not str or not _check_user(user):
        raise AuthError("malformed", "sub must be a user id")
    if type(role) is not str or type(aud) is not str:
        raise AuthError("malformed", "role and aud must be strings")
    exp = _int_claim(payload, "exp")
    _int_claim(payload, "iat")
    accepted = (audience,) if isinstance(audience, str) else audience
    if aud not in accepted:
        raise AuthError("wrong_audience")
    if now >= exp:
        raise AuthError("expired")
    if role not in ROLES:
        raise AuthError("unknown_role")
    return Claims(user=user, role=role, exp=exp)


def secret_path(data_dir: Path, secret_file: str = "") -> Path:
    """Where the node's secret lives: ``auth.secret_file``, or ``<data_dir>/node.secret``."""
    return Path(secret_file) if secret_file else data_dir / SECRET_FILE_NAME


def _read_secret(path: Path) -> bytes:
    secret = path.read_bytes()
    if len(secret) < MIN_SECRET_BYTES:
        raise ConfigError(
            "auth.secret_file",
            f"{path} holds {len(secret)} bytes; a secret needs at least {MIN_SECRET_BYTES}",
        )
    if os.name == "posix" and path.stat().st_mode & 0o077:
        log.warning(
            "secret file is readable by other users; chmod 600 it", extra={"path": str(path)}
        )
    return secret


def _write_new(path: Path) -> bool:
    """Create ``path`` (mode 0600) holding fresh random bytes; False if it exists."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as fh:
        fh.write(secrets.token_bytes(SECRET_BYTES))
        fh.flush()
        os.fsync(fh.fileno())
    return True


def load_or_create_secret(data_dir: Path, *, path: Path | None = None) -> bytes:
    """The node's token secret: read it, or create 32 random bytes (mode 0600) on first start.

    ``path`` overrides ``<data_dir>/node.secret`` (``auth.secret_file``). Creation is
    atomic and never replaces an existing file, so a node and an ``edge-node token``
    started together agree on one secret.
    """
    target = path if path is not None else secret_path(data_dir)
    if target.exists():
        return _read_secret(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Written in full under a temporary name, then linked into place: a reader never
    # sees a half-written secret, and link() fails rather than replace a winner's file.
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(8)}.tmp")
    _write_new(tmp)
    try:
        os.link(tmp, target)
        created = True
    except FileExistsError:
        created = False
    except OSError:  # no hard links on this file system (some FUSE and network mounts)
        created = _write_new(target)
    finally:
        tmp.unlink(missing_ok=True)
    if created:
        log.info("created the node secret", extra={"path": str(target)})
    return _read_secret(target)

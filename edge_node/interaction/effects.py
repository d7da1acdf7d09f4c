"""What the engine's features hand back, and the argument reader of commands.

Kept apart from ``engine.py`` so that the feature modules (lottery, PK, coupons,
auto-reply, moderation) and the engine that composes them share these types without
importing each other.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Reply:
    """To the sender of the message being handled."""

    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Push:
    """State for clients: ``user`` None means everyone connected."""

    payload: dict[str, Any]
    user: str | None = None


Effect = Reply | Push


class CommandError(Exception):
    """A command (or a feature acting for a message) refused: ``code`` is a contract
    error code (``bad_message``, ``unknown_target``, ``busy``, ``forbidden``, ...)."""

    def __init__(self, code: str, msg: str) -> None:
        super().__init__(msg)
        self.code, self.msg = code, msg


def arg(args: Mapping[str, Any], name: str, types: Any, default: Any = ...) -> Any:
    """``args[name]`` checked against ``types`` (a bool is never taken for a number);
    a missing required argument or a wrong type is a ``bad_message`` naming it."""
    if name not in args:
        if default is ...:
            raise CommandError("bad_message", f"args.{name}: required")
        return default
    value = args[name]
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise CommandError("bad_message", f"args.{name}: wrong type bool")
    if not isinstance(value, types):
        raise CommandError("bad_message", f"args.{name}: wrong type {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        # NaN or an infinity would arm a timer that never comes (or always does).
        raise CommandError("bad_message", f"args.{name}: must be a finite number")
    return value

"""The project's exception hierarchy: every error names what was wrong and where."""

from __future__ import annotations


class EdgeNodeError(Exception):
    """Base of every error edge-node raises on purpose."""


class ConfigError(EdgeNodeError):
    """A configuration value is missing, unknown, of the wrong type or impossible.

    ``key`` is the dotted key (``http.port``) so the operator knows what to fix.
    """

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"config key '{key}': {reason}")
        self.key = key
        self.reason = reason


class ProtocolError(EdgeNodeError):
    """A peer sent something that breaks a protocol (bad frame, bad SDP, ...)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason

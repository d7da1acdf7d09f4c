"""Immutable scene snapshots: what the compositor draws on every frame.

The interaction engine (control process) publishes a new snapshot on every change;
the media worker keeps the latest one and reads it at every frame without a lock
(replacing a reference is atomic). Snapshots are small: widget states and start
times; sprites are rendered and cached in the worker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Scene:
    version: int = 0
    widgets: tuple[dict[str, Any], ...] = field(default_factory=tuple)

    def to_wire(self) -> dict[str, Any]:
        return {"version": self.version, "widgets": list(self.widgets)}

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Scene:
        return cls(version=int(data["version"]), widgets=tuple(data.get("widgets", ())))


EMPTY_SCENE = Scene()

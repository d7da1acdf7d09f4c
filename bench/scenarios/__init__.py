"""The scenario registry: one module per scenario under ``bench/scenarios/``.

A scenario module defines a ``Scenario`` subclass and exposes one instance as
``SCENARIO``; ``discover()`` finds every such module (names starting with ``_`` are
helpers, not scenarios), so adding a scenario is adding a file. The harness
(``bench.runner``) owns the node's life, the repetitions, the peer runs and the
report; a scenario only says what one run does and what it measured.
"""

from __future__ import annotations

import importlib
import pkgutil
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import aiohttp

from bench.figures import Figure, Figures
from bench.node import Node

if TYPE_CHECKING:
    from bench.report import Suite


@dataclass(frozen=True, slots=True)
class Check:
    """A yes/no fact a run established (a path answered, one encoder for two viewers)."""

    name: str
    ok: bool
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


@dataclass
class RunContext:
    node: Node
    http: aiohttp.ClientSession
    seconds: float
    out_dir: Path
    run_index: int  # from 1

    def log_path(self, what: str) -> Path:
        logs = self.out_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        return logs / f"run{self.run_index}-{what}.log"


@dataclass
class RunResult:
    figures: Figures
    checks: list[Check] = field(default_factory=list)
    # Time series for plots: name -> [(seconds into the run, value)].
    series: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)  # anything else worth keeping


class Peer(ABC):
    """A third-party program doing comparable work: the bar the node is held to."""

    name: ClassVar[str]

    @abstractmethod
    def unavailable(self) -> str | None:
        """Why the peer cannot run on this machine, or None when it can."""

    @abstractmethod
    def describe(self, seconds: float) -> dict[str, Any]:
        """What runs (command line, version), for the report."""

    @abstractmethod
    async def run(self, seconds: float, log_path: Path) -> Figures:
        """Run once; figures named ``peer_*``. Runs with the node stopped (when the bench
        started it), so that the two never compete for the cores."""


class Scenario(ABC):
    name: ClassVar[str]
    description: ClassVar[str]
    default_seconds: ClassVar[float] = 10.0
    default_runs: ClassVar[int] = 3
    # EDGE_NODE_* settings for a node the bench starts (ignored with --target).
    node_env: ClassVar[Mapping[str, str]] = {}
    peer: ClassVar[Peer | None] = None

    @abstractmethod
    async def run_once(self, ctx: RunContext) -> RunResult:
        """One measured run against a healthy node."""

    def derived_figures(self, figures: Mapping[str, Figure]) -> Figures:
        """Figures computed from the medians, the node's and the peer's together (ratios
        of medians, not medians of ratios); the harness adds them to the report after
        the peer ran. None by default."""
        return {}

    def write_plots(self, suite: Suite, out_dir: Path) -> list[str]:
        """The scenario's own PNGs, beside the report's standard ones; their file names
        (relative to ``out_dir``). None by default."""
        return []


def discover() -> dict[str, Scenario]:
    """Every scenario module's ``SCENARIO``, by name, in name order."""
    found: dict[str, Scenario] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        scenario = getattr(module, "SCENARIO", None)
        if not isinstance(scenario, Scenario):
            raise TypeError(f"bench/scenarios/{info.name}.py defines no SCENARIO instance")
        if scenario.name in found:
            raise ValueError(f"scenario {scenario.name!r} is defined twice")
        found[scenario.name] = scenario
    return dict(sorted(found.items()))


def get(name: str) -> Scenario:
    scenarios = discover()
    if name not in scenarios:
        raise KeyError(f"no scenario {name!r} (known: {', '.join(scenarios)})")
    return scenarios[name]

"""The runbook (deploy/README.md) names only metrics the node has, and covers every
fault the issue asks it to: a renamed metric or a dropped section fails here."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.deploy.deploy_files import README, REPO

METRIC = re.compile(r"\bedge_node_[a-z0-9_]+\b(?!\.)")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
FAULTS = (
    "publisher drops",
    "push target",
    "media worker crashes",
    "cloud",
    "disk is full",
    "spool file is corrupt",
    "clock jumps",
    "collector's database",
)


def _metric_patterns() -> tuple[set[str], list[re.Pattern[str]]]:
    """Every string literal in edge_node/ that could be a metric name, and the
    f-string templates (``f"edge_node_{proc}_cpu_seconds"``) as patterns."""
    literals: set[str] = set()
    templates: list[re.Pattern[str]] = []
    for path in sorted((REPO / "edge_node").rglob("*.py")):
        if "_proto" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                literals.add(node.value)
            elif isinstance(node, ast.JoinedStr):
                fixed = "".join(
                    v.value
                    for v in node.values
                    if isinstance(v, ast.Constant) and isinstance(v.value, str)
                )
                # Only templates that spell part of a metric name: "_connections_total",
                # "edge_node_..._cpu_seconds"; not f"{a}{b}", which matches anything.
                if not fixed.startswith(("edge_node_", "_")) or len(fixed) < 6:
                    continue
                parts = [
                    re.escape(v.value)
                    if isinstance(v, ast.Constant) and isinstance(v.value, str)
                    else "[a-z_]+"
                    for v in node.values
                ]
                templates.append(re.compile("".join(parts)))
    return literals, templates


def _is_metric(name: str, literals: set[str], templates: list[re.Pattern[str]]) -> bool:
    candidates = [name] + [name.removesuffix(s) for s in HISTOGRAM_SUFFIXES if name.endswith(s)]
    return any(c in literals or any(t.fullmatch(c) for t in templates) for c in candidates)


def test_every_metric_the_runbook_names_exists() -> None:
    named = sorted(set(METRIC.findall(README.read_text())))
    assert len(named) >= 30, named
    literals, templates = _metric_patterns()
    missing = [n for n in named if not _is_metric(n, literals, templates)]
    assert not missing, f"deploy/README.md names metrics the node does not have: {missing}"


def test_the_metric_check_would_notice_a_wrong_name() -> None:
    literals, templates = _metric_patterns()
    assert _is_metric("edge_node_worker_restarts_total", literals, templates)
    assert _is_metric("edge_node_rtmp_connections_total", literals, templates)  # template
    assert _is_metric("edge_node_event_to_frame_seconds_bucket", literals, templates)
    assert not _is_metric("edge_node_worker_restart_total", literals, templates)


@pytest.mark.parametrize("fault", FAULTS)
def test_runbook_says_how_to_recover_from(fault: str) -> None:
    text = README.read_text()
    section = text.split("## Recovering from faults", 1)[1].split("\n## ", 1)[0]
    headings = [line for line in section.splitlines() if line.startswith("### ")]
    (heading,) = [h for h in headings if fault in h.lower()]
    body = section.split(heading, 1)[1].split("\n### ", 1)[0]
    for part in ("**Node**", "**You see**", "**Do**"):
        assert part in body, (heading, part)


def test_runbook_covers_install_keys_and_metrics() -> None:
    text = README.read_text()
    for heading in (
        "## Install with systemd",
        "## Install with a container",
        "## Install on Kubernetes",
        "## Secrets and tokens",
        "## Rotating keys",
        "## Reading the metrics",
    ):
        assert heading in text, heading
    # Every file the table at the top lists exists.
    for name in re.findall(r"^\| `([^`]+)`", text, re.M):
        for part in name.split("` .. `"):
            assert (Path(README.parent) / part).exists(), part

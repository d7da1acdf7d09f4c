"""The ``edge-node`` console script, run as a real process (``python -m edge_node``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from edge_node import __version__, config

REPO = Path(__file__).resolve().parents[1]


def edge_node(*args: str) -> subprocess.CompletedProcess[str]:
    # No EDGE_NODE_* overrides from the developer's shell leak into the checks.
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_NODE_")}
    return subprocess.run(
        [sys.executable, "-m", "edge_node", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        cwd=REPO,
    )


def test_help_lists_the_verbs() -> None:
    result = edge_node("--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: edge-node")
    for verb in ("demo", "run", "check-config"):
        assert verb in result.stdout


def test_check_config_good_file(tmp_path: Path) -> None:
    path = tmp_path / "good.toml"
    path.write_text('[node]\nid = "cli-box"\n\n[http]\nport = 9099\n', encoding="utf-8")
    result = edge_node("check-config", str(path))
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout
    assert "cli-box" in result.stdout
    assert "9099" in result.stdout


def test_check_config_example_file() -> None:
    result = edge_node("check-config", "deploy/edge-node.example.toml")
    assert result.returncode == 0, result.stderr


def test_check_config_bad_port_exits_2_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[http]\nport = 70000\n", encoding="utf-8")
    result = edge_node("check-config", str(path))
    assert result.returncode == 2
    assert "http.port" in result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.stderr


def test_check_config_missing_file_exits_2(tmp_path: Path) -> None:
    result = edge_node("check-config", str(tmp_path / "absent.toml"))
    assert result.returncode == 2
    assert "absent.toml" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_without_config_prints_usage() -> None:
    result = edge_node("run")
    assert result.returncode != 0
    assert "usage:" in result.stderr
    assert "--config" in result.stderr


def test_no_verb_prints_usage() -> None:
    result = edge_node()
    assert result.returncode != 0
    assert "usage:" in result.stderr


def test_version() -> None:
    result = edge_node("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"edge-node {__version__}"


def test_module_prints_the_example_config() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "edge_node.config"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert result.stdout == config.example_toml()


def test_run_refuses_to_start_without_a_stream_key(tmp_path: Path) -> None:
    cfg = tmp_path / "venue.toml"
    cfg.write_text('[node]\nid = "venue-1"\n')
    result = edge_node("run", "--config", str(cfg))
    assert result.returncode == 2
    assert "ingest.stream_key" in result.stderr

"""``edge-node token``: a real process mints with the node's secret; the node verifies."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

from edge_node.interaction import auth

REPO = Path(__file__).resolve().parents[1]


def edge_node(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_NODE_")}
    return subprocess.run(
        [sys.executable, "-m", "edge_node", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        cwd=cwd,
    )


def test_token_verifies_with_the_secret_in_the_data_dir(tmp_path: Path) -> None:
    result = edge_node(
        "token", "--user", "u1", "--role", "operator", "--ttl", "60", "--data-dir", str(tmp_path)
    )
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert result.stdout == token + "\n"  # the token alone, nothing else on stdout
    path = tmp_path / "node.secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    secret = path.read_bytes()
    assert secret.hex() not in result.stdout + result.stderr
    claims = auth.verify(secret, token, time.time(), "edge-node")
    assert claims.user == "u1" and claims.role == "operator"
    assert time.time() + 50 < claims.exp <= time.time() + 61  # type: ignore[operator]

    # A second token reuses the same secret (the node's), and the first still verifies.
    again = edge_node(
        "token", "--user", "u2", "--role", "viewer", "--ttl", "60", "--data-dir", str(tmp_path)
    )
    assert again.returncode == 0, again.stderr
    assert path.read_bytes() == secret
    assert auth.verify(secret, again.stdout.strip(), time.time(), "edge-node").user == "u2"


def test_token_uses_the_config_data_dir_secret_file_and_audience(tmp_path: Path) -> None:
    cfg = tmp_path / "node.toml"
    key = tmp_path / "keys" / "edge.key"
    cfg.write_text(
        f'[node]\ndata_dir = "{tmp_path / "data"}"\n\n'
        f'[auth]\nsecret_file = "{key}"\naudience = "venue-a"\ntoken_ttl_s = 600\n',
        encoding="utf-8",
    )
    result = edge_node("token", "--user", "bench-1", "--role", "bench", "--config", str(cfg))
    assert result.returncode == 0, result.stderr
    claims = auth.verify(key.read_bytes(), result.stdout.strip(), time.time(), "venue-a")
    assert claims.role == "bench"
    assert claims.exp is not None and claims.exp > time.time() + 590  # the config's ttl
    assert not (tmp_path / "data" / "node.secret").exists()


def test_default_data_dir_is_edge_data_in_the_working_directory(tmp_path: Path) -> None:
    result = edge_node("token", "--user", "v", "--role", "viewer", "--ttl", "5", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    secret = (tmp_path / "edge-data" / "node.secret").read_bytes()
    assert auth.verify(secret, result.stdout.strip(), time.time(), "edge-node").user == "v"


def test_bad_arguments_exit_2(tmp_path: Path) -> None:
    base = ["token", "--user", "u1", "--data-dir", str(tmp_path)]
    bad_role = edge_node(*base, "--role", "admin", "--ttl", "60")
    assert bad_role.returncode == 2
    assert "--role" in bad_role.stderr and bad_role.stdout == ""
    assert edge_node(*base, "--role", "viewer", "--ttl", "0").returncode == 2
    assert edge_node(*base, "--role", "viewer", "--ttl", "soon").returncode == 2
    both = edge_node(*base, "--role", "viewer", "--config", str(tmp_path / "x.toml"))
    assert both.returncode == 2
    empty_user = edge_node("token", "--user", "", "--role", "viewer", "--data-dir", str(tmp_path))
    assert empty_user.returncode == 2 and empty_user.stdout == ""


def test_help_lists_token() -> None:
    result = edge_node("--help")
    assert result.returncode == 0 and "token" in result.stdout

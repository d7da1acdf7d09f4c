"""The configs under deploy/ are ones the node accepts, and every override is real.

Every TOML (the venue examples, the generated reference, the Kubernetes ConfigMap)
goes through the node's own loader; the venue examples pass ``edge-node
check-config``; every ``EDGE_NODE_*`` name written anywhere under deploy/ (manifests,
units, env files, comments, the runbook) names a key of the schema, because the node
silently ignores a variable without ``__`` and refuses an unknown key only at start.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_node import cli
from edge_node import config as config_mod
from edge_node.errors import ConfigError
from tests.deploy.deploy_files import (
    DEPLOY,
    K8S,
    REPO,
    SAMPLE_VALUES,
    SYSTEMD,
    VENUES,
    config_key,
    deploy_text_files,
    env_names_in,
    load_config_text,
    read_env_file,
    yaml_documents,
)

TOML_FILES = sorted(DEPLOY.rglob("*.toml"))
VENUE_FILES = sorted(VENUES.glob("*.toml"))
# Where every install mode keeps the node's state (StateDirectory=, the image's
# VOLUME, the DaemonSet's hostPath).
DATA_DIR = "/var/lib/edge-node"


def _configmap_tomls() -> list[tuple[str, str]]:
    found = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml_documents(path):
            if doc["kind"] == "ConfigMap":
                for name, text in doc.get("data", {}).items():
                    if name.endswith(".toml"):
                        found.append((f"{path.name}:{doc['metadata']['name']}/{name}", text))
    return found


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO))


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's own EDGE_NODE_* variables must not decide these tests."""
    import os

    for var in list(os.environ):
        if var.startswith(config_mod.ENV_PREFIX):
            monkeypatch.delenv(var)


def test_there_are_files_to_check() -> None:
    assert len(VENUE_FILES) >= 2, VENUE_FILES
    assert DEPLOY / "edge-node.example.toml" in TOML_FILES
    assert _configmap_tomls(), "no TOML in a ConfigMap under deploy/k8s"


@pytest.mark.parametrize("path", TOML_FILES, ids=_rel)
def test_every_toml_loads_with_the_node_loader(path: Path) -> None:
    config_mod.load(path, environ={})


@pytest.mark.parametrize("where,text", _configmap_tomls(), ids=lambda v: str(v)[:60])
def test_configmap_toml_loads_with_the_node_loader(where: str, text: str) -> None:
    load_config_text(text, {})


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize("path", VENUE_FILES, ids=_rel)
def test_venue_config_passes_check_config(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check-config", str(path)]) == 0
    assert ": ok (" in capsys.readouterr().out


@pytest.mark.parametrize("path", VENUE_FILES, ids=_rel)
def test_venue_config_keeps_state_where_installs_persist_it(path: Path) -> None:
    cfg = config_mod.load(path, environ={})
    assert cfg.node.data_dir == DATA_DIR
    # Paths to files the box provides sit in the config directory every install
    # mounts (/etc/edge-node: ConfigurationDirectory=, the container's bind mount).
    for key in ("tls_ca", "tls_cert", "tls_key"):
        value = getattr(cfg.cloud, key)
        assert not value or value.startswith("/etc/edge-node/"), (key, value)


@pytest.mark.parametrize("path", VENUE_FILES, ids=_rel)
def test_venue_config_names_the_secrets_run_needs(path: Path) -> None:
    """The header lists the overrides to set; with them, `run` has its input."""
    header = path.read_text().split("\n[", 1)[0]
    named = sorted(env_names_in(header))
    assert named, f"{path.name} names no EDGE_NODE_* secret to set"
    environ = {var: SAMPLE_VALUES.get(config_key(var), "sample") for var in named}
    bare = config_mod.load(path, environ={})
    assert not bare.ingest.stream_key, "a secret in the TOML itself"
    assert not bare.cloud.token, "a secret in the TOML itself"
    cfg = config_mod.load(path, environ=environ)
    assert cfg.ingest.stream_key or cfg.ingest.rtsp_url, named
    if cfg.cloud.target:
        assert cfg.cloud.token, f"{path.name}: dials {cfg.cloud.target} without a token"


@pytest.mark.parametrize("path", deploy_text_files(), ids=_rel)
def test_every_env_name_under_deploy_is_a_config_key(path: Path) -> None:
    for var in sorted(env_names_in(path.read_text())):
        config_key(var)  # raises, naming the variable


def test_config_key_refuses_what_the_node_would_ignore() -> None:
    assert config_key("EDGE_NODE_HTTP__PORT") == "http.port"
    for bad in ("EDGE_NODE_HTTP_PORT", "EDGE_NODE_HTTPS__PORT", "EDGE_NODE_HTTP__PROT"):
        with pytest.raises(ValueError, match=bad):
            config_key(bad)


@pytest.mark.parametrize("path", sorted(SYSTEMD.glob("edge-node*.env.example")), ids=_rel)
def test_env_file_values_parse(path: Path) -> None:
    """Set and commented-out assignments alike: each must load once filled in."""
    active, commented = read_env_file(path)
    assert active, f"{path.name} sets nothing"
    for var, value in {**active, **commented}.items():
        key = config_key(var)
        config_mod.load(None, environ={var: value or SAMPLE_VALUES.get(key, "")})


def test_a_wrong_value_is_caught_by_the_same_path() -> None:
    """The loader path these tests use does refuse bad values (not a no-op)."""
    with pytest.raises(ConfigError, match=r"http\.port"):
        load_config_text("[http]\nport = 70000\n", {})
    with pytest.raises(ConfigError, match=r"push\.url"):
        config_mod.load(None, environ={"EDGE_NODE_PUSH__URL": "http://not-rtmp"})

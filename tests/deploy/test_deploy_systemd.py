"""The systemd units: they parse, are hardened, start the right command, and stop in time.

Read with a small reader that keeps repeated keys (SystemCallFilter= appears twice);
checked with `systemd-analyze verify` and `systemd-analyze security --offline` where
systemd-analyze is installed (skipped with the reason otherwise), and the sysusers
file with `systemd-sysusers --root` into a scratch directory.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from edge_node import cli
from edge_node import config as config_mod
from tests.deploy.deploy_files import CONTAINER as CONTAINER_DIR
from tests.deploy.deploy_files import (
    STOP_MARGIN_S,
    SYSTEMD,
    VENUES,
    Unit,
    exec_argv,
    k8s_object,
    parse_seconds,
    read_env_file,
    read_unit,
    yaml_documents,
)

NODE_UNIT = SYSTEMD / "edge-node.service"
COLLECTOR_UNIT = SYSTEMD / "edge-node-collector.service"
UNITS = [NODE_UNIT, COLLECTOR_UNIT]
# The exposure systemd-analyze security gives; 2.0 and below is its "OK" band.
MAX_EXPOSURE = 2.0

# Key -> value every unit must have (the sandbox and the restart policy).
HARDENING = {
    "NoNewPrivileges": "yes",
    "CapabilityBoundingSet": "",
    "AmbientCapabilities": "",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectControlGroups": "yes",
    "RestrictNamespaces": "yes",
    "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes",
    "SystemCallArchitectures": "native",
    "Restart": "on-failure",
    "RestartPreventExitStatus": "2",
    "KillMode": "mixed",
}
LIMITS = ("MemoryMax", "TasksMax", "LimitNOFILE", "RestartSec", "TimeoutStopSec")


@pytest.fixture(params=UNITS, ids=lambda p: p.name)
def unit(request: pytest.FixtureRequest) -> Unit:
    path: Path = request.param
    return read_unit(path)


def test_the_node_speaks_sd_notify_and_the_collector_does_not(unit: Unit) -> None:
    if unit.path.name == "edge-node.service":
        # edge_node/sdnotify.py: READY=1, WATCHDOG=1 every WatchdogSec/2, STOPPING=1.
        assert unit.value("Service", "Type") == "notify"
        assert unit.value("Service", "NotifyAccess") == "main"
        assert unit.value("Service", "WatchdogSec")
    else:
        assert unit.value("Service", "Type") == "exec"


def test_unit_has_its_sections(unit: Unit) -> None:
    assert set(unit.sections) == {"Unit", "Service", "Install"}
    assert unit.value("Install", "WantedBy") == "multi-user.target"
    assert "network-online.target" in unit.value("Unit", "After")


def test_unit_is_sandboxed(unit: Unit) -> None:
    for key, value in HARDENING.items():
        assert unit.value("Service", key) == value, key
    for key in LIMITS:
        assert unit.value("Service", key), key
    assert unit.value("Service", "StateDirectory"), "no writable state directory"
    assert int(unit.value("Unit", "StartLimitBurst")) >= 1
    assert parse_seconds(unit.value("Unit", "StartLimitIntervalSec")) > 0
    assert "@system-service" in unit.values("Service", "SystemCallFilter")
    # Runs as a dedicated account, never root.
    dynamic = unit.values("Service", "DynamicUser") == ["yes"]
    assert dynamic or unit.value("Service", "User") not in ("", "root", "0")


def test_node_unit_may_open_what_webrtc_needs() -> None:
    families = read_unit(NODE_UNIT).value("Service", "RestrictAddressFamilies").split()
    assert set(families) == {"AF_INET", "AF_INET6", "AF_UNIX", "AF_NETLINK"}


def test_node_unit_runs_the_node_as_its_user_with_its_state() -> None:
    unit = read_unit(NODE_UNIT)
    argv = exec_argv(unit.value("Service", "ExecStart"), {})
    assert argv[0] == "/opt/edge-node/bin/edge-node"
    args = cli._parser().parse_args(argv[1:])
    assert args.verb == "run"
    assert unit.value("Service", "User") == "edge-node"
    state = "/var/lib/" + unit.value("Service", "StateDirectory")
    assert unit.value("Service", "WorkingDirectory") == state
    # Secrets come from the environment file, optional so that the node's own
    # "no stream key" error is what the operator sees.
    assert unit.value("Service", "EnvironmentFile") == "-/etc/edge-node/edge-node.env"
    # Every venue config keeps its data where the unit lets it write.
    for path in sorted(VENUES.glob("*.toml")):
        assert config_mod.load(path, environ={}).node.data_dir == state, path.name


def test_collector_unit_command_is_accepted_by_the_cli() -> None:
    unit = read_unit(COLLECTOR_UNIT)
    active, _ = read_env_file(SYSTEMD / "collector.env.example")
    environ = {**active, "COLLECTOR_TOKEN": "sample-token", "CREDENTIALS_DIRECTORY": "/run/c"}
    argv = exec_argv(unit.value("Service", "ExecStart").replace("%S", "/var/lib"), environ)
    args = cli._parser().parse_args(argv[1:])
    assert args.verb == "collector"
    assert args.db == "/var/lib/" + unit.value("Service", "StateDirectory") + "/collector.db"
    credentials = {c.split(":", 1)[0] for c in unit.values("Service", "LoadCredential")}
    for path in (args.tls_cert, args.tls_key, args.client_ca):
        assert path.startswith("/run/c/") and path.removeprefix("/run/c/") in credentials
    # An empty token means "no authentication": the unit refuses to start then.
    assert "COLLECTOR_TOKEN" in unit.value("Service", "ExecStartPre")


def test_stop_timeouts_cover_the_drain_deadline() -> None:
    """systemd, Kubernetes and compose give the node the same time to drain, and more
    than the deadline any shipped config sets."""
    unit_s = parse_seconds(read_unit(NODE_UNIT).value("Service", "TimeoutStopSec"))
    ds = k8s_object("DaemonSet", "edge-node")
    k8s_s = float(ds["spec"]["template"]["spec"]["terminationGracePeriodSeconds"])
    (compose,) = yaml_documents(CONTAINER_DIR / "compose.yaml")
    compose_s = parse_seconds(compose["services"]["edge-node"]["stop_grace_period"])
    assert unit_s == k8s_s == compose_s, (unit_s, k8s_s, compose_s)
    deadlines = [
        config_mod.load(p, environ={}).node.shutdown_deadline_s for p in VENUES.glob("*.toml")
    ]
    deadlines.append(config_mod.Config().node.shutdown_deadline_s)
    assert unit_s >= max(deadlines) + STOP_MARGIN_S, (unit_s, deadlines)


def test_parse_seconds() -> None:
    assert parse_seconds("15s") == 15.0
    assert parse_seconds("2min 30s") == 150.0
    assert parse_seconds("20") == 20.0
    for bad in ("", "fast", "10 parsecs"):
        with pytest.raises(ValueError):
            parse_seconds(bad)


def _analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed")
    return tool


def _runnable_copy(unit_path: Path, tmp_path: Path) -> Path:
    """The unit with its binary swapped for one that exists here: verify checks that
    ExecStart= is executable, and /opt/edge-node is the box's, not this machine's."""
    copy = tmp_path / unit_path.name
    text = unit_path.read_text().replace("/opt/edge-node/bin/edge-node", "/bin/true")
    copy.write_text(text)
    return copy


@pytest.mark.parametrize("unit_path", UNITS, ids=lambda p: p.name)
def test_systemd_analyze_verify(unit_path: Path, tmp_path: Path) -> None:
    tool = _analyze()
    copy = _runnable_copy(unit_path, tmp_path)
    done = subprocess.run(
        [tool, "verify", str(copy)], capture_output=True, text=True, timeout=60, check=False
    )
    # verify exits 0 on mere warnings (an unknown key is "ignored"): any line about
    # the unit is a failure here.
    complaints = [line for line in done.stderr.splitlines() if unit_path.name in line]
    assert done.returncode == 0 and not complaints, done.stderr


def test_systemd_analyze_verify_catches_a_typo(tmp_path: Path) -> None:
    tool = _analyze()
    copy = _runnable_copy(NODE_UNIT, tmp_path)
    copy.write_text(copy.read_text().replace("ProtectHome=yes", "ProtectHomme=yes"))
    done = subprocess.run(
        [tool, "verify", str(copy)], capture_output=True, text=True, timeout=60, check=False
    )
    assert "ProtectHomme" in done.stderr


@pytest.mark.parametrize("unit_path", UNITS, ids=lambda p: p.name)
def test_systemd_analyze_security_rates_it_ok(unit_path: Path, tmp_path: Path) -> None:
    tool = _analyze()
    copy = _runnable_copy(unit_path, tmp_path)
    done = subprocess.run(
        [tool, "security", "--offline=true", "--no-pager", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", done.stdout)
    assert match, done.stdout + done.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, done.stdout


def test_sysusers_creates_the_units_user(tmp_path: Path) -> None:
    tool = shutil.which("systemd-sysusers")
    if tool is None:
        pytest.skip("systemd-sysusers is not installed")
    (tmp_path / "etc").mkdir()
    conf = (SYSTEMD / "edge-node.sysusers.conf").read_text()
    subprocess.run([tool, f"--root={tmp_path}", "-"], input=conf, text=True, check=True, timeout=60)
    unit = read_unit(NODE_UNIT)
    passwd = (tmp_path / "etc/passwd").read_text().splitlines()
    (entry,) = [line.split(":") for line in passwd if line.startswith("edge-node:")]
    assert entry[0] == unit.value("Service", "User")
    assert entry[5] == "/var/lib/" + unit.value("Service", "StateDirectory")
    assert entry[6] == "/usr/sbin/nologin"
    groups = (tmp_path / "etc/group").read_text()
    assert re.search(rf"^{unit.value('Service', 'Group')}:x:{entry[3]}:", groups, re.M)

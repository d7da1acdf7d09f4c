"""The collector's Kubernetes manifests (deploy/k8s/30-collector.yaml) and its
PostgreSQL (deploy/k8s/40-postgres.yaml), against the real CLI, the runbook and real
servers.

Read from the files: the collector's arguments pass ``edge_node.cli._parser()`` and
take the DSN from a Secret file; two replicas roll without a gap and share no volume;
the probes ask the gRPC port for the name the nodes dial; PostgreSQL is a pinned
official image with its data on a claim template, behind a headless Service whose
name, port, role and database are the ones in the runbook's DSN.

Then run: a PostgreSQL server (as tests/cloud does), the collector with the
manifest's own arguments and mounted files (paths moved under a temporary root,
Secrets filled the way the runbook's kubectl lines fill them, the probe's client
certificate made by the runbook's openssl lines), and the manifest's probe commands:
ready while the database works, unready but alive while it is down, ready again
when it returns; the StatefulSet's pg_isready command likewise.
"""

from __future__ import annotations

import datetime
import os
import posixpath
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from edge_node import cli
from edge_node.cloud.collector_store import is_dsn
from tests.conftest import free_port
from tests.deploy.deploy_files import (
    PROBES,
    README,
    REPO,
    k8s_object,
    kubectl_secret_lines,
    load_config_text,
    pod_env,
    read_dockerfile,
)

NAMESPACE = "edge-node"
DOCKERFILE = REPO / "deploy" / "container" / "Dockerfile"
COLLECTOR_LABELS = {
    "app.kubernetes.io/name": "edge-node",
    "app.kubernetes.io/component": "collector",
}
SAMPLE_TOKEN = "sample-collector-token"


# --- reading the manifests --------------------------------------------------------


def _deployment() -> dict[str, Any]:
    return k8s_object("Deployment", "edge-node-collector")


def _pod() -> dict[str, Any]:
    spec: dict[str, Any] = _deployment()["spec"]["template"]["spec"]
    return spec


def _container() -> dict[str, Any]:
    (container,) = _pod()["containers"]
    found: dict[str, Any] = container
    return found


def _statefulset() -> dict[str, Any]:
    return k8s_object("StatefulSet", "edge-node-postgres")


def _pg_container() -> dict[str, Any]:
    (container,) = _statefulset()["spec"]["template"]["spec"]["containers"]
    found: dict[str, Any] = container
    return found


def _pg_env() -> dict[str, str]:
    return {e["name"]: str(e["value"]) for e in _pg_container()["env"] if "value" in e}


def _expanded_args(container: dict[str, Any], token: str) -> list[str]:
    """The arguments after Kubernetes expands ``$(VAR)`` from the container's env
    (only the token is referenced that way)."""
    env = {e["name"]: e for e in container.get("env", [])}
    out = []
    for arg in container["args"]:
        match = re.fullmatch(r"\$\((\w+)\)", arg)
        if match:
            ref = env[match.group(1)]["valueFrom"]["secretKeyRef"]
            assert ref["key"] == "token", ref
            arg = token
        assert "$(" not in arg, f"unexpanded {arg!r}"
        out.append(arg)
    return out


def _parsed_args() -> Any:
    return cli._parser().parse_args(_expanded_args(_container(), SAMPLE_TOKEN))


def _mount_for(container: dict[str, Any], path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(volumeMount, volume) holding ``path`` in the collector's pod."""
    mounts = [
        m
        for m in container.get("volumeMounts", [])
        if path.startswith(m["mountPath"].rstrip("/") + "/")
    ]
    assert mounts, f"{path} is on no volume"
    mount = max(mounts, key=lambda m: len(m["mountPath"]))
    (volume,) = [v for v in _pod()["volumes"] if v["name"] == mount["name"]]
    return mount, volume


def _secret_key_at(container: dict[str, Any], path: str) -> tuple[str, str]:
    """(Secret name, key) of the file at ``path``."""
    mount, volume = _mount_for(container, path)
    assert "secret" in volume, f"{path} is not from a Secret: {volume}"
    items = {i["path"]: i["key"] for i in volume["secret"]["items"]}
    return volume["secret"]["secretName"], items[posixpath.relpath(path, mount["mountPath"])]


def _option(command: list[str], flag: str) -> str:
    assert command.count(flag) == 1, (flag, command)
    return command[command.index(flag) + 1]


def _node_cloud_target() -> tuple[str, int]:
    """Where the venue boxes dial the collector (the ConfigMap's cloud.target)."""
    ds = k8s_object("DaemonSet", "edge-node")
    (node,) = [c for c in ds["spec"]["template"]["spec"]["containers"] if c["name"] == "edge-node"]
    text = k8s_object("ConfigMap", "edge-node-config")["data"]["edge-node.toml"]
    host, _, port = load_config_text(text, pod_env(node)).cloud.target.rpartition(":")
    return host, int(port)


def _probe_script() -> tuple[str, str]:
    """(path in the pod, source) of the collector's probe, from its ConfigMap."""
    command = _container()["readinessProbe"]["exec"]["command"]
    script = command[1]
    mount, volume = _mount_for(_container(), script)
    cm = k8s_object("ConfigMap", volume["configMap"]["name"])
    source: str = cm["data"][posixpath.relpath(script, mount["mountPath"])]
    return script, source


def _runbook_dsns() -> list[str]:
    return [
        sources["dsn"][1]
        for name, sources in kubectl_secret_lines(README.read_text())
        if name == "edge-node-collector-db"
    ]


# --- the collector ------------------------------------------------------------------


def test_collector_args_are_accepted_by_the_cli_and_read_the_dsn_from_a_secret() -> None:
    parsed = _parsed_args()
    assert parsed.verb == "collector"
    # The DSN (with its password) comes from a file, never the command line.
    assert parsed.db is None and parsed.db_dsn_file
    assert not any(is_dsn(a) for a in _container()["args"])
    assert _secret_key_at(_container(), parsed.db_dsn_file) == ("edge-node-collector-db", "dsn")
    assert parsed.token == SAMPLE_TOKEN, "the collector would accept anyone"
    for path in (parsed.tls_cert, parsed.tls_key, parsed.client_ca):
        assert path, "the collector is reached over the network: mTLS"
        assert _secret_key_at(_container(), path)[0] == "edge-node-collector-tls"
    (port,) = _container()["ports"]
    assert port["name"] == "grpc"
    assert port["containerPort"] == int(parsed.listen.rsplit(":", 1)[1])
    assert parsed.listen.rsplit(":", 1)[0] == "0.0.0.0"  # reachable through the Service


def test_two_collectors_share_the_database_and_roll_without_a_gap() -> None:
    spec = _deployment()["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"]["type"] == "RollingUpdate"
    # A new collector is ready before an old one goes.
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert spec["strategy"]["rollingUpdate"]["maxSurge"] >= 1
    # Nothing stored in the pods: no volume two replicas would have to share.
    for volume in _pod()["volumes"]:
        assert "persistentVolumeClaim" not in volume and "hostPath" not in volume, volume
    assert spec["selector"]["matchLabels"] == COLLECTOR_LABELS
    pdb = k8s_object("PodDisruptionBudget", "edge-node-collector")
    assert pdb["spec"]["selector"]["matchLabels"] == COLLECTOR_LABELS
    assert pdb["spec"]["maxUnavailable"] < spec["replicas"]


def test_probes_ask_the_grpc_health_service_on_the_collectors_port() -> None:
    container = _container()
    parsed = _parsed_args()
    listen_port = int(parsed.listen.rsplit(":", 1)[1])
    host, port = _node_cloud_target()
    assert port == k8s_object("Service", "edge-node-collector")["spec"]["ports"][0]["port"]
    script, _source = _probe_script()
    venv = {
        m.group(1)
        for i in read_dockerfile(DOCKERFILE)
        for m in re.finditer(r"-m venv (\S+)", i.args)
    }
    assert venv, "the Dockerfile makes no venv"
    for probe in PROBES:
        command = container[probe]["exec"]["command"]
        # The image's venv python (grpcio is there), running the ConfigMap's script.
        assert posixpath.dirname(posixpath.dirname(command[0])) in venv, command[0]
        assert command[1] == script
        assert _option(command, "--address") == f"127.0.0.1:{listen_port}"
        # The probe checks the certificate for the name the nodes check.
        assert _option(command, "--server-name") == host
        # Its own client certificate, from the CA the collector trusts for clients.
        assert _secret_key_at(container, _option(command, "--cert"))[1] == "probe.crt"
        assert _secret_key_at(container, _option(command, "--key"))[1] == "probe.key"
        assert _secret_key_at(container, _option(command, "--ca"))[1] == "ca.crt"
        # The script answers within the probe's own timeout.
        assert float(_option(command, "--timeout")) < container[probe]["timeoutSeconds"]
    # Ready = SERVING; alive = any answer (a database outage is not cured by a restart).
    assert "--alive" not in container["readinessProbe"]["exec"]["command"]
    assert "--alive" in container["livenessProbe"]["exec"]["command"]
    assert "--alive" in container["startupProbe"]["exec"]["command"]


def test_the_probe_script_is_lint_clean() -> None:
    _, source = _probe_script()
    compile(source, "collector_probe.py", "exec")
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed")
    done = subprocess.run(
        [ruff, "check", "--stdin-filename", "collector_probe.py", "-"],
        input=source,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_image_has_the_postgresql_extra() -> None:
    import tomllib

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert any(d.startswith("psycopg") for d in extras["collector-pg"])
    installs = [i for i in read_dockerfile(DOCKERFILE) if re.search(r"\bpip install ", i.args)]
    assert installs, "the Dockerfile installs nothing with pip"
    assert any("'.[collector-pg]'" in i.args.split() for i in installs), installs


# --- PostgreSQL ---------------------------------------------------------------------


def test_postgres_is_one_pinned_official_server_with_its_data_on_a_claim() -> None:
    sts = _statefulset()
    spec = sts["spec"]
    assert spec["replicas"] == 1  # no replication: a second pod is a second database
    container = _pg_container()
    repo, _, tag = container["image"].partition(":")
    assert repo in ("postgres", "docker.io/library/postgres"), container["image"]
    assert re.fullmatch(r"\d{2}(-[a-z]+)?", tag), f"pin a major version: {tag}"
    (claim,) = spec["volumeClaimTemplates"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    (data,) = [m for m in container["volumeMounts"] if m["name"] == claim["metadata"]["name"]]
    pgdata = _pg_env()["PGDATA"]
    # Below the mount point: a fresh volume's root may hold lost+found.
    assert posixpath.dirname(pgdata) == data["mountPath"], (pgdata, data)
    assert spec["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Retain"
    # The password from a Secret file, never a literal.
    assert "POSTGRES_PASSWORD" not in _pg_env()
    password_file = _pg_env()["POSTGRES_PASSWORD_FILE"]
    mounts = [m for m in container["volumeMounts"] if password_file.startswith(m["mountPath"])]
    (mount,) = mounts
    (volume,) = [v for v in spec["template"]["spec"]["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"] == "edge-node-postgres"
    assert {i["key"] for i in volume["secret"]["items"]} == {"password"}
    # The image's own postgres user, never root.
    ctx = spec["template"]["spec"]["securityContext"]
    assert ctx["runAsUser"] == 999 and ctx["runAsGroup"] == 999 and ctx["fsGroup"] == 999
    # Not a recursive group-writable chmod at each mount: PostgreSQL refuses a PGDATA
    # that is not 0700 or 0750.
    assert ctx["fsGroupChangePolicy"] == "OnRootMismatch"
    writable = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")}
    assert {"/var/run/postgresql", "/tmp"} <= writable  # with a read-only root FS


def test_postgres_probes_and_headless_service_use_its_port() -> None:
    container = _pg_container()
    (port,) = container["ports"]
    env = _pg_env()
    for probe in PROBES:
        command = container[probe]["exec"]["command"]
        assert command[0] == "pg_isready"
        # Over TCP, as the collectors connect, with their role and database.
        assert _option(command, "-h") == "127.0.0.1"
        assert _option(command, "-p") == str(port["containerPort"])
        assert _option(command, "-U") == env["POSTGRES_USER"]
        assert _option(command, "-d") == env["POSTGRES_DB"]
    sts = _statefulset()
    svc = k8s_object("Service", sts["spec"]["serviceName"])
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["selector"] == sts["spec"]["selector"]["matchLabels"]
    (svc_port,) = svc["spec"]["ports"]
    assert svc_port["targetPort"] == port["name"]
    assert svc_port["port"] == port["containerPort"]


def test_the_runbook_dsn_names_the_postgres_server_role_and_database() -> None:
    dsns = _runbook_dsns()
    assert len(dsns) >= 2, "the runbook creates the DSN Secret, and rotates it"
    assert len(set(dsns)) == 1, dsns  # the rotation writes the same DSN
    dsn = dsns[0]
    assert is_dsn(dsn)
    url = urlsplit(dsn)
    sts = _statefulset()
    svc = k8s_object("Service", sts["spec"]["serviceName"])
    assert url.hostname == (
        f"{sts['metadata']['name']}-0.{svc['metadata']['name']}.{NAMESPACE}.svc.cluster.local"
    )
    assert url.port == svc["spec"]["ports"][0]["port"]
    assert url.username == _pg_env()["POSTGRES_USER"]
    assert url.path == "/" + _pg_env()["POSTGRES_DB"]
    # The same generated password as the server's Secret, through one shell variable.
    passwords = [
        sources["password"][1]
        for name, sources in kubectl_secret_lines(README.read_text())
        if name == "edge-node-postgres"
    ]
    assert passwords and set(passwords) == {url.password}, (passwords, url.password)
    assert re.fullmatch(r"\$[A-Z_]+", url.password or ""), "a shell variable, no literal"


# --- running it ---------------------------------------------------------------------


def _make_ca_and_server(tmp: Path, server_name: str) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write(stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        (tmp / f"{stem}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (tmp / f"{stem}.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )

    def builder(cn: str, issuer: str, key: ec.EllipticCurvePrivateKey) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(name(issuer))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        builder("edge-node-test-ca", "edge-node-test-ca", ca_key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    write("ca", ca, ca_key)
    key = ec.generate_private_key(ec.SECP256R1())
    server = (
        builder(server_name, "edge-node-test-ca", key)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        # Only the Service's name: the probe dials 127.0.0.1 and must check this one.
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(server_name)]), False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .sign(ca_key, hashes.SHA256())
    )
    write("collector", server, key)


def _runbook_probe_cert_lines() -> list[str]:
    """The runbook's shell lines that make the probe's client certificate."""
    install = README.read_text().split("## Install on Kubernetes", 1)[1]
    block = install.split("```sh\n", 1)[1].split("```", 1)[0]  # its first shell block
    lines = [
        line
        for line in block.splitlines()
        if "probe." in line and not line.startswith(("kubectl", "#"))
    ]
    assert any(line.startswith("openssl ") for line in lines), lines
    return lines


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory of files as the runbook names them: ca.crt/ca.key,
    collector.crt/collector.key (for the Service's name), and probe.crt/probe.key made
    by the runbook's own openssl lines."""
    if shutil.which("openssl") is None:
        pytest.skip("no openssl CLI to run the runbook's certificate lines with")
    pytest.importorskip("cryptography")
    tmp = tmp_path_factory.mktemp("pki")
    _make_ca_and_server(tmp, _node_cloud_target()[0])
    for line in _runbook_probe_cert_lines():
        done = subprocess.run(
            ["sh", "-c", line], cwd=tmp, capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, f"{line}\n{done.stderr}"
    assert (tmp / "probe.crt").is_file() and (tmp / "probe.key").is_file()
    return tmp


@dataclass
class Postgres:
    server: Any  # tests.cloud.test_collector_pg.PgServer
    password: str

    @property
    def port(self) -> int:
        return int(self.server.port)


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    """A real server with the StatefulSet's role and database (as its entrypoint
    makes them: the role owns the database)."""
    psycopg = pytest.importorskip("psycopg")
    from tests.cloud.test_collector_pg import PgServer, pg_bindir

    bindir = pg_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (apt-get install -y postgresql)")
    env = _pg_env()
    password = os.urandom(12).hex()  # hex, as the runbook makes it
    server = PgServer(bindir)
    try:
        server.start()
        with psycopg.connect(server.dsn(), autocommit=True, connect_timeout=10) as admin:
            admin.execute(f"CREATE ROLE \"{env['POSTGRES_USER']}\" LOGIN PASSWORD '{password}'")
            admin.execute(f'CREATE DATABASE "{env["POSTGRES_DB"]}" OWNER "{env["POSTGRES_USER"]}"')
        yield Postgres(server, password)
    finally:
        server.remove()


class PodFiles:
    """The collector container's file system, under a temporary root: every path the
    manifest names moved below it, its Secret and ConfigMap volumes filled."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def host(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    def fill(self, secrets: dict[tuple[str, str], bytes]) -> None:
        for mount in _container()["volumeMounts"]:
            (volume,) = [v for v in _pod()["volumes"] if v["name"] == mount["name"]]
            base = self.host(mount["mountPath"])
            base.mkdir(parents=True, exist_ok=True)
            if "secret" in volume:
                name = volume["secret"]["secretName"]
                for item in volume["secret"]["items"]:
                    (base / item["path"]).write_bytes(secrets[(name, item["key"])])
            elif "configMap" in volume:
                cm = k8s_object("ConfigMap", volume["configMap"]["name"])
                for key, text in cm["data"].items():
                    (base / key).write_text(text)

    def command(self, words: list[str], port: int) -> list[str]:
        """A probe or the collector's arguments with paths and the port moved here."""
        out = []
        for word in words:
            if word == "/opt/edge-node/bin/python":
                word = sys.executable
            elif word.startswith("/"):
                word = str(self.host(word))
            elif re.fullmatch(r"(0\.0\.0\.0|127\.0\.0\.1):\d+", word):
                word = f"127.0.0.1:{port}"
            out.append(word)
        return out


def _secrets_from_runbook(pki: Path, dsn: str) -> dict[tuple[str, str], bytes]:
    """Secret contents as the runbook's kubectl lines make them: files from the PKI
    directory; the DSN given (the runbook's, pointed at the test server)."""
    out: dict[tuple[str, str], bytes] = {}
    for name, sources in kubectl_secret_lines(README.read_text()):
        for key, (kind, value) in sources.items():
            if kind == "file":
                path = pki / value
                if path.is_file():
                    out[(name, key)] = path.read_bytes()
    out[("edge-node-collector-db", "dsn")] = dsn.encode() + b"\n"
    return out


def _test_dsn(postgres: Postgres) -> str:
    """The runbook's DSN with the password filled in and the host moved to the test
    server (only the address changes: user, database and scheme are the runbook's)."""
    url = urlsplit(_runbook_dsns()[0])
    netloc = f"{url.username}:{postgres.password}@127.0.0.1:{postgres.port}"
    return urlunsplit(url._replace(netloc=netloc))


def _run(command: list[str]) -> tuple[int, str]:
    done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    return done.returncode, done.stdout + done.stderr


def _wait_for(what: str, check: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.3)


@pytest.mark.timeout(180)
def test_the_manifest_collector_is_ready_only_while_its_database_works(
    tmp_path: Path, pki: Path, postgres: Postgres
) -> None:
    port = free_port()
    files = PodFiles(tmp_path / "pod")
    files.fill(_secrets_from_runbook(pki, _test_dsn(postgres)))
    container = _container()
    ready = files.command(container["readinessProbe"]["exec"]["command"], port)
    alive = files.command(container["livenessProbe"]["exec"]["command"], port)
    args = files.command(_expanded_args(container, SAMPLE_TOKEN), port)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGE_NODE_", "PG"))}
    out, err = tmp_path / "collector.out", tmp_path / "collector.err"
    with open(out, "wb") as fo, open(err, "wb") as fe:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edge_node", *args], stdout=fo, stderr=fe, env=env, cwd=REPO
        )
    try:

        def serving() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"collector exited {proc.returncode}: {err.read_text()}")
            return _run(ready)[0] == 0

        # Starts, and is ready once its database answers.
        _wait_for("the collector to be ready", serving, 30)
        code, said = _run(ready)
        assert code == 0 and "SERVING" in said, said
        assert _run(alive)[0] == 0
        banner = out.read_text()
        assert f"(db postgresql://edge_node@127.0.0.1:{postgres.port}/edge_node)" in banner
        assert postgres.password not in banner + err.read_text()

        # The probe checks the collector's certificate: another name fails.
        wrong = list(ready)
        wrong[wrong.index("--server-name") + 1] = "elsewhere.example"
        code, said = _run(wrong)
        assert code == 2, said

        # The database goes away: not ready (NOT_SERVING), still alive.
        postgres.server.stop("fast")
        try:
            _wait_for("NOT_SERVING", lambda: _run(ready)[0] == 1, 30)
            code, said = _run(ready)
            assert code == 1 and "NOT_SERVING" in said, said
            assert _run(alive)[0] == 0, "a database outage must not restart the collector"
            assert proc.poll() is None
        finally:
            postgres.server.start()
        # It returns: ready again, without a restart.
        _wait_for("the collector to be ready again", serving, 40)
        assert postgres.password not in out.read_text() + err.read_text()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # what the kubelet sends
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, err.read_text()
    # Nothing answers: the liveness probe fails (exit 2), and says why.
    code, said = _run(alive)
    assert code == 2 and "UNAVAILABLE" in said, said


@pytest.mark.timeout(120)
def test_the_statefulset_pg_isready_probe_follows_the_server(postgres: Postgres) -> None:
    container = _pg_container()
    for probe in PROBES:
        command = list(container[probe]["exec"]["command"])
        command[command.index("-p") + 1] = str(postgres.port)
        assert command[command.index("-h") + 1] == "127.0.0.1"
        code, said = _run([shutil.which(command[0]) or command[0], *command[1:]])
        assert code == 0, said
    command = list(container["readinessProbe"]["exec"]["command"])
    command[command.index("-p") + 1] = str(postgres.port)
    postgres.server.stop("fast")
    try:
        code, said = _run(command)
        assert code == 2, said  # no response
    finally:
        postgres.server.start()


def test_the_runbook_secret_lines_are_read_strictly() -> None:
    text = 'kubectl create secret generic s -n x --from-file=a=a.crt --from-literal=b="$V"\n'
    assert kubectl_secret_lines(text) == [("s", {"a": ("file", "a.crt"), "b": ("literal", "$V")})]
    with pytest.raises(ValueError, match="without a name"):
        kubectl_secret_lines("kubectl create secret generic s --from-file=dir/\n")
    with pytest.raises(ValueError, match="cannot tell"):
        kubectl_secret_lines("kubectl create secret generic s --from-env-file=x.env\n")
    # A rotation line piped into kubectl apply is the same Secret.
    piped = (
        "kubectl create secret generic s --from-literal=k=v --dry-run=client -o yaml"
        " | kubectl apply -f -"
    )
    assert kubectl_secret_lines(piped) == [("s", {"k": ("literal", "v")})]

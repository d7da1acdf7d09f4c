"""The Kubernetes manifests: valid objects that agree with the node's config.

Each document parses and passes the Kubernetes schemas (kubernetes-validate, strict:
unknown fields are errors). Then what only this project can check: the DaemonSet's
environment and the ConfigMap's TOML load through the node's loader and satisfy
`run`; probes, ports and the scrape annotation use the configured ports; every file
the config or a container names is mounted; every Secret key used is one the runbook
creates; the arguments are accepted by the real CLI; containers run as non-root with
a read-only root file system; the grace period covers the drain deadline. The
collector and its PostgreSQL: test_deploy_k8s_collector.py.
"""

from __future__ import annotations

import posixpath
from typing import Any

import pytest

from edge_node import cli
from edge_node import config as config_mod
from tests.deploy.deploy_files import (
    README,
    STOP_MARGIN_S,
    container_paths,
    k8s_documents,
    k8s_object,
    kubectl_created_secrets,
    load_config_text,
    pod_env,
)

NAMESPACE = "edge-node"
VENUE_LABEL = "edge-node.io/venue-box"


def _daemonset() -> dict[str, Any]:
    return k8s_object("DaemonSet", "edge-node")


def _node_pod() -> dict[str, Any]:
    spec: dict[str, Any] = _daemonset()["spec"]["template"]["spec"]
    return spec


def _node_container() -> dict[str, Any]:
    (container,) = [c for c in _node_pod()["containers"] if c["name"] == "edge-node"]
    found: dict[str, Any] = container
    return found


def _node_config() -> config_mod.Config:
    """The config a node pod runs with: the ConfigMap's TOML plus the pod's env."""
    pod = _node_pod()
    (volume,) = [v for v in pod["volumes"] if "configMap" in v]
    cm = k8s_object("ConfigMap", volume["configMap"]["name"])
    args = _node_container()["args"]
    config_path = args[args.index("--config") + 1]
    mount = _mount_for(_node_container(), config_path)
    assert mount["name"] == volume["name"], (mount, volume)
    text = cm["data"][posixpath.relpath(config_path, mount["mountPath"])]
    return load_config_text(text, pod_env(_node_container()))


def _mount_for(container: dict[str, Any], path: str) -> dict[str, Any]:
    """The volumeMount a file path lies in (the longest matching mountPath)."""
    mounts = [
        m
        for m in container.get("volumeMounts", [])
        if path == m["mountPath"] or path.startswith(m["mountPath"].rstrip("/") + "/")
    ]
    assert mounts, f"{path} is not on any volume of {container['name']}"
    longest: dict[str, Any] = max(mounts, key=lambda m: len(m["mountPath"]))
    return longest


def _volume(pod: dict[str, Any], name: str) -> dict[str, Any]:
    (volume,) = [v for v in pod["volumes"] if v["name"] == name]
    found: dict[str, Any] = volume
    return found


def _all_pods() -> list[tuple[str, dict[str, Any]]]:
    pods = []
    for _, doc in k8s_documents():
        template = doc.get("spec", {}).get("template")
        if template is not None:
            pods.append((f"{doc['kind']}/{doc['metadata']['name']}", template["spec"]))
    return pods


def test_every_document_is_a_namespaced_object() -> None:
    docs = k8s_documents()
    assert {d["kind"] for _, d in docs} >= {
        "Namespace",
        "ConfigMap",
        "DaemonSet",
        "Deployment",
        "StatefulSet",
        "Service",
        "PodDisruptionBudget",
    }
    for path, doc in docs:
        assert doc.get("apiVersion") and doc.get("kind"), path
        meta = doc["metadata"]
        if doc["kind"] == "Namespace":
            assert meta["name"] == NAMESPACE
        else:
            assert meta.get("namespace") == NAMESPACE, (path.name, doc["kind"], meta)


def test_documents_pass_the_kubernetes_schemas() -> None:
    kv = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate is not installed (pip install it)"
    )
    version = kv.latest_version()
    for _path, doc in k8s_documents():
        kv.validate(doc, version, strict=True)  # raises ValidationError, naming the field


def test_the_schema_check_rejects_an_unknown_field() -> None:
    kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is not installed")
    broken = _daemonset()
    broken["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGett"] = {}
    with pytest.raises(kv.ValidationError):
        kv.validate(broken, kv.latest_version(), strict=True)


def test_daemonset_runs_one_node_per_labelled_venue_box() -> None:
    ds = _daemonset()
    pod = _node_pod()
    assert pod["nodeSelector"] == {VENUE_LABEL: "true"}
    # Host network for WebRTC, with the cluster DNS still usable (the collector's
    # Service name); the old pod must release the host ports before the new binds.
    assert pod["hostNetwork"] is True
    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert ds["spec"]["updateStrategy"]["rollingUpdate"]["maxSurge"] == 0
    labels = ds["spec"]["template"]["metadata"]["labels"]
    assert ds["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_node_pod_environment_and_configmap_make_a_runnable_config() -> None:
    cfg = _node_config()
    # What `edge-node run` demands before starting.
    assert cfg.ingest.stream_key or cfg.ingest.rtsp_url
    assert cfg.cloud.target and cfg.cloud.token
    # One ConfigMap, many boxes: the id and the ICE address come from the pod.
    env = {e["name"]: e for e in _node_container()["env"]}
    assert env["EDGE_NODE_NODE__ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    host_ip = env["EDGE_NODE_WEBRTC__HOST_ADDRESSES"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert host_ip == "status.hostIP"


def test_node_args_are_accepted_by_the_cli() -> None:
    args = cli._parser().parse_args(_node_container()["args"])
    assert args.verb == "run"


def test_probes_ports_and_scrape_annotation_use_the_configured_ports() -> None:
    cfg = _node_config()
    container = _node_container()
    ports = {p["name"]: p for p in container["ports"]}
    assert ports["http"]["containerPort"] == cfg.http.port
    assert ports["http"]["hostPort"] == cfg.http.port
    assert ports["rtmp"]["containerPort"] == cfg.ingest.rtmp_port
    assert ports["rtmp"]["hostPort"] == cfg.ingest.rtmp_port
    ready = container["readinessProbe"]["httpGet"]
    assert ready["path"] == "/healthz"
    assert ready["port"] in (cfg.http.port, "http")
    for probe in ("livenessProbe", "startupProbe"):
        command = container[probe]["exec"]["command"]
        # Liveness passes on 503 (degraded) too: see the healthcheck's docstring.
        assert command[0] == "edge-node-healthcheck" and "--alive" in command, probe
        assert "--url" not in command  # the probe reads the port from the config
    annotations = _daemonset()["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(cfg.http.port)
    assert annotations["prometheus.io/path"] == "/metrics"


def test_the_healthcheck_reads_the_same_config_the_node_runs() -> None:
    container = _node_container()
    args = container["args"]
    command = container["livenessProbe"]["exec"]["command"]
    default = "/etc/edge-node/edge-node.toml"  # the healthcheck's default --config
    probe_config = command[command.index("--config") + 1] if "--config" in command else default
    assert probe_config == args[args.index("--config") + 1]


def test_every_file_the_config_names_is_mounted() -> None:
    cfg = _node_config()
    pod = _node_pod()
    container = _node_container()
    files = {
        "auth.secret_file": cfg.auth.secret_file,
        "cloud.tls_ca": cfg.cloud.tls_ca,
        "cloud.tls_cert": cfg.cloud.tls_cert,
        "cloud.tls_key": cfg.cloud.tls_key,
    }
    for key, path in files.items():
        if not path:
            continue
        assert posixpath.isabs(path), (key, path)
        mount = _mount_for(container, path)
        volume = _volume(pod, mount["name"])
        if "secret" in volume:
            items = volume["secret"].get("items")
            name = posixpath.relpath(path, mount["mountPath"])
            if items is not None:
                assert name in {i["path"] for i in items}, (key, path)
        else:
            # Only the node secret is copied into an emptyDir, by an init container.
            assert key == "auth.secret_file" and "emptyDir" in volume, (key, volume)
            assert any(path in init.get("command", []) for init in pod.get("initContainers", [])), (
                "nothing writes the secret file"
            )
    # The data dir: persistent on the box (the spool must outlive the pod).
    data = _volume(pod, _mount_for(container, cfg.node.data_dir)["name"])
    assert "hostPath" in data
    assert data["hostPath"]["path"] == cfg.node.data_dir


def _secret_refs() -> set[tuple[str, str]]:
    """(secret name, key) for every Secret key a manifest depends on."""
    refs: set[tuple[str, str]] = set()
    cfg = _node_config()
    for _, pod in _all_pods():
        containers = pod["containers"] + pod.get("initContainers", [])
        for c in containers:
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref is not None:
                    refs.add((ref["name"], ref["key"]))
        for v in pod["volumes"]:
            secret = v.get("secret")
            if secret is None:
                continue
            for item in secret.get("items", []):
                refs.add((secret["secretName"], item["key"]))
            if "items" not in secret:
                # A whole Secret mounted: the keys are the files the pod's config or
                # arguments name under its mount path.
                for c in containers:
                    mounts = [m for m in c.get("volumeMounts", []) if m["name"] == v["name"]]
                    for m in mounts:
                        named = [cfg.cloud.tls_ca, cfg.cloud.tls_cert, cfg.cloud.tls_key]
                        named += container_paths(c)
                        for path in named:
                            if path.startswith(m["mountPath"].rstrip("/") + "/"):
                                refs.add((secret["secretName"], posixpath.basename(path)))
    return refs


def test_every_secret_key_used_is_created_by_the_runbook() -> None:
    created = kubectl_created_secrets(README.read_text())
    refs = _secret_refs()
    assert refs, "no Secret is used at all"
    for name, key in sorted(refs):
        assert name in created, f"Secret {name} is used but deploy/README.md never creates it"
        assert key in created[name], f"{name}: key {key} is used but not created"


def test_every_file_a_container_names_is_in_its_volume() -> None:
    """A path in a command, argument, probe or environment value that lies on a
    Secret or ConfigMap volume names a key that volume holds (a typo would otherwise
    show only as a pod that fails at run time)."""
    claims = {
        f"{doc['kind']}/{doc['metadata']['name']}": {
            tpl["metadata"]["name"] for tpl in doc["spec"].get("volumeClaimTemplates", [])
        }
        for _, doc in k8s_documents()
        if "template" in doc.get("spec", {})
    }
    checked = 0
    for where, pod in _all_pods():
        for c in pod["containers"] + pod.get("initContainers", []):
            for path in container_paths(c):
                mounts = [
                    m
                    for m in c.get("volumeMounts", [])
                    if path.startswith(m["mountPath"].rstrip("/") + "/")
                ]
                if not mounts:
                    continue  # a file of the image (/opt/edge-node/bin/python)
                mount = max(mounts, key=lambda m: len(m["mountPath"]))
                if mount["name"] in claims.get(where, set()):
                    continue  # a PVC from the StatefulSet's volumeClaimTemplates
                volume = _volume(pod, mount["name"])
                name = posixpath.relpath(path, mount["mountPath"])
                source = volume.get("secret") or volume.get("configMap")
                if source is None:
                    continue  # emptyDir, hostPath, a PVC: written at run time
                items = source.get("items")
                if items is not None:
                    keys = {i["path"]: i["key"] for i in items}
                    assert name in keys, f"{where} {c['name']}: {path} is not in {volume}"
                elif "configMap" in volume:
                    cm = k8s_object("ConfigMap", source["name"])
                    assert name in cm["data"], f"{where} {c['name']}: {path} not in {cm}"
                checked += 1
    assert checked >= 10, checked


def test_containers_run_non_root_read_only_without_capabilities() -> None:
    for where, pod in _all_pods():
        pod_ctx = pod["securityContext"]
        assert pod_ctx["runAsNonRoot"] is True, where
        assert pod_ctx["runAsUser"] != 0, where
        assert pod_ctx["seccompProfile"]["type"] == "RuntimeDefault", where
        assert pod["automountServiceAccountToken"] is False, where
        for c in pod["containers"] + pod.get("initContainers", []):
            ctx = c["securityContext"]
            assert ctx["allowPrivilegeEscalation"] is False, (where, c["name"])
            assert ctx["readOnlyRootFilesystem"] is True, (where, c["name"])
            assert ctx["capabilities"]["drop"] == ["ALL"], (where, c["name"])
            assert "add" not in ctx["capabilities"], (where, c["name"])
            assert ctx.get("privileged") is not True, (where, c["name"])
            assert c["resources"]["limits"]["memory"], (where, c["name"])
            assert c["resources"]["requests"], (where, c["name"])


def test_images_are_pinned_to_the_package_version() -> None:
    """Our image at the package's version; PostgreSQL's is checked on its own."""
    import importlib.metadata

    version = importlib.metadata.version("edge-node")
    ours = 0
    for where, pod in _all_pods():
        for c in pod["containers"] + pod.get("initContainers", []):
            image = c["image"]
            repo, _, tag = image.rpartition(":")
            assert repo and "/" not in tag, (where, image)
            if repo.rpartition("/")[2] == "postgres":
                continue
            assert repo.endswith("/edge-node"), f"{where}: an unexpected image {image}"
            assert tag == version, f"{where}: {image} is not edge-node {version}"
            ours += 1
    assert ours >= 3, ours


def test_grace_period_covers_the_drain_deadline() -> None:
    cfg = _node_config()
    grace = _node_pod()["terminationGracePeriodSeconds"]
    assert grace >= cfg.node.shutdown_deadline_s + STOP_MARGIN_S, (
        grace,
        cfg.node.shutdown_deadline_s,
    )


def test_nodes_dial_the_collector_service() -> None:
    cfg = _node_config()
    svc = k8s_object("Service", "edge-node-collector")
    dep = k8s_object("Deployment", "edge-node-collector")
    host, _, port = cfg.cloud.target.rpartition(":")
    assert host == f"{svc['metadata']['name']}.{NAMESPACE}.svc.cluster.local"
    (svc_port,) = svc["spec"]["ports"]
    assert int(port) == svc_port["port"]
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    assert svc_port["targetPort"] in {p["name"] for p in container["ports"]}
    # mTLS on both ends.
    assert cfg.cloud.tls and cfg.cloud.tls_cert and cfg.cloud.tls_key
    assert "--client-ca" in container["args"]

"""Readers for the files under deploy/, shared by the deployment tests.

Small and strict on purpose: a systemd unit reader that keeps repeated keys (which
configparser would merge or reject), a Dockerfile reader that joins continuation
lines, a .dockerignore matcher, and the mapping from ``EDGE_NODE_<SECTION>__<KEY>``
to the config schema. Each says what it does not understand instead of guessing.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from edge_node import config as config_mod

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
VENUES = DEPLOY / "venues"
K8S = DEPLOY / "k8s"
SYSTEMD = DEPLOY / "systemd"
CONTAINER = DEPLOY / "container"
README = DEPLOY / "README.md"

# Every name that looks like an override, wherever it is written (values, comments).
ENV_NAME = re.compile(r"\bEDGE_NODE_[A-Z0-9][A-Z0-9_]*")
# Seconds a service manager must wait beyond the node's drain deadline: the drain
# stops the rest hard after the deadline, which takes up to ~3 s (worker stop).
STOP_MARGIN_S = 3.0

# Sample values for keys whose real values are secrets, valid for the schema.
SAMPLE_VALUES: dict[str, str] = {
    "ingest.stream_key": "sample-stream-key",
    "ingest.rtsp_url": "rtsp://user:pass@192.0.2.20/stream1",
    "push.url": "rtmp://cdn.example/live/sample-key",
    "cloud.token": "sample-cloud-token",
    "node.id": "box-1",
    "webrtc.host_addresses": "192.0.2.10",
}


def config_key(var: str) -> str:
    """``EDGE_NODE_HTTP__PORT`` -> ``http.port``, checked against the schema.

    Raises ValueError naming the variable when the node would not apply it: the
    node's own ``merge_env`` skips a name without ``__`` silently.
    """
    if not var.startswith(config_mod.ENV_PREFIX):
        raise ValueError(f"{var}: not an {config_mod.ENV_PREFIX}* variable")
    rest = var[len(config_mod.ENV_PREFIX) :]
    if "__" not in rest:
        raise ValueError(f"{var}: no '__' between section and key; the node ignores it")
    section, _, key = rest.lower().partition("__")
    sections = {f.name: f.type for f in dataclasses.fields(config_mod.Config)}
    if section not in sections:
        raise ValueError(f"{var}: unknown section {section!r} (known: {', '.join(sections)})")
    cls = getattr(config_mod.Config(), section).__class__
    keys = [f.name for f in dataclasses.fields(cls)]
    if key not in keys:
        raise ValueError(f"{var}: unknown key {section}.{key} (known: {', '.join(keys)})")
    return f"{section}.{key}"


def env_names_in(text: str) -> set[str]:
    return set(ENV_NAME.findall(text))


def deploy_text_files() -> list[Path]:
    """Every text file under deploy/ (all of it is hand-written or generated text)."""
    return sorted(p for p in DEPLOY.rglob("*") if p.is_file() and p.suffix != ".pyc")


def load_config_text(text: str, environ: Mapping[str, str]) -> config_mod.Config:
    """TOML text plus overrides through the node's own loader (as ``load`` does)."""
    merged = config_mod.merge_env(tomllib.loads(text), environ)
    return config_mod.from_mapping(merged)


# --- systemd --------------------------------------------------------------------


@dataclass(frozen=True)
class Unit:
    path: Path
    sections: dict[str, list[tuple[str, str]]]

    def values(self, section: str, key: str) -> list[str]:
        return [v for k, v in self.sections.get(section, []) if k == key]

    def value(self, section: str, key: str) -> str:
        found = self.values(section, key)
        if len(found) != 1:
            raise KeyError(f"{self.path.name}: [{section}] {key} set {len(found)} times")
        return found[0]


def read_unit(path: Path) -> Unit:
    """A unit file as ordered (key, value) pairs per section, continuations joined."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    pending = ""
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line[0] in "#;"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        if current is None or "=" not in line:
            raise ValueError(f"{path.name}:{number}: cannot read {raw!r}")
        key, _, value = line.partition("=")
        current.append((key.strip(), " ".join(value.split())))
    if pending:
        raise ValueError(f"{path.name}: ends inside a continued line")
    return Unit(path, sections)


def parse_seconds(text: str) -> float:
    """systemd / compose durations as used here: '15', '15s', '2min', '1min 30s'."""
    units = {"": 1.0, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "ms": 0.001}
    total = 0.0
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", text.strip())
    if not parts or "".join(n + u for n, u in parts) != text.replace(" ", ""):
        raise ValueError(f"cannot read the duration {text!r}")
    for number, unit in parts:
        if unit not in units:
            raise ValueError(f"unknown time unit {unit!r} in {text!r}")
        total += float(number) * units[unit]
    return total


def read_env_file(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """(set, commented-out) KEY=value assignments of an EnvironmentFile."""
    active: dict[str, str] = {}
    commented: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        target = active
        if line.startswith("#"):
            line = line.lstrip("#").strip()
            target = commented
        match = re.fullmatch(r"([A-Z][A-Z0-9_]*)=(.*)", line)
        if match:
            target[match.group(1)] = match.group(2)
        elif target is active and line:
            raise ValueError(f"{path.name}: not KEY=value: {raw!r}")
    return active, commented


def exec_argv(command: str, environ: Mapping[str, str]) -> list[str]:
    """An ExecStart= line as argv, ``${VAR}`` replaced the way systemd does."""

    def expand(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in environ:
            raise KeyError(f"{name} is not set for {command!r}")
        return environ[name]

    return [re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", expand, word) for word in command.split()]


# --- YAML -------------------------------------------------------------------------


def yaml_documents(path: Path) -> list[dict[str, Any]]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C one when built
    docs = [d for d in yaml.load_all(path.read_text(), Loader=loader) if d is not None]
    for d in docs:
        if not isinstance(d, dict):
            raise ValueError(f"{path.name}: a document is not a mapping: {d!r}")
    return docs


def k8s_documents() -> list[tuple[Path, dict[str, Any]]]:
    return [(p, d) for p in sorted(K8S.glob("*.yaml")) for d in yaml_documents(p)]


def k8s_object(kind: str, name: str) -> dict[str, Any]:
    found = [d for _, d in k8s_documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    if len(found) != 1:
        raise LookupError(f"{len(found)} {kind} named {name} in deploy/k8s")
    return found[0]


def pod_env(container: Mapping[str, Any]) -> dict[str, str]:
    """A container's environment as the node would see it: literal values as they
    are, values from the downward API and Secrets replaced by valid sample values."""
    env: dict[str, str] = {}
    for item in container.get("env", []):
        name = item["name"]
        if "value" in item:
            env[name] = str(item["value"])
        elif name.startswith(config_mod.ENV_PREFIX):
            env[name] = SAMPLE_VALUES.get(config_key(name), "sample")
        else:
            env[name] = "sample"
    return env


PROBES = ("startupProbe", "readinessProbe", "livenessProbe")


def container_paths(container: Mapping[str, Any]) -> list[str]:
    """Every absolute path a container names: in its command and arguments, its
    probes' commands and its literal environment values."""
    words: list[str] = [*container.get("command", []), *container.get("args", [])]
    for probe in PROBES:
        words += container.get(probe, {}).get("exec", {}).get("command", [])
    words += [str(e["value"]) for e in container.get("env", []) if "value" in e]
    return [w for w in words if isinstance(w, str) and w.startswith("/")]


def kubectl_created_secrets(readme: str) -> dict[str, set[str]]:
    """Secret name -> keys, from the ``kubectl create secret generic`` lines."""
    created: dict[str, set[str]] = {}
    for name, sources in kubectl_secret_lines(readme):
        created[name] = set(sources)
    return created


def kubectl_secret_lines(readme: str) -> list[tuple[str, dict[str, tuple[str, str]]]]:
    """Every ``kubectl create secret generic`` line, in order: the Secret's name and
    its keys, each with where its value comes from: ``("file", path)`` or
    ``("literal", text)`` (shell variables left as written). A line that creates a
    key in a way not understood here (``--from-file=DIR``, ``--from-env-file``) is
    an error, not a Secret without that key."""
    lines = []
    for line in readme.splitlines():
        if "kubectl create secret generic" not in line:
            continue
        command = line.split("kubectl create secret generic", 1)[1].split(" | ", 1)[0]
        words = shlex.split(command)
        sources: dict[str, tuple[str, str]] = {}
        for w in words[1:]:
            if w.startswith(("--from-file=", "--from-literal=")):
                flag, _, rest = w.partition("=")
                key, sep, value = rest.partition("=")
                if not sep:
                    raise ValueError(f"{w}: a key without a name in {line.strip()!r}")
                sources[key] = (flag.removeprefix("--from-"), value)
            elif w.startswith("--from-env-file"):
                raise ValueError(f"cannot tell the keys of {w} in {line.strip()!r}")
        lines.append((words[0], sources))
    return lines


# --- Dockerfile -----------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    stage: int
    keyword: str
    args: str
    comments: tuple[str, ...]


def read_dockerfile(path: Path) -> list[Instruction]:
    """Instructions (upper-case keyword, joined arguments) with the stage index and the
    comments just above them (hadolint pragmas live there)."""
    out: list[Instruction] = []
    stage = -1
    comments: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and line.startswith("#"):
            comments.append(line)
            continue
        if not line and not pending:
            comments = []
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        line, pending = (pending + line).strip(), ""
        if not line:
            continue
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        out.append(Instruction(stage, keyword, args.strip(), tuple(comments)))
        comments = []
    return out


def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Whether a context path is left out, by Docker's rules: the last matching
    pattern wins, ``!`` re-includes, a pattern that matches a directory covers all of
    it, ``**`` matches any number of directories."""
    excluded = False
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        pat = pat.strip("/")
        regex = _glob_regex(pat)
        if any(regex.fullmatch(p) for p in prefixes):
            excluded = not negate
    return excluded


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """Docker's pattern syntax: ``*`` and ``?`` within one path element, ``**`` across
    any number of them, ``[...]`` classes."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[":
            close = pattern.index("]", i)
            out.append(pattern[i : close + 1])
            i = close + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


def read_dockerignore(path: Path) -> list[str]:
    return [
        line.strip()
        for line in path.read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]

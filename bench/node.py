"""The node under test: one the bench starts as a subprocess, or one at ``--target``.

A started node runs ``python -m edge_node demo`` on a free loopback port with WebRTC
restricted to loopback and its log in ``OUT/node.log``. It is stopped the way an
operator stops it (SIGINT, then SIGKILL after a timeout), and its media worker is
checked to be gone too. The node's processes are found through ``/healthz``
(``worker.pid``) and the worker's parent (the control process).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from bench import procstat, prom

HEALTH_TIMEOUT_S = 45.0
STOP_TIMEOUT_S = 10.0
_PR_SET_PDEATHSIG = 1
_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


class NodeStartError(Exception):
    """The node could not be started or reached; the message says why."""


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _load_prctl() -> Any:
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()  # looked up before any fork: the child only makes the call


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: if the bench is killed outright, the
    # node gets SIGTERM (a clean stop) instead of living on as an orphan.
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _tail(path: Path | None, lines: int = 25) -> str:
    if path is None or not path.exists():
        return ""
    text = path.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


async def get_json(http: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, Any] | None]:
    async with http.get(url) as resp:
        try:
            body = await resp.json(content_type=None)
        except (aiohttp.ContentTypeError, ValueError):
            body = None
        return resp.status, body if isinstance(body, dict) else None


@dataclass
class Node:
    base_url: str
    started_by_bench: bool
    env: dict[str, str] = field(default_factory=dict)
    log_path: Path | None = None
    startup_s: float | None = None
    last_health: dict[str, Any] | None = None
    _proc: subprocess.Popen[bytes] | None = None
    _data_dir: str | None = None
    _log_file: Any = None

    @property
    def control_pid(self) -> int | None:
        """The control process: ours when we started it, else the worker's parent."""
        if self._proc is not None:
            return self._proc.pid
        worker = self.worker_pid
        if worker is None:
            return None
        stat = procstat.read(worker)
        return stat.ppid if stat is not None else None

    @property
    def worker_pid(self) -> int | None:
        worker = (self.last_health or {}).get("worker") or {}
        pid = worker.get("pid")
        return pid if isinstance(pid, int) else None

    def local_pids(self) -> tuple[list[int], str | None]:
        """The node's pids when they can be read from this machine's /proc, else a reason."""
        host = urlsplit(self.base_url).hostname or ""
        if not self.started_by_bench and host not in _LOOPBACK_HOSTS:
            return [], f"the node at {self.base_url} is not on this machine"
        worker, control = self.worker_pid, self.control_pid
        if worker is None or control is None:
            return [], "/healthz gave no worker pid"
        if "edge_node" not in procstat.cmdline(worker):
            return [], f"pid {worker} from /healthz is not an edge_node process here"
        return [control, worker], None

    async def health(self, http: aiohttp.ClientSession) -> tuple[int, dict[str, Any] | None]:
        status, body = await get_json(http, f"{self.base_url}/healthz")
        if body is not None:
            self.last_health = body
        return status, body

    async def wait_healthy(self, http: aiohttp.ClientSession, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        last = "no answer yet"
        while True:
            if self._proc is not None and self._proc.poll() is not None:
                raise NodeStartError(
                    f"the node exited with status {self._proc.returncode} before /healthz "
                    f"answered 200. Last lines of {self.log_path}:\n{_tail(self.log_path)}"
                )
            try:
                status, body = await self.health(http)
                if status == 200:
                    return
                last = f"/healthz answered {status}: {body}"
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                last = f"/healthz: {type(exc).__name__}: {exc}"
            if time.monotonic() > deadline:
                tail = _tail(self.log_path)
                raise NodeStartError(
                    f"no healthy node at {self.base_url} within {timeout_s:.0f} s ({last})"
                    + (f". Last lines of {self.log_path}:\n{tail}" if tail else "")
                )
            await asyncio.sleep(0.2)

    async def wait_streaming(self, http: aiohttp.ClientSession, timeout_s: float = 15.0) -> bool:
        """Wait until /metrics shows an encoder and frames going out (the worker reports
        its stats a little after the first packet); False on timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                async with http.get(f"{self.base_url}/metrics") as resp:
                    samples = prom.parse(await resp.text()) if resp.status == 200 else {}
            except (aiohttp.ClientError, OSError, TimeoutError):
                samples = {}
            encoders = prom.value(samples, "edge_node_video_encoders") or 0.0
            fps = prom.value(samples, "edge_node_frames_out_per_second") or 0.0
            if encoders >= 1 and fps > 0:
                return True
            await asyncio.sleep(0.2)
        return False

    async def stop(self) -> str:
        """Stop a node we started (SIGINT, wait, SIGKILL); returns how it went."""
        proc, outcome = self._proc, "not started by the bench"
        worker = self.worker_pid
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                outcome = await _wait_or_kill(proc, STOP_TIMEOUT_S)
            else:
                outcome = f"had already exited with status {proc.returncode}"
            # The worker is the node's child; it must not outlive it.
            if worker is not None and "edge_node.media.worker" in procstat.cmdline(worker):
                await _kill_pid(worker)
                outcome += f"; left-over worker {worker} killed"
            self._proc = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._data_dir is not None:
            shutil.rmtree(self._data_dir, ignore_errors=True)
            self._data_dir = None
        return outcome


async def _wait_or_kill(proc: subprocess.Popen[bytes], timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while proc.poll() is None and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    if proc.poll() is None:
        proc.kill()
        proc.wait()
        return f"did not stop within {timeout_s:.0f} s of SIGINT; killed"
    return f"stopped on SIGINT (exit status {proc.returncode})"


async def _kill_pid(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        for _ in range(40):
            await asyncio.sleep(0.05)
            if not procstat.alive(pid):
                return
        os.kill(pid, signal.SIGKILL)


def _listener_env() -> dict[str, str]:
    """Every other listener in the node's config schema, moved to loopback and a free port.

    Read from the schema rather than listed here, so that a listener added to the node
    (RTMP ingest, a collector, ...) never collides with a node already running on the
    box: ``*port`` keys with a non-zero default get a free port, ``*host`` keys that
    bind every interface get 127.0.0.1.
    """
    from edge_node import config as config_mod

    env: dict[str, str] = {}
    defaults = config_mod.Config()
    for section in dataclasses.fields(defaults):
        values = getattr(defaults, section.name)
        if not dataclasses.is_dataclass(values):
            continue
        for f in dataclasses.fields(values):
            default = getattr(values, f.name)
            var = f"{config_mod.ENV_PREFIX}{section.name}__{f.name}".upper()
            is_port = f.name == "port" or f.name.endswith("_port")
            is_host = f.name == "host" or f.name.endswith("_host")
            if is_port and isinstance(default, int) and not isinstance(default, bool) and default:
                env[var] = str(free_loopback_port())
            elif is_host and default in ("0.0.0.0", "::"):
                env[var] = "127.0.0.1"
    return env


def node_env(port: int, extra: dict[str, str]) -> dict[str, str]:
    """The EDGE_NODE_* settings the bench gives the node it starts."""
    env = _listener_env()
    env.update(
        {
            "EDGE_NODE_HTTP__HOST": "127.0.0.1",
            "EDGE_NODE_HTTP__PORT": str(port),
            "EDGE_NODE_WEBRTC__HOST_ADDRESSES": "127.0.0.1",
            "EDGE_NODE_NODE__LOG_LEVEL": "warning",
        }
    )
    # The demo's embedded collector is a HOST:PORT string, not a *port key: give it
    # (and the link that dials it) a free loopback port too.
    collector = f"127.0.0.1:{free_loopback_port()}"
    env["EDGE_NODE_CLOUD__EMBEDDED_COLLECTOR"] = collector
    env["EDGE_NODE_CLOUD__TARGET"] = collector
    env.update(extra)
    return env


async def start(
    http: aiohttp.ClientSession,
    out_dir: Path,
    extra_env: dict[str, str],
    timeout_s: float = HEALTH_TIMEOUT_S,
) -> Node:
    """Start ``python -m edge_node demo`` and wait for ``/healthz`` to answer 200."""
    port = free_loopback_port()
    given = node_env(port, extra_env)
    # Other settings the caller exported (e.g. a preset under study) are kept and reported.
    inherited = {k: v for k, v in os.environ.items() if k.startswith("EDGE_NODE_")}
    env = {**os.environ, **given}
    data_dir = tempfile.mkdtemp(prefix="bench-node-")
    log_path = out_dir / "node.log"
    log_file = open(log_path, "wb")  # noqa: SIM115 - closed by Node.stop
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edge_node", "demo", "--data-dir", data_dir],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # a Ctrl-C at the terminal reaches the bench, which stops it
            preexec_fn=_die_with_parent,
        )
    except OSError as exc:
        log_file.close()
        shutil.rmtree(data_dir, ignore_errors=True)
        raise NodeStartError(f"cannot start the node: {exc}") from exc
    node = Node(
        base_url=f"http://127.0.0.1:{port}",
        started_by_bench=True,
        env={**inherited, **given},
        log_path=log_path,
        _proc=proc,
        _data_dir=data_dir,
        _log_file=log_file,
    )
    try:
        await node.wait_healthy(http, timeout_s)
    except BaseException:
        await node.stop()
        raise
    node.startup_s = time.monotonic() - started
    return node


async def attach(http: aiohttp.ClientSession, url: str, timeout_s: float = 10.0) -> Node:
    """Drive the node at ``url``; it must answer ``/healthz`` with 200."""
    node = Node(base_url=url.rstrip("/"), started_by_bench=False)
    await node.wait_healthy(http, timeout_s)
    return node

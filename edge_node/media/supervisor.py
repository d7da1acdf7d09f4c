"""Supervisor of the media worker: spawn, feed, watch, restart.

The worker is started with exec (``python -m edge_node.media.worker``), never forked:
grpcio in the control process does not survive a fork. When the worker dies, or goes
silent for ``worker.stall_timeout_s``, it is restarted (immediately the first time,
with a growing delay capped at ``worker.restart_delay_max_s`` when it keeps
crashing), the last scene is sent again, and the restart is counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

from edge_node import config as config_mod
from edge_node.config import Config
from edge_node.errors import ProtocolError
from edge_node.media.channel import MessageReader, encode_message
from edge_node.metrics import Registry
from edge_node.overlay.scene import EMPTY_SCENE, Scene

log = logging.getLogger(__name__)

OnMessage = Callable[[dict[str, Any], int], None]

# A worker that lived this long counts as healthy: its next crash restarts at once.
_HEALTHY_RUN_S = 10.0


class WorkerSupervisor:
    def __init__(
        self,
        cfg: Config,
        registry: Registry,
        on_message: OnMessage,
        replay: Callable[[], list[dict[str, Any]]] = list,
    ) -> None:
        self.cfg = cfg
        self._on_message = on_message
        self._replay = replay
        self._proc: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.generation = 0
        self.scene: Scene = EMPTY_SCENE
        self.started_at = 0.0
        self.last_message_at = 0.0
        self._restarts = registry.counter(
            "edge_node_worker_restarts_total", "Media worker restarts, by reason."
        )
        registry.gauge(
            "edge_node_worker_up",
            "1 while a media worker is running.",
            read=lambda: 1.0 if self.alive else 0.0,
        )

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    @property
    def restarts(self) -> int:
        return int(sum(self._restarts.value(reason=r) for r in ("exit", "stall")))

    async def start(self) -> None:
        await self._spawn()
        self._task = asyncio.create_task(self._watch(), name="worker-supervisor")

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        proc = self._proc
        if proc is not None and proc.returncode is None:
            self.send({"t": "stop"})
            try:
                await asyncio.wait_for(proc.wait(), 3.0)
            except TimeoutError:
                proc.kill()
                await proc.wait()

    def send(self, msg: dict[str, Any]) -> None:
        """Best effort: a message to a dead worker is dropped; the restart re-sends state."""
        proc = self._proc
        if proc is None or proc.returncode is not None or proc.stdin is None:
            return
        if proc.stdin.is_closing():
            return
        proc.stdin.write(encode_message(msg))

    def set_scene(self, scene: Scene) -> None:
        self.scene = scene
        self.send({"t": "scene", "scene": scene.to_wire()})

    def request_keyframe(self) -> None:
        self.send({"t": "keyframe"})

    async def _spawn(self) -> None:
        self.generation += 1
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "edge_node.media.worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        self.started_at = self.last_message_at = time.monotonic()
        self.send(
            {
                "t": "init",
                "gen": self.generation,
                "config": config_mod.to_wire(self.cfg),
                "scene": self.scene.to_wire(),
            }
        )
        for msg in self._replay():
            self.send(msg)
        log.info(
            "media worker started",
            extra={"worker_pid": self._proc.pid, "generation": self.generation},
        )

    async def _watch(self) -> None:
        failures = 0
        while not self._stopping:
            reason = await self._pump()
            proc = self._proc
            assert proc is not None
            if self._stopping:
                return
            if proc.returncode is None:
                proc.kill()
            code = await proc.wait()
            lived = time.monotonic() - self.started_at
            failures = 0 if lived >= _HEALTHY_RUN_S else failures + 1
            delay = (
                0.0
                if failures <= 1
                else min(0.1 * 2 ** (failures - 2), self.cfg.worker.restart_delay_max_s)
            )
            self._restarts.inc(reason=reason)
            log.warning(
                "media worker gone; restarting",
                extra={
                    "reason": reason,
                    "exit_code": code,
                    "lived_s": round(lived, 2),
                    "restart_in_s": delay,
                },
            )
            if delay:
                await asyncio.sleep(delay)
            await self._spawn()

    async def _pump(self) -> str:
        """Read the worker's messages until it exits ("exit") or goes silent ("stall").

        Silence is watched by a timer, not by a timeout around every read: in Python
        3.11 ``wait_for`` runs the read in a task of its own, which costs each packet
        one more turn of a busy event loop on its way to the viewers.
        """
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        loop = asyncio.get_running_loop()
        reader = MessageReader()
        gen = self.generation
        heard = False
        stalled = False
        watchdog: asyncio.TimerHandle | None = None

        # Until its first message the worker is starting (imports, loading or compiling
        # the blend kernels: seconds on a loaded box); after that, silence is a stall.
        def check() -> None:
            nonlocal watchdog, stalled
            if heard:
                timeout = self.cfg.worker.stall_timeout_s
                quiet = time.monotonic() - self.last_message_at
            else:
                timeout = self.cfg.worker.start_timeout_s
                quiet = time.monotonic() - self.started_at
            if quiet < timeout:
                watchdog = loop.call_later(timeout - quiet, check)
                return
            stalled = True
            if proc.returncode is None:
                proc.kill()  # its pipe ends: the read below returns

        check()
        try:
            while True:
                data = await proc.stdout.read(262144)
                if not data:
                    return "stall" if stalled else "exit"
                try:
                    msgs = reader.feed(data)
                except ProtocolError as exc:
                    log.error("corrupt frame from media worker: %s", exc)
                    return "exit"
                self.last_message_at = time.monotonic()
                if not heard:  # started: from now on the (shorter) stall timeout applies
                    heard = True
                    if watchdog is not None:
                        watchdog.cancel()
                    check()
                for msg in msgs:
                    self._on_message(msg, gen)
        finally:
            if watchdog is not None:
                watchdog.cancel()

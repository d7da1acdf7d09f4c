"""Starting ``bench.viewer`` processes and following their JSON-lines progress."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

# On top of the watching itself: WHEP set-up, DELETE, and interpreter start.
_SLACK_S = 30.0


class ViewerProcess:
    """One viewer subprocess (``--hold``: it plays on after its window until
    ``release()``); ``first_frame`` and ``window_end`` are set as it reports them, or
    when it exits early, so that nobody waits for a dead viewer."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process, seconds: float) -> None:
        self.name = name
        self.proc = proc
        self.seconds = seconds
        self.first_frame = asyncio.Event()
        self.window_end = asyncio.Event()
        self.location: str | None = None
        self.result: dict[str, Any] | None = None
        self._reader = asyncio.create_task(self._read(), name=f"viewer-{name}")

    @classmethod
    async def spawn(
        cls,
        name: str,
        url: str,
        seconds: float,
        log_path: Path,
        first_frame_timeout_s: float = 15.0,
    ) -> ViewerProcess:
        with open(log_path, "wb") as log:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench.viewer",
                "--url",
                url,
                "--seconds",
                str(seconds),
                "--first-frame-timeout",
                str(first_frame_timeout_s),
                "--json",
                "--hold",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                cwd=Path(__file__).resolve().parent.parent,  # so that ``bench`` imports
            )
        return cls(name, proc, seconds)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        try:
            async for raw in self.proc.stdout:
                try:
                    msg = json.loads(raw)
                except ValueError:
                    continue
                if not isinstance(msg, dict):
                    continue
                event = msg.get("event")
                if event == "connected":
                    self.location = msg.get("location")
                elif event == "first_frame":
                    self.first_frame.set()
                elif event == "window_end":
                    self.first_frame.set()
                    self.window_end.set()
                elif event == "result":
                    self.result = msg
        finally:
            self.first_frame.set()
            self.window_end.set()

    def release(self) -> None:
        """Let a holding viewer go: it DELETEs its session, reports and exits."""
        stdin = self.proc.stdin
        if stdin is not None and not stdin.is_closing():
            stdin.close()

    async def finish(self, timeout_s: float | None = None) -> dict[str, Any]:
        """Wait for the viewer to exit (killing it after the timeout); its result."""
        timeout = timeout_s if timeout_s is not None else self.seconds + _SLACK_S
        self.release()
        try:
            await asyncio.wait_for(asyncio.shield(self._reader), timeout)
            await asyncio.wait_for(self.proc.wait(), 5.0)
        except TimeoutError:
            await self.stop()
            return {"error": f"viewer {self.name} did not finish within {timeout:.0f} s"}
        if self.result is None:
            return {"error": f"viewer {self.name} exited ({self.proc.returncode}) with no result"}
        return self.result

    async def stop(self) -> None:
        """Terminate, then kill, a viewer that is still running."""
        self.release()
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 3.0)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader

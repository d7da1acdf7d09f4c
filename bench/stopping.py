"""How a bench client process learns to stop: SIGTERM, SIGINT, or (``--stdin``) the end
of its standard input, which the harness closes (and which a dead harness closes too)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import threading


def stop_event(stop_on_stdin_eof: bool) -> asyncio.Event:
    """An event set on SIGTERM/SIGINT, or when standard input ends; call on the loop."""
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    if stop_on_stdin_eof:

        def wait_eof() -> None:
            with contextlib.suppress(OSError, ValueError):
                while sys.stdin.buffer.read(4096):
                    pass
            loop.call_soon_threadsafe(done.set)

        threading.Thread(target=wait_eof, name="stdin-eof", daemon=True).start()
    return done

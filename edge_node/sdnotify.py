"""systemd's notify protocol (sd_notify), without libsystemd: one datagram per state.

Under a unit with ``Type=notify`` systemd sets ``NOTIFY_SOCKET``; the node says
``READY=1`` once it serves, ``WATCHDOG=1`` every half of ``WATCHDOG_USEC`` while its
event loop runs (a hung loop stops the pings and systemd restarts the node), and
``STOPPING=1`` when it begins to drain. Without ``NOTIFY_SOCKET`` every call is a
no-op, so the same binary runs anywhere.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):  # the abstract namespace
            address = "\0" + address[1:]
        self.address = address
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        for_us = not pid or pid == str(os.getpid())
        self.watchdog_s: float | None = (
            int(usec) / 1e6 if usec.isdigit() and int(usec) > 0 and for_us else None
        )

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def notify(self, state: str) -> bool:
        """Send ``state`` (e.g. ``READY=1``); False when not under systemd or it failed."""
        if not self.address:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.connect(self.address)
                sock.sendall(state.encode())
        except OSError as exc:
            log.warning("sd_notify %s failed: %s", state.split("=", 1)[0], exc)
            return False
        return True

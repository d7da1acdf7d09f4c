"""RTMP ingest listener: the asyncio adapter over ``rtmp.RtmpServerConnection``.

Runs in the control process, so a publisher's TCP connection outlives a media worker
crash; it forwards the compressed FLV audio/video tags to the worker, which decodes
them. A wrong key, garbage bytes or a broken client only ever close that one
connection, and each is logged and counted; the listener keeps accepting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from edge_node.errors import ProtocolError
from edge_node.media import rtmp
from edge_node.metrics import Registry

log = logging.getLogger(__name__)

# A connection that has not finished the handshake and published by then is dropped.
SETUP_TIMEOUT_S = 10.0
IDLE_TIMEOUT_S = 10.0


class RtmpListener:
    """Accepts publishers on ``rtmp://host:port/<app>/<stream key>``.

    ``check_publish(key)`` returns None to accept or the refusal reason;
    ``on_start(conn_id, key)``, ``on_media(conn_id, message)`` and ``on_end(conn_id)``
    receive the accepted publisher's life.
    """

    def __init__(
        self,
        host: str,
        port: int,
        app: str,
        registry: Registry,
        check_publish: rtmp.PublishCheck,
        on_start: Callable[[int, str], None],
        on_media: Callable[[int, rtmp.MediaMessage], None],
        on_end: Callable[[int], None],
        metric_prefix: str = "edge_node_rtmp",
    ) -> None:
        self.host, self.port, self.app = host, port, app
        self._check_publish = check_publish
        self._on_start, self._on_media, self._on_end = on_start, on_media, on_end
        self._server: asyncio.Server | None = None
        self._next_id = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self.c_connections = registry.counter(
            f"{metric_prefix}_connections_total", "RTMP connections, by outcome."
        )
        self.c_bytes = registry.counter(f"{metric_prefix}_bytes_total", "RTMP bytes received.")

    async def start(self) -> None:
        self._stopping = False
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        if self.port == 0:
            self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        # A connection accepted just before close() whose handler has not run yet is
        # not in _tasks to be cancelled; it sees _stopping and leaves at once, or
        # wait_closed() (which waits for every connection) would wait on it for ever.
        self._stopping = True
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._server is not None:
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._stopping:
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._next_id += 1
        conn_id = self._next_id
        peer = writer.get_extra_info("peername")
        conn = rtmp.RtmpServerConnection(self.app, self._check_publish)
        outcome = "closed"
        publishing = False
        try:
            while True:
                timeout = IDLE_TIMEOUT_S if publishing else SETUP_TIMEOUT_S
                data = await asyncio.wait_for(reader.read(65536), timeout)
                if not data:
                    break
                self.c_bytes.inc(len(data))
                conn.receive_data(data)
                while (event := conn.next_event()) is not None:
                    if isinstance(event, rtmp.MediaMessage):
                        self._on_media(conn_id, event)
                    elif isinstance(event, rtmp.PublishStarted):
                        publishing = True
                        log.info("rtmp publisher live", extra={"conn": conn_id, "peer": str(peer)})
                        self._on_start(conn_id, event.stream_key)
                    elif isinstance(event, rtmp.PublishRejected):
                        outcome = "refused"
                        # Never log the key itself: it is a secret.
                        log.warning(
                            "rtmp publish refused",
                            extra={"conn": conn_id, "peer": str(peer), "reason": event.reason},
                        )
                    elif isinstance(event, rtmp.PublishEnded):
                        publishing = False
                        self._on_end(conn_id)
                out = conn.data_to_send()
                if out:
                    writer.write(out)
                    await writer.drain()
                if conn.close_after_send:
                    break
        except ProtocolError as exc:
            outcome = "protocol_error"
            log.warning(
                "rtmp connection refused: %s", exc, extra={"conn": conn_id, "peer": str(peer)}
            )
        except TimeoutError:
            outcome = "timeout"
        except (ConnectionError, OSError):
            outcome = "reset"
        except asyncio.CancelledError:
            # stop(): end quietly. Re-raising here makes Python 3.11's stream
            # protocol log the cancellation as an error.
            outcome = "shutdown"
        finally:
            was_publishing = conn.state is rtmp.State.PUBLISHING
            conn.connection_lost()
            if was_publishing:
                self._on_end(conn_id)
            self.c_connections.inc(outcome=outcome)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError, asyncio.CancelledError):
                await writer.wait_closed()
            self._tasks.discard(task)

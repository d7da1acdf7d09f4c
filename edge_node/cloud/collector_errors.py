"""The collector's own errors, and the one table that maps each to a gRPC status.

Servicers abort with ``status_of(exc)``; the client turns a failed call back into
``CollectorCallError`` (``collector_client``).
"""

from __future__ import annotations

import grpc

from edge_node.errors import EdgeNodeError, ProtocolError


class CollectorError(EdgeNodeError):
    """Base of the collector's own errors (start-up, storage, routing)."""


class NodeNotConnected(CollectorError):
    def __init__(self, node_id: str, reason: str = "is not connected") -> None:
        super().__init__(f"node {node_id!r} {reason}")
        self.node_id = node_id


class CommandTimedOut(CollectorError):
    def __init__(self, node_id: str, command_id: str, timeout_s: float) -> None:
        super().__init__(
            f"node {node_id!r} did not answer command {command_id!r} within {timeout_s:g} s"
        )


class NodeBusy(CollectorError):
    """Too many commands queued for one node."""


class StreamReplaced(CollectorError):
    """A newer Sync stream from the same node id took over."""


class UnsupportedProtoVersion(CollectorError):
    """A node speaks a proto version this collector does not."""


class StorageError(CollectorError):
    """SQLite failed (disk full, I/O error, locked); nothing was acknowledged."""


class CollectorStopping(CollectorError):
    """The collector is shutting down; streams end with UNAVAILABLE."""


class Unauthenticated(CollectorError):
    """A missing or wrong bearer token."""


_STATUS_OF: tuple[tuple[type[EdgeNodeError], grpc.StatusCode], ...] = (
    (ProtocolError, grpc.StatusCode.INVALID_ARGUMENT),
    (NodeNotConnected, grpc.StatusCode.UNAVAILABLE),
    (CommandTimedOut, grpc.StatusCode.DEADLINE_EXCEEDED),
    (NodeBusy, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (StreamReplaced, grpc.StatusCode.ABORTED),
    (UnsupportedProtoVersion, grpc.StatusCode.FAILED_PRECONDITION),
    (StorageError, grpc.StatusCode.UNAVAILABLE),
    (CollectorStopping, grpc.StatusCode.UNAVAILABLE),
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
)


def status_of(exc: EdgeNodeError) -> grpc.StatusCode:
    for cls, code in _STATUS_OF:
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.INTERNAL

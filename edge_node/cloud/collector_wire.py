"""Protobuf <-> the collector's dataclasses: the only module that knows both.

Used by the servicers (server side) and by ``CollectorClient`` (client side), so a
field added to the proto is translated in one place.
"""

from __future__ import annotations

from edge_node.cloud._proto import edge_pb2 as pb
from edge_node.cloud.collector_records import (
    Ack,
    Command,
    CommandResult,
    Hello,
    NodeInfo,
    PlatformEvent,
    StoredSummary,
    WindowSummary,
)

EDGE_LINK_SERVICE: str = pb.DESCRIPTOR.services_by_name["EdgeLink"].full_name
COLLECTOR_SERVICE: str = pb.DESCRIPTOR.services_by_name["Collector"].full_name


def hello_from_pb(m: pb.Hello) -> Hello:
    return Hello(m.node_id, m.boot_id, m.version, m.proto_version, m.acked_through)


def summary_from_pb(m: pb.Summary) -> WindowSummary:
    return WindowSummary(m.seq, m.window_start_unix_ms, m.window_s, m.payload, m.empty)


def result_from_pb(node_id: str, m: pb.CommandResult) -> CommandResult:
    return CommandResult(node_id, m.command_id, m.ok, m.result_json, m.error_code, m.error)


def outgoing_to_pb(item: Ack | Command | PlatformEvent) -> pb.CloudMessage:
    if isinstance(item, Ack):
        return pb.CloudMessage(ack=pb.Ack(highest_contiguous_seq=item.highest_contiguous_seq))
    if isinstance(item, Command):
        return pb.CloudMessage(
            command=pb.Command(command_id=item.command_id, cmd=item.cmd, args_json=item.args_json)
        )
    return pb.CloudMessage(
        platform_event=pb.PlatformEvent(
            event_id=item.event_id, type=item.type, user=item.user, payload_json=item.payload_json
        )
    )


def stored_to_pb(s: StoredSummary) -> pb.SummaryRecord:
    return pb.SummaryRecord(
        node_id=s.node_id,
        seq=s.seq,
        window_start_unix_ms=s.window_start_unix_ms,
        window_s=s.window_s,
        payload=s.payload,
        empty=s.empty,
        received_unix_ms=s.received_unix_ms,
    )


def stored_from_pb(m: pb.SummaryRecord) -> StoredSummary:
    return StoredSummary(
        m.node_id, m.seq, m.window_start_unix_ms, m.window_s, m.payload, m.empty, m.received_unix_ms
    )


def result_to_pb(r: CommandResult) -> pb.CommandResultRecord:
    return pb.CommandResultRecord(
        node_id=r.node_id,
        command_id=r.command_id,
        ok=r.ok,
        result_json=r.result_json,
        error_code=r.error_code,
        error=r.error,
    )


def result_record_from_pb(m: pb.CommandResultRecord) -> CommandResult:
    return CommandResult(m.node_id, m.command_id, m.ok, m.result_json, m.error_code, m.error)


def node_to_pb(n: NodeInfo) -> pb.NodeInfo:
    return pb.NodeInfo(
        node_id=n.node_id,
        boot_id=n.boot_id,
        version=n.version,
        last_seen_unix_ms=n.last_seen_unix_ms,
        connected=n.connected,
        highest_contiguous_seq=n.highest_contiguous_seq,
        acked_elsewhere=n.acked_elsewhere,
    )


def node_from_pb(m: pb.NodeInfo) -> NodeInfo:
    return NodeInfo(
        m.node_id,
        m.boot_id,
        m.version,
        m.last_seen_unix_ms,
        m.connected,
        m.highest_contiguous_seq,
        m.acked_elsewhere,
    )

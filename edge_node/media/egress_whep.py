"""WHEP egress: one aiortc peer connection per viewer, all fed the same encoded packets.

Lives in the control process, fed by the fan-out hub. Why here and not in the media
worker: a viewer's peer connection (ICE, DTLS, SRTP state) survives a worker crash;
after the restart packets flow again from a keyframe, and the viewer never has to
reconnect. Each session only packetizes and encrypts; nothing here encodes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aioice.ice
import av
from aiortc import RTCPeerConnection, RTCRtpSender, RTCRtpTransceiver, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcdatachannel import RTCDataChannel

from edge_node.config import Config
from edge_node.errors import ProtocolError
from edge_node.interaction.auth import Claims
from edge_node.media.audio import TIME_BASE as AUDIO_TIME_BASE
from edge_node.media.encode import TIME_BASE
from edge_node.media.fanout import AudioSubscription, PacketHub, Subscription
from edge_node.metrics import Registry

log = logging.getLogger(__name__)

EVENTS_CHANNEL = "events"

# Called once per `events` data channel a viewer opens; it wires the channel's messages.
EventsChannelHandler = Callable[["WhepSession", RTCDataChannel], None]


def restrict_ice_host_addresses(addresses: list[str]) -> None:
    """Offer only ``addresses`` as ICE host candidates (aioice has no option for it).

    aioice offers every non-loopback interface; a venue box with several NICs (and
    our loopback-only tests) must choose. Empty = aioice's default.
    """
    if not addresses:
        return
    chosen = list(addresses)

    def host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in chosen if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

    aioice.ice.get_host_addresses = host_addresses


class WhepTrack(MediaStreamTrack):
    """A video track whose ``recv`` returns pre-encoded H.264 packets from the hub."""

    kind = "video"

    def __init__(self, hub: PacketHub, sub: Subscription) -> None:
        super().__init__()
        self._hub = hub
        self._sub = sub

    async def recv(self) -> av.Packet[Any]:
        if self.readyState != "live":
            raise MediaStreamError
        encoded = await self._sub.queue.get()
        packet = av.Packet(encoded.data)
        packet.pts = packet.dts = encoded.pts
        packet.time_base = TIME_BASE
        return packet

    def stop(self) -> None:
        self._hub.unsubscribe(self._sub)
        super().stop()


class WhepAudioTrack(MediaStreamTrack):
    """An audio track whose ``recv`` returns pre-encoded Opus packets from the hub."""

    kind = "audio"

    def __init__(self, hub: PacketHub, sub: AudioSubscription) -> None:
        super().__init__()
        self._hub = hub
        self._sub = sub

    async def recv(self) -> av.Packet[Any]:
        if self.readyState != "live":
            raise MediaStreamError
        encoded = await self._sub.queue.get()
        packet = av.Packet(encoded.data)
        packet.pts = packet.dts = encoded.pts
        packet.time_base = AUDIO_TIME_BASE
        return packet

    def stop(self) -> None:
        self._hub.unsubscribe_audio(self._sub)
        super().stop()


@dataclass(eq=False)
class WhepSession:
    id: str
    pc: RTCPeerConnection
    track: WhepTrack
    audio: WhepAudioTrack | None = None
    claims: Claims | None = None  # who the viewer is, for the events channel
    channels: list[RTCDataChannel] = field(default_factory=list)

    def send_event(self, message: dict[str, Any]) -> None:
        for ch in self.channels:
            if ch.readyState == "open":
                ch.send(json.dumps(message, ensure_ascii=False))


def offer_refused(what: str, exc: BaseException) -> ProtocolError:
    """The 400 for an offer aiortc could not take, naming aiortc's complaint (shortened:
    some echo the offending line, which a client may make 200 KB long)."""
    detail = str(exc) or "malformed"
    if len(detail) > 160:
        detail = detail[:160] + "…"
    return ProtocolError("sdp", f"{what}: {type(exc).__name__}: {detail}")


async def close_refused(pc: RTCPeerConnection) -> None:
    """Close the peer connection of a refused offer without letting the close fail the
    request: after a half-applied remote description aiortc's own ``close`` can raise
    (its SCTP transport never got a DTLS transport). The offer is refused either way."""
    try:
        await pc.close()
    except Exception as exc:  # aiortc's, on a connection that never came up
        log.info("closing a refused peer connection failed: %s: %s", type(exc).__name__, exc)


def keep_only_codec(transceiver: RTCRtpTransceiver, mime_type: str) -> bool:
    """Answer with ``mime_type`` only (H.264 video, Opus audio): what we send or pass on
    undecoded, whatever the peer prefers. False when the offer lacks it.

    aiortc applies codec preferences while it creates the transceiver inside
    setRemoteDescription, which is too early for an answerer to set them; so the
    negotiated list is filtered afterwards (RTX kept for the chosen payload types).
    """
    codecs = transceiver._codecs
    chosen = {c.payloadType for c in codecs if c.mimeType.lower() == mime_type}
    transceiver._codecs = [
        c
        for c in codecs
        if c.payloadType in chosen
        or (c.mimeType.lower() == "video/rtx" and c.parameters.get("apt") in chosen)
    ]
    return bool(chosen)


class WhepEndpoint:
    """Creates and ends WHEP sessions; the HTTP layer only moves SDP and status codes."""

    def __init__(
        self, cfg: Config, hub: PacketHub, registry: Registry, on_channel: EventsChannelHandler
    ) -> None:
        self.cfg = cfg
        self.hub = hub
        self._on_channel = on_channel
        self.sessions: dict[str, WhepSession] = {}
        self._c_sessions = registry.counter(
            "edge_node_whep_sessions_total", "WHEP sessions, by outcome."
        )
        registry.gauge(
            "edge_node_whep_sessions",
            "WHEP sessions open now.",
            read=lambda: float(len(self.sessions)),
        )

    @property
    def full(self) -> bool:
        return len(self.sessions) >= self.cfg.webrtc.max_viewers

    async def create(self, offer_sdp: str, claims: Claims | None = None) -> tuple[str, str]:
        """Answer a viewer's offer; returns (session id, answer SDP)."""
        if "m=video" not in offer_sdp:
            self._c_sessions.inc(outcome="bad_offer")
            raise ProtocolError("sdp", "the offer has no video m-line (m=video)")
        pc = RTCPeerConnection()
        try:
            await pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
        except Exception as exc:  # aiortc's parser raises whatever a bad line trips
            await close_refused(pc)
            self._c_sessions.inc(outcome="bad_offer")
            raise offer_refused("cannot parse the offer", exc) from None
        video = [t for t in pc.getTransceivers() if t.kind == "video"]
        if not video:
            await close_refused(pc)
            self._c_sessions.inc(outcome="bad_offer")
            raise ProtocolError("sdp", "the offer has no video transceiver")
        if not keep_only_codec(video[0], "video/h264"):
            await close_refused(pc)
            self._c_sessions.inc(outcome="no_h264")
            raise ProtocolError("sdp", "the offer does not accept H.264 video")
        sid = secrets.token_urlsafe(12)
        sub = self.hub.subscribe(f"whep:{sid}")
        track = WhepTrack(self.hub, sub)
        sender = pc.addTrack(track)
        self._forward_pli(sender)
        session = WhepSession(sid, pc, track, claims=claims)
        for t in pc.getTransceivers():
            if t.kind == "audio" and keep_only_codec(t, "audio/opus"):
                # Audio flows when the live input has some; until then the track is quiet.
                session.audio = WhepAudioTrack(self.hub, self.hub.subscribe_audio(sid, "opus"))
                pc.addTrack(session.audio)
                break
        self._wire_events(session)
        try:
            answer = await pc.createAnswer()
            await pc.setLocalDescription(answer)
        except Exception as exc:  # an offer that parsed but cannot be answered
            track.stop()
            if session.audio is not None:
                session.audio.stop()
            await close_refused(pc)
            self._c_sessions.inc(outcome="bad_offer")
            raise offer_refused("cannot answer the offer", exc) from None
        self.sessions[sid] = session
        self._c_sessions.inc(outcome="created")
        log.info("whep session created", extra={"session": sid, "viewers": len(self.sessions)})
        return sid, str(pc.localDescription.sdp)

    def _forward_pli(self, sender: RTCRtpSender) -> None:
        # aiortc turns a PLI/FIR into a flag for its own encoder; with pre-encoded
        # packets that flag is never read, so route the request to our encoder.
        hub = self.hub

        def send_keyframe() -> None:
            hub.request_keyframe()

        sender._send_keyframe = send_keyframe  # type: ignore[method-assign]

    def _wire_events(self, session: WhepSession) -> None:
        pc = session.pc

        @pc.on("datachannel")
        def on_datachannel(channel: RTCDataChannel) -> None:
            if channel.label != EVENTS_CHANNEL:
                log.info("ignoring data channel", extra={"label": channel.label})
                return
            session.channels.append(channel)
            self._on_channel(session, channel)

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                await self.delete(session.id)

    async def delete(self, sid: str) -> bool:
        session = self.sessions.pop(sid, None)
        if session is None:
            return False
        session.track.stop()
        if session.audio is not None:
            session.audio.stop()
        await session.pc.close()
        self._c_sessions.inc(outcome="ended")
        log.info("whep session ended", extra={"session": sid, "viewers": len(self.sessions)})
        return True

    async def close_all(self) -> None:
        await asyncio.gather(*(self.delete(sid) for sid in list(self.sessions)))

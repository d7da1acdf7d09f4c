"""WHIP ingest (RFC 9725): a publisher's WebRTC session, received in the control process.

aiortc does ICE, DTLS, SRTP, the jitter buffer and H.264 depayloading here; the
decoding does not happen here. ``install_passthrough_decoders`` makes aiortc hand
the depayloaded access units on undecoded, and they travel to the media worker
like RTMP's tags, so a corrupt stream can only crash the worker, and a publisher's
session outlives a worker restart (a PLI then asks it for a fresh keyframe).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiortc.rtcrtpreceiver
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpreceiver import RTCRtpReceiver

from edge_node.errors import ProtocolError
from edge_node.media.egress_whep import close_refused, keep_only_codec, offer_refused
from edge_node.media.ingest import IngestArbiter
from edge_node.metrics import Registry

log = logging.getLogger(__name__)

# PLIs closer together than this are merged.
PLI_MIN_INTERVAL_S = 0.5


@dataclass(frozen=True, slots=True)
class AccessUnit:
    """What the pass-through decoder returns instead of a decoded frame."""

    data: bytes  # Annex-B for H.264
    rtp_timestamp: int


class PassthroughDecoder:
    def decode(self, encoded_frame: JitterFrame) -> list[AccessUnit]:
        return [AccessUnit(encoded_frame.data, encoded_frame.timestamp)]


_PASSTHROUGH = "_edge_node_passthrough"


def install_passthrough_decoders() -> None:
    """Let WHIP sessions receive media undecoded (see module doc).

    aiortc picks a decoder by codec alone; codecs negotiated by a WHIP session are
    marked, and only those get the pass-through, so any other peer connection in the
    process (a test's viewer, say) still decodes.
    """
    original = aiortc.rtcrtpreceiver.get_decoder  # type: ignore[attr-defined]
    if getattr(original, _PASSTHROUGH, False):
        return

    def get_decoder(codec: Any) -> Any:
        if getattr(codec, _PASSTHROUGH, False):
            return PassthroughDecoder()
        return original(codec)

    setattr(get_decoder, _PASSTHROUGH, True)
    aiortc.rtcrtpreceiver.get_decoder = get_decoder  # type: ignore[attr-defined]


def _mark_passthrough(transceiver: Any) -> None:
    for codec in transceiver._codecs:
        object.__setattr__(codec, _PASSTHROUGH, True)


IDLE_TIMEOUT_S = 10.0  # video silence that ends a session (as an RTMP publisher's)


class WhipRefused(Exception):
    def __init__(self, status: int, field: str, reason: str) -> None:
        super().__init__(reason)
        self.status, self.field, self.reason = status, field, reason


@dataclass(eq=False)
class WhipSession:
    id: str
    conn_id: int
    pc: RTCPeerConnection
    receivers: list[RTCRtpReceiver] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class WhipEndpoint:
    def __init__(
        self,
        arbiter: IngestArbiter,
        registry: Registry,
        send_to_worker: Callable[[dict[str, Any]], None],
        on_live: Callable[[str], None] = lambda proto: None,
    ) -> None:
        self._arbiter = arbiter
        self._send = send_to_worker
        self._on_live = on_live
        self.sessions: dict[str, WhipSession] = {}
        self._next_conn = 0
        self._last_pli = -1e9
        self._ending: set[asyncio.Future[bool]] = set()  # sessions being ended for silence
        self.c_sessions = registry.counter(
            "edge_node_whip_sessions_total", "WHIP publish attempts, by outcome."
        )
        self.c_units = registry.counter(
            "edge_node_whip_access_units_total", "Media units received over WHIP, by kind."
        )
        self.c_plis = registry.counter(
            "edge_node_whip_plis_total", "Keyframe requests (PLI) sent to the WHIP publisher."
        )

    async def create(self, bearer: str | None, offer_sdp: str) -> tuple[str, str]:
        if bearer is None:
            self.c_sessions.inc(outcome="unauthorized")
            raise WhipRefused(401, "authorization", "missing 'Authorization: Bearer <stream key>'")
        refusal = self._arbiter.check(bearer)
        if refusal is not None:
            busy = refusal.startswith("another publisher")
            self.c_sessions.inc(outcome="busy" if busy else "unauthorized")
            raise WhipRefused(409 if busy else 401, "authorization", refusal)
        if "m=video" not in offer_sdp:
            self.c_sessions.inc(outcome="bad_offer")
            raise ProtocolError("sdp", "the offer has no video m-line (m=video)")
        pc = RTCPeerConnection()
        self._next_conn += 1
        session = WhipSession(secrets.token_urlsafe(12), self._next_conn, pc)
        # aiortc emits "track" inside setRemoteDescription: listen before it.
        self._wire(session)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
        except Exception as exc:  # aiortc's parser raises whatever a bad line trips
            await self._refuse(session, "bad_offer")
            raise offer_refused("cannot parse the offer", exc) from None
        video = [t for t in pc.getTransceivers() if t.kind == "video"]
        if not video:
            await self._refuse(session, "bad_offer")
            raise ProtocolError("sdp", "the offer has no video transceiver")
        for t in pc.getTransceivers():
            if t.kind == "audio":
                keep_only_codec(t, "audio/opus")
        if not keep_only_codec(video[0], "video/h264"):
            await self._refuse(session, "no_h264")
            raise ProtocolError("sdp", "the offer does not send H.264 video")
        for t in pc.getTransceivers():
            _mark_passthrough(t)
        # Another publisher may have gone live while we awaited; check again.
        refusal = self._arbiter.check(bearer)
        if refusal is not None:
            await self._refuse(session, "busy")
            raise WhipRefused(409, "authorization", refusal)
        try:
            answer = await pc.createAnswer()
            await pc.setLocalDescription(answer)
        except Exception as exc:  # an offer that parsed but cannot be answered
            await self._refuse(session, "bad_offer")
            raise offer_refused("cannot answer the offer", exc) from None
        self.sessions[session.id] = session
        self._send(self._arbiter.started("whip", session.conn_id))
        self._on_live("whip")
        self.c_sessions.inc(outcome="live")
        log.info("whip publisher live", extra={"session": session.id})
        return session.id, str(pc.localDescription.sdp)

    async def _refuse(self, session: WhipSession, outcome: str) -> None:
        """Undo a session whose offer was refused: its peer connection and the tasks a
        track may already have started (they end with the closed track)."""
        await close_refused(session.pc)
        for task in session.tasks:
            task.cancel()
        self.c_sessions.inc(outcome=outcome)

    def _wire(self, session: WhipSession) -> None:
        pc = session.pc

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            for t in pc.getTransceivers():
                if t.receiver.track is track:
                    session.receivers.append(t.receiver)
            session.tasks.append(asyncio.create_task(self._forward(session, track)))

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                await self.delete(session.id)

    async def _forward(self, session: WhipSession, track: MediaStreamTrack) -> None:
        kind = track.kind
        while True:
            try:
                # A publisher whose process or network died sends nothing more and ICE
                # consent would hold its slot ~30 s; silence ends it as RTMP's does.
                unit = await asyncio.wait_for(track.recv(), IDLE_TIMEOUT_S)
            except MediaStreamError:
                return
            except TimeoutError:
                if kind == "video":
                    log.warning(
                        "whip publisher silent for %.0f s: ending its session",
                        IDLE_TIMEOUT_S,
                        extra={"session": session.id},
                    )
                    self.c_sessions.inc(outcome="silent")
                    # Not awaited here: delete() cancels and awaits this very task.
                    ending = asyncio.ensure_future(self.delete(session.id))
                    self._ending.add(ending)
                    ending.add_done_callback(self._ending.discard)
                    return
                continue
            self.c_units.inc(kind=kind)
            if not isinstance(unit, AccessUnit):
                continue
            live = self._arbiter.live
            if live is None or live.conn_id != session.conn_id or live.proto != "whip":
                return
            if kind == "audio":
                self._send({"t": "in_opus", "data": unit.data})
                continue
            self._arbiter.h264_unit(session.conn_id, unit.data)
            self._send({"t": "in_h264", "data": unit.data})

    def request_keyframe(self, now: float) -> None:
        """Ask the live WHIP publisher for a keyframe (worker restart, decode error)."""
        live = self._arbiter.live
        if live is None or live.proto != "whip" or now - self._last_pli < PLI_MIN_INTERVAL_S:
            return
        self._last_pli = now
        for session in self.sessions.values():
            if session.conn_id != live.conn_id:
                continue
            for receiver in session.receivers:
                if receiver.track is None or receiver.track.kind != "video":
                    continue
                for source in receiver.getSynchronizationSources():
                    self.c_plis.inc()
                    task = asyncio.ensure_future(receiver._send_rtcp_pli(source.source))
                    session.tasks.append(task)

    async def delete(self, sid: str) -> bool:
        session = self.sessions.pop(sid, None)
        if session is None:
            return False
        msg = self._arbiter.ended("whip", session.conn_id)
        if msg is not None:
            self._send(msg)
        for task in session.tasks:
            task.cancel()
        await session.pc.close()
        for task in session.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.c_sessions.inc(outcome="ended")
        log.info("whip publisher gone", extra={"session": sid})
        return True

    async def close_all(self) -> None:
        await asyncio.gather(*(self.delete(sid) for sid in list(self.sessions)))

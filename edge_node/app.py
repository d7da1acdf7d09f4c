"""Composition root: builds the stages of the control process, wires them, starts and
stops them. Nothing else constructs stages or reaches for globals."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgpack
from aiohttp import web
from aiortc.rtcdatachannel import RTCDataChannel

from edge_node import __version__
from edge_node.backoff import Backoff
from edge_node.cloud import collector as collector_mod
from edge_node.cloud.link import CloudLink
from edge_node.cloud.spool import Spool, SpoolWriteError
from edge_node.cloud.summaries import SummaryWindows, merge_spooled
from edge_node.config import Config
from edge_node.errors import ConfigError
from edge_node.interaction.audience import AudienceModel
from edge_node.interaction.audit import AuditLog
from edge_node.interaction.auth import (
    ROLES,
    AuthError,
    Claims,
    anonymous_claims,
    load_or_create_secret,
    mint,
    node_audiences,
    secret_path,
    verify,
)
from edge_node.interaction.engine import Engine
from edge_node.interaction.messages import Comment, Gift, Message, encode_reply, err
from edge_node.interaction.moderation import Moderation, ReviewQueue, WordList, WordListError
from edge_node.media import rtmp
from edge_node.media.egress_rtmp import RtmpPush
from edge_node.media.egress_whep import WhepEndpoint, WhepSession, restrict_ice_host_addresses
from edge_node.media.fanout import PacketHub
from edge_node.media.ingest import IngestArbiter
from edge_node.media.ingest_rtmp import RtmpListener
from edge_node.media.ingest_whip import WhipEndpoint, install_passthrough_decoders
from edge_node.media.jitter import install_marker_jitter_buffer
from edge_node.media.record import Recorder
from edge_node.media.supervisor import WorkerSupervisor
from edge_node.metrics import Registry
from edge_node.overlay.measure import TextMeasure
from edge_node.overlay.text import find_font, log_missing_scripts
from edge_node.procstats import CpuMeter, ProcSample, sample
from edge_node.sdnotify import Notifier
from edge_node.server.http import build_app
from edge_node.server.realtime import Client, Interactions
from edge_node.server.ws import ws_handler

log = logging.getLogger(__name__)

STOP_STEP_TIMEOUT_S = 5.0  # each step of the hard stop, after the drain
# /healthz reports "degraded" when no video packet has been produced for this long.
STALE_VIDEO_S = 2.0


class Node:
    def __init__(self, cfg: Config, audience: int = 0) -> None:
        self.cfg = cfg
        self.started_at = time.monotonic()
        self.registry = Registry()
        self.ingest = IngestArbiter(cfg.ingest.stream_key, pulls_rtsp=bool(cfg.ingest.rtsp_url))
        self.supervisor = WorkerSupervisor(
            cfg, self.registry, self._on_worker_message, replay=self._replay_to_new_worker
        )
        self.hub = PacketHub(
            self.registry,
            request_keyframe=self.supervisor.request_keyframe,
            frame_duration_pts=90000 // cfg.video.fps,
        )
        self.whep = WhepEndpoint(cfg, self.hub, self.registry, self._on_events_channel)
        # Interactions: the secret, the engine and its adapter.
        data_dir = Path(cfg.node.data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        self.secret = load_or_create_secret(
            data_dir, path=secret_path(data_dir, cfg.auth.secret_file)
        )
        self._audiences = node_audiences(cfg.auth.audience, cfg.node.id)
        self._rng = random.Random()
        self.font_path = find_font(cfg.overlay.font_path or None, config_key="overlay.font_path")
        self.audit, self.moderation = _open_moderation(cfg)
        self.engine = Engine(
            cfg,
            TextMeasure(self.font_path),
            moderation=self.moderation,
            random_bytes=secrets.token_bytes,
        )
        self.engine.wall_offset = time.time() - time.monotonic()
        self._words_mtime = _mtime(cfg.moderation.words_file)
        self._moderation_task: asyncio.Task[None] | None = None
        self.interactions = Interactions(cfg, self.engine, self.registry, self.supervisor.set_scene)
        self.audience = AudienceModel(audience, self._rng) if audience else None
        self._audience_task: asyncio.Task[None] | None = None
        # The cloud side (started in start(): the spool opens off the loop).
        self.spool: Spool | None = None
        self.link: CloudLink | None = None
        self.collector: collector_mod.Collector | None = None
        self.windows = SummaryWindows(1, cfg.cloud.window_lateness_s)
        self._summary_task: asyncio.Task[None] | None = None
        self._worker_stats: dict[str, Any] = {}
        self._c_publishers = self.registry.counter(
            "edge_node_ingest_publishers_total", "Publishers that went live, by protocol."
        )
        self._c_ingest_ignored = self.registry.counter(
            "edge_node_ingest_ignored_total",
            "Ingest messages not used, by kind (stream metadata).",
        )
        self.registry.gauge(
            "edge_node_ingest_live",
            "1 while a publisher is live.",
            read=lambda: 1.0 if self.ingest.live else 0.0,
        )
        self.registry.gauge(
            "edge_node_output_shows_live",
            "1 while the output shows the live input.",
            read=lambda: 1.0 if self._worker_stats.get("input") == "live" else 0.0,
        )
        self.registry.gauge(
            "edge_node_ingest_decode_errors",
            "Decode errors of the live input (this worker).",
            read=lambda: float(self._worker_stats.get("live_decode_errors", 0)),
        )
        self._process_gauges("control", lambda: sample())
        self._process_gauges(
            "worker", lambda: sample(self.supervisor.pid) if self.supervisor.pid else None
        )
        self._cpu = CpuMeter()
        self.rtmp: RtmpListener | None = None
        if cfg.ingest.rtmp_port:
            self.rtmp = RtmpListener(
                cfg.ingest.rtmp_host,
                cfg.ingest.rtmp_port,
                cfg.ingest.rtmp_app,
                self.registry,
                check_publish=self.ingest.check,
                on_start=self._rtmp_started,
                on_media=self._rtmp_media,
                on_end=self._rtmp_ended,
            )
        self.whip = WhipEndpoint(self.ingest, self.registry, self.supervisor.send)
        self.push: RtmpPush | None = None
        if cfg.push.url:
            self.push = RtmpPush(
                cfg.push.url,
                self.hub,
                self.registry,
                Backoff(cfg.push.backoff_initial_s, cfg.push.backoff_max_s),
            )
        self.recorder = Recorder(cfg, self.hub, self.registry) if cfg.record.enabled else None
        self.http_app = build_app(
            self.whep,
            self.whip,
            self.registry,
            self.health,
            ws=ws_handler(cfg, self.interactions, self.authenticate),
            authenticate=self.authenticate,
        )
        self._runner: web.AppRunner | None = None
        self.http_port = cfg.http.port
        self.missing_scripts: list[str] = []

    def _on_worker_message(self, msg: dict[str, Any], gen: int) -> None:
        if msg["t"] == "stats":
            self._worker_stats = msg
        elif msg["t"] == "need_keyframe":
            self.whip.request_keyframe(time.monotonic())
        self.hub.on_worker_message(msg, gen)

    def _replay_to_new_worker(self) -> list[dict[str, Any]]:
        if self.ingest.live is not None and self.ingest.live.proto == "whip":
            # The new worker's decoder needs a keyframe: ask the publisher for one.
            asyncio.get_running_loop().call_later(
                0.2, lambda: self.whip.request_keyframe(time.monotonic())
            )
        return self.ingest.replay()

    def _rtmp_started(self, conn_id: int, key: str) -> None:
        self._c_publishers.inc(proto="rtmp")
        self.supervisor.send(self.ingest.started("rtmp", conn_id))

    def _rtmp_media(self, conn_id: int, message: rtmp.MediaMessage) -> None:
        if message.kind == "metadata":
            self._c_ingest_ignored.inc(kind=message.kind)
            return
        if message.kind == "audio":
            msg = self.ingest.media(
                conn_id, {"t": "in_audio", "ts": message.timestamp_ms, "data": message.payload}
            )
        else:
            msg = self.ingest.flv_video(conn_id, message.timestamp_ms, message.payload)
        if msg is not None:
            self.supervisor.send(msg)

    def _rtmp_ended(self, conn_id: int) -> None:
        msg = self.ingest.ended("rtmp", conn_id)
        if msg is not None:
            self.supervisor.send(msg)

    def _on_events_channel(self, session: WhepSession, channel: RTCDataChannel) -> None:
        """A viewer's `events` data channel: the same engine entry point as /ws."""
        claims = session.claims
        if claims is None:

            def refuse(message: str | bytes) -> None:
                binary = not isinstance(message, str)
                reply = err(
                    None,
                    "unauthorized",
                    "interactions need a token (POST /whep with Authorization)",
                )
                channel.send(encode_reply(reply, binary=binary))

            channel.on("message", refuse)
            return

        def send(data: bytes | str) -> None:
            if channel.readyState == "open":
                channel.send(data)

        client = Client(claims, send, "datachannel")
        self.interactions.connect(client)
        channel.on("message", lambda message: self.interactions.receive(client, message))
        channel.on("close", lambda: self.interactions.disconnect(client))

    def authenticate(self, token: str | None) -> Claims:
        """Who a client is: its token's claims, or an anonymous viewer where allowed."""
        if token is None:
            if self.cfg.interaction.allow_anonymous:
                return anonymous_claims(self._rng)
            raise AuthError("malformed", "a token is required")
        return verify(self.secret, token, time.time(), self._audiences)

    def health(self) -> dict[str, Any]:
        now = time.monotonic()
        age = now - self.hub.last_packet_at if self.hub.last_packet_at else None
        video_ok = age is not None and age < STALE_VIDEO_S
        # A spool that cannot commit is loud: summaries would be lost on a crash.
        spool_ok = self.spool is None or bool(self.spool.status().get("healthy", True))
        return {
            "status": "ok" if self.supervisor.alive and video_ok and spool_ok else "degraded",
            "node": self.cfg.node.id,
            "version": __version__,
            "uptime_s": round(now - self.started_at, 3),
            "worker": {
                "pid": self.supervisor.pid,
                "alive": self.supervisor.alive,
                "generation": self.supervisor.generation,
                "restarts": self.supervisor.restarts,
            },
            "video": {
                "source": self.hub.source,
                "last_packet_age_s": None if age is None else round(age, 3),
                "encoders": self.hub.encoders,
            },
            "viewers": self.hub.subscribers,
            "overlay": {"font": self.font_path, "missing_scripts": self.missing_scripts},
            "ingest": {
                "live": self.ingest.live.proto if self.ingest.live else None,
                "output": self._worker_stats.get("input", "fallback"),
                "rtmp_port": self.rtmp.port if self.rtmp else None,
                "worker_input": self._worker_stats.get("live_proto") or None,
                "rtsp": self._worker_stats.get("rtsp"),
                "decoded_frames": self._worker_stats.get("live_frames", 0),
                "decode_errors": self._worker_stats.get("live_decode_errors", 0),
                "skipped_before_keyframe": self._worker_stats.get(
                    "live_skipped_before_keyframe", 0
                ),
            },
            "push": self.push.status() if self.push else None,
            "cloud": self.link.status() if self.link else None,
            "spool": self.spool.status() if self.spool else None,
            "record": self.recorder.status() if self.recorder else None,
        }

    async def start(self) -> None:
        Path(self.cfg.node.data_dir).mkdir(parents=True, exist_ok=True)
        # The overlay font: an operator learns at start-up if Chinese (say) cannot show.
        self.missing_scripts = log_missing_scripts(self.font_path)
        restrict_ice_host_addresses(self.cfg.webrtc.host_addresses)
        install_passthrough_decoders()
        # WHIP ingest: a publisher's frame goes on at its last packet, not one frame
        # interval later when the next frame starts (aiortc's rule).
        install_marker_jitter_buffer()
        await self.supervisor.start()
        if self.rtmp is not None:
            await self.rtmp.start()
        if self.recorder is not None:
            await self.recorder.start()
        if self.push is not None:
            await self.push.start()
        if self.audience is not None:
            self._audience_task = asyncio.create_task(self._run_audience(self.audience))
        await self._start_cloud()
        self._runner = web.AppRunner(self.http_app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.cfg.http.host, self.cfg.http.port)
        await site.start()
        server = site._server
        if isinstance(server, asyncio.Server) and server.sockets:  # real port when 0 asked
            self.http_port = server.sockets[0].getsockname()[1]
        log.info(
            "edge-node started",
            extra={"node": self.cfg.node.id, "http_port": self.http_port, "version": __version__},
        )

    async def _start_cloud(self) -> None:
        cfg = self.cfg
        if cfg.cloud.embedded_collector:
            self.collector = await collector_mod.serve(
                cfg.cloud.embedded_collector, Path(cfg.node.data_dir) / "collector.db"
            )
        self.spool = await Spool.from_config(cfg, self.registry, merge=merge_spooled)
        self.windows = SummaryWindows(1, cfg.cloud.window_lateness_s)
        self.interactions.record = lambda rec: self.windows.add(rec, time.time())
        self.hub.on_event_latency = lambda s: self.windows.add_latency(s, time.time(), time.time())
        if cfg.cloud.target:
            self.link = CloudLink(
                cfg.cloud,
                cfg.node.id,
                self.spool,
                self.registry,
                apply_command=lambda cmd, args: self.interactions.command("cloud", cmd, args),
                platform_event=self._platform_event,
                backoff=Backoff(0.5, 10.0),
            )
            await self.link.start()
        self._summary_task = asyncio.create_task(self._run_summaries(), name="summaries")
        self._moderation_task = asyncio.create_task(self._run_moderation(), name="moderation")

    async def _run_moderation(self) -> None:
        """Once a second: fsync the audit log, follow the wall clock, and reload the word
        list when its file changed (a bad file is logged and the old list kept)."""
        path = self.cfg.moderation.words_file
        while True:
            await asyncio.sleep(1.0)
            self.audit.sync()
            self.engine.wall_offset = time.time() - time.monotonic()
            mtime = _mtime(path)
            if not path or mtime == self._words_mtime:
                continue
            self._words_mtime = mtime
            try:
                words = await asyncio.to_thread(WordList.from_file, path)
            except (WordListError, OSError) as exc:
                log.error("word list not reloaded, the old one stays: %s", exc)
                continue
            count = self.moderation.set_words(words, "file", time.time(), source=path)
            log.info("word list reloaded", extra={"path": path, "count": count})

    async def _run_summaries(self) -> None:
        """Close the windows that are due, spool them (each awaits its commit)."""
        assert self.spool is not None
        while True:
            await asyncio.sleep(0.25)
            closed = self.windows.close_due(
                time.time(), self._summary_health(), self.engine.summary_state()
            )
            for source, action in self.engine.take_actions():
                self.windows.add_action(source, action, time.time(), time.time())
            for summary in closed:
                payload = msgpack.packb(summary.to_payload(), use_bin_type=True)
                # Mergeable: when the spool is full, neighbouring windows join into one
                # (counts add: no gift, vote or entry is lost; see merge_spooled).
                try:
                    await self.spool.append("summary", payload, mergeable=True)
                except SpoolWriteError:
                    # Disk full or read-only: the record stays in memory and the writer
                    # retries it; /healthz and /metrics already say so. Keep windowing.
                    continue
                if self.link is not None:
                    self.link.wake()

    def _summary_health(self) -> dict[str, Any]:
        hub = self.hub
        cores, rss = self._cpu.cores([None, self.supervisor.pid], time.monotonic())
        return {
            "fps_in": round(hub.fps_in, 2),
            "viewers": hub.subscribers,
            "worker_restarts": self.supervisor.restarts,
            "encoders": hub.encoders,
            "spool_depth": self.spool.stats().depth if self.spool else 0,
            "cpu_cores": None if cores is None else round(cores, 3),
            "rss_mib": round(rss / 2**20, 1),
        }

    def _process_gauges(self, proc: str, read: Callable[[], ProcSample | None]) -> None:
        """CPU seconds and RSS of one process (0 while a worker is being restarted)."""
        self.registry.gauge(
            f"edge_node_{proc}_cpu_seconds",
            f"User + system CPU seconds of the {proc} process (since it started).",
            read=lambda: s.cpu_s if (s := read()) is not None else 0.0,
        )
        self.registry.gauge(
            f"edge_node_{proc}_resident_bytes",
            f"Resident memory of the {proc} process.",
            read=lambda: float(s.rss_bytes) if (s := read()) is not None else 0.0,
        )

    def _platform_event(self, kind: str, user: str, payload: dict[str, Any]) -> None:
        """Comments and gifts the platform relays: entered as the `platform` role."""
        claims = Claims(user=user or "platform", role="platform", exp=None)
        event_id = str(payload.get("id", ""))
        if kind == "gift":
            msg: Message = Gift(event_id, str(payload["gift"]), int(payload.get("n", 1)))
        elif kind == "comment":
            msg = Comment(event_id, str(payload["text"]))
        else:
            raise ValueError(f"unknown platform event type {kind!r}")
        self.interactions.submit(claims, msg)

    async def _run_audience(self, model: AudienceModel) -> None:
        step = 0.1
        while True:
            await asyncio.sleep(step)
            polls = [(p.poll, len(p.options)) for p in self.engine.polls.values() if not p.closed]
            for claims, msg in model.events(time.monotonic(), step, polls):
                self.interactions.submit(claims, msg)

    async def stop(self) -> None:
        """Drain within ``node.shutdown_deadline_s``, then stop whatever is left hard.

        Order: stop taking input (publishers, the simulated audience), spool the last
        summaries (the current window cut short and flagged ``partial``), give the
        cloud link what is left of half the deadline to deliver them, then close the
        viewers, the push, the recording and the worker. What the link did not deliver
        stays in the spool and goes out after the next start.
        """
        deadline = time.monotonic() + self.cfg.node.shutdown_deadline_s
        log.info("edge-node stopping", extra={"deadline_s": self.cfg.node.shutdown_deadline_s})
        try:
            await asyncio.wait_for(self._drain(deadline), max(0.1, deadline - time.monotonic()))
        except TimeoutError:
            log.error(
                "shutdown drain passed its deadline; stopping the rest now",
                extra={"deadline_s": self.cfg.node.shutdown_deadline_s},
            )
        await self._stop_rest()
        log.info("edge-node stopped")

    async def _drain(self, deadline: float) -> None:
        if self._audience_task is not None:
            self._audience_task.cancel()
        if self.rtmp is not None:
            await self.rtmp.stop()
        await self.whip.close_all()
        if self._summary_task is not None:
            self._summary_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._summary_task
            self._summary_task = None
        if self.spool is not None:
            for summary in self.windows.flush(
                time.time(), self._summary_health(), self.engine.summary_state()
            ):
                payload = msgpack.packb(summary.to_payload(), use_bin_type=True)
                with contextlib.suppress(SpoolWriteError):  # kept in memory, retried
                    await self.spool.append("summary", payload, mergeable=True)
            if self.link is not None and self.link.connected:
                self.link.wake()
                grace = time.monotonic() + (deadline - time.monotonic()) / 2
                while self.spool.stats().depth > 0 and time.monotonic() < grace:
                    await asyncio.sleep(0.05)
        self.interactions.close()
        await self.whep.close_all()

    async def _stop_rest(self) -> None:
        """Idempotent: what the drain did not reach (or everything, after a timeout).
        Each step is bounded, and one that hangs is named in the log, so a stop always
        ends and says where it was slow."""
        for task in (self._audience_task, self._summary_task, self._moderation_task):
            if task is not None:
                task.cancel()
        self.audit.close()
        self.interactions.close()
        steps: list[tuple[str, Callable[[], Awaitable[None]] | None]] = [
            ("cloud link", self.link.stop if self.link else None),
            ("spool", self.spool.close if self.spool else None),
            ("collector", self.collector.stop if self.collector else None),
            ("rtmp ingest", self.rtmp.stop if self.rtmp else None),
            ("rtmp push", self.push.stop if self.push else None),
            ("whep viewers", self.whep.close_all),
            ("whip publishers", self.whip.close_all),
            ("recording", self.recorder.stop if self.recorder else None),
            ("http", self._runner.cleanup if self._runner else None),
            ("media worker", self.supervisor.stop),
        ]
        for name, step in steps:
            if step is None:
                continue
            try:
                await asyncio.wait_for(step(), STOP_STEP_TIMEOUT_S)
            except TimeoutError:
                log.error("shutdown: %s did not stop within %.0f s", name, STOP_STEP_TIMEOUT_S)


def _mtime(path: str) -> float | None:
    try:
        return Path(path).stat().st_mtime if path else None
    except OSError:
        return None


def _open_moderation(cfg: Config) -> tuple[AuditLog, Moderation]:
    """The audit log (held comments come back from it) and the word list of the config;
    a word list that does not load stops the start, naming the key."""
    mc = cfg.moderation
    path = Path(mc.audit_path) if mc.audit_path else Path(cfg.node.data_dir) / "audit.jsonl"
    audit = AuditLog(path, fsync=mc.audit_fsync)  # type: ignore[arg-type]
    moderation = Moderation(audit, review=ReviewQueue(mc.review_capacity))
    held = moderation.restore(audit.read(), time.time())
    if held:
        log.info("comments still held for review", extra={"held": held})
    if mc.words_file:
        try:
            moderation.set_words(
                WordList.from_file(mc.words_file), "config", time.time(), mc.words_file
            )
        except (WordListError, OSError) as exc:
            raise ConfigError("moderation.words_file", str(exc)) from None
    return audit, moderation


async def serve(cfg: Config, banner: bool = False, audience: int = 0) -> None:
    node = Node(cfg, audience=audience)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await node.start()
    if banner:
        host = "127.0.0.1" if cfg.http.host in ("0.0.0.0", "::") else cfg.http.host
        base = f"http://{host}:{node.http_port}"
        now = int(time.time())
        operator = mint(node.secret, "demo-operator", "operator", 86400, now, cfg.auth.audience)
        tokens = "".join(
            f"  token {role:9} {mint(node.secret, f'demo-{role}', role, 86400, now, aud)}\n"
            for role, aud in [(r, cfg.auth.audience) for r in ROLES]
        )
        print(
            f"edge-node {__version__} demo running\n"
            f"  viewer (WHEP):   {base}/\n"
            f"  console:         {base}/console?token={operator}\n"
            f"  publish (WHIP):  {base}/publish  (stream key: {cfg.ingest.stream_key})\n"
            f"  interactions:    ws://{host}:{node.http_port}/ws?token=...\n"
            f"  RTMP publish:    rtmp://{host}:{node.rtmp.port if node.rtmp else '-'}/"
            f"{cfg.ingest.rtmp_app}/{cfg.ingest.stream_key}\n"
            f"  metrics, health: {base}/metrics  {base}/healthz\n"
            f"{tokens}"
            "Ctrl-C stops it.",
            flush=True,
        )
    notifier = Notifier()
    notifier.notify("READY=1")
    watchdog = (
        asyncio.create_task(_watchdog_pings(notifier, notifier.watchdog_s))
        if notifier.watchdog_s
        else None
    )
    try:
        await stop.wait()
    finally:
        notifier.notify("STOPPING=1")
        if watchdog is not None:
            watchdog.cancel()
        await node.stop()


async def _watchdog_pings(notifier: Notifier, period_s: float) -> None:
    """systemd's watchdog: a ping every half period while the event loop runs."""
    while True:
        notifier.notify("WATCHDOG=1")
        await asyncio.sleep(period_s / 2)

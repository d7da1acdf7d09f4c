"""Configuration: one TOML file plus ``EDGE_NODE_<SECTION>__<KEY>`` overrides.

The dataclasses below are the single source of truth: defaults, types, limits and
the documentation of every key live here. The example config under deploy/ and the
config reference are generated from them (``example_toml``). Every error names the
dotted key that is wrong.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_node.errors import ConfigError

ENV_PREFIX = "EDGE_NODE_"


def _key(
    default: Any,
    doc: str,
    *,
    min: float | None = None,
    max: float | None = None,
    choices: tuple[str, ...] | None = None,
) -> Any:
    meta = {"doc": doc, "min": min, "max": max, "choices": choices}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True, slots=True)
class NodeConfig:
    id: str = _key("edge-1", "Node id: names this box in logs, metrics and cloud summaries.")
    data_dir: str = _key("./edge-data", "Directory for the node's state (secrets, spool, records).")
    log_level: str = _key("info", "Log level.", choices=("debug", "info", "warning", "error"))
    log_format: str = _key(
        "json", "Log format: one JSON object per line, or plain text.", choices=("json", "text")
    )
    shutdown_deadline_s: float = _key(
        10.0,
        "On SIGTERM/SIGINT: seconds to drain (stop ingest, spool the last summaries, let the "
        "link deliver, close viewers) before the rest is stopped hard. Service managers "
        "should wait a little longer than this (systemd TimeoutStopSec, k8s "
        "terminationGracePeriodSeconds).",
        min=1.0,
        max=300.0,
    )


@dataclass(frozen=True, slots=True)
class HttpConfig:
    host: str = _key("0.0.0.0", "Address the HTTP server (pages, WHIP, WHEP, WS, metrics) binds.")
    port: int = _key(8080, "HTTP port (0 = any free port, printed at start).", min=0, max=65535)


@dataclass(frozen=True, slots=True)
class VideoConfig:
    width: int = _key(
        1280,
        "Output width in pixels (even; at least the 256 px of the barcode strip).",
        min=256,
        max=3840,
    )
    height: int = _key(720, "Output height in pixels (even).", min=32, max=2160)
    fps: int = _key(30, "Output frame rate.", min=1, max=120)
    bitrate_kbps: int = _key(2500, "Target H.264 bitrate in kbit/s.", min=100, max=50000)
    keyframe_interval_s: float = _key(
        2.0, "Longest time between keyframes, in seconds.", min=0.1, max=10.0
    )
    x264_preset: str = _key(
        "ultrafast",
        "libx264 preset; faster presets cost less CPU per frame.",
        choices=("ultrafast", "superfast", "veryfast", "faster", "fast", "medium"),
    )


@dataclass(frozen=True, slots=True)
class SourceConfig:
    kind: str = _key(
        "slate",
        'Video when no publisher is live: a "waiting for signal" slate, the synthetic '
        "test pattern (the demo's), or a looped file.",
        choices=("slate", "test_pattern", "file"),
    )
    path: str = _key("", 'Media file looped when kind = "file".')


@dataclass(frozen=True, slots=True)
class WebrtcConfig:
    host_addresses: list[str] = _key(
        [],
        "Local addresses offered as ICE host candidates; empty = every non-loopback "
        'interface. Set it on multi-homed boxes (or to ["127.0.0.1"] for local tests).',
    )
    max_viewers: int = _key(100, "Most WHEP sessions at once; more get 503.", min=1, max=10000)


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    frame_queue: int = _key(
        2,
        "Frames buffered between source and encoder; when full the oldest is dropped.",
        min=1,
        max=30,
    )
    restart_delay_max_s: float = _key(
        1.5,
        "Longest wait before restarting a media worker that keeps crashing.",
        min=0.0,
        max=2.0,
    )
    stall_timeout_s: float = _key(
        5.0,
        "A worker that sends nothing for this long is killed and restarted.",
        min=1.0,
        max=60.0,
    )
    start_timeout_s: float = _key(
        30.0,
        "A new worker's first message may take this long (imports; the numba blend kernels "
        "are compiled on the first start after an install and loaded from cache after).",
        min=1.0,
        max=300.0,
    )


@dataclass(frozen=True, slots=True)
class IngestConfig:
    stream_key: str = _key(
        "",
        "Stream key publishers must present (RTMP path /live/<key>, WHIP Bearer token). "
        'Required by `edge-node run`; the demo uses "demo".',
    )
    rtmp_host: str = _key("0.0.0.0", "Address the RTMP ingest listener binds.")
    rtmp_port: int = _key(1935, "RTMP ingest port; 0 turns RTMP ingest off.", min=0, max=65535)
    rtmp_app: str = _key("live", "RTMP application name: rtmp://host:port/<app>/<stream key>.")
    rtsp_url: str = _key(
        "",
        "IP camera to pull over RTSP (rtsp://user:pass@cam/stream); empty = off. When "
        "set, the camera is the live input and RTMP/WHIP publishers are refused.",
    )
    rtsp_transport: str = _key("tcp", "RTSP media transport.", choices=("tcp", "udp"))
    slate_after_s: float = _key(
        0.5,
        "Seconds without a live frame before the slate (or test pattern) replaces it.",
        min=0.1,
        max=10.0,
    )


@dataclass(frozen=True, slots=True)
class PushConfig:
    url: str = _key("", "RTMP URL to push the composited stream to (platform/CDN); empty = off.")
    backoff_initial_s: float = _key(
        0.5, "First reconnect delay after the push target drops.", min=0.05, max=60.0
    )
    backoff_max_s: float = _key(10.0, "Longest reconnect delay.", min=0.1, max=600.0)


@dataclass(frozen=True, slots=True)
class RecordConfig:
    enabled: bool = _key(False, "Record the composited stream to Matroska files.")
    dir: str = _key("", "Directory for recordings; empty = <node.data_dir>/recordings.")
    segment_s: float = _key(
        600.0,
        "Start a new file after this many seconds (at the next keyframe).",
        min=1.0,
        max=86400.0,
    )
    segment_mb: int = _key(
        1024, "Start a new file after this many MiB (at the next keyframe).", min=1, max=1048576
    )


@dataclass(frozen=True, slots=True)
class OverlayConfig:
    font_path: str = _key(
        "",
        "Font for overlay text; empty = the first CJK font found on the system "
        "(WenQuanYi Micro Hei, Noto Sans CJK, ...). A warning names any script it cannot draw.",
    )
    font_size_px: int = _key(32, "Danmaku text height in pixels.", min=8, max=200)
    lanes: int = _key(10, "Danmaku lanes.", min=1, max=50)
    lane_area: float = _key(
        0.66, "Share of the picture height, from the top, the lanes use.", min=0.1, max=1.0
    )
    speed_px_s: float = _key(
        160.0, "Danmaku base speed in pixels per second.", min=10.0, max=2000.0
    )
    max_on_screen: int = _key(
        60, "Most danmaku on screen at once; more wait for a lane.", min=1, max=1000
    )
    opacity: float = _key(1.0, "Overlay opacity.", min=0.0, max=1.0)
    safe_margin_px: int = _key(16, "Margin kept free at the picture's edges.", min=0, max=400)
    text_color: str = _key("#FFFFFFFF", "Danmaku text colour, #RRGGBB or #RRGGBBAA.")
    outline_color: str = _key("#000000C8", "Text outline colour, #RRGGBB or #RRGGBBAA.")
    highlight_color: str = _key("#FFD640FF", "Colour of gift senders' comments and alerts.")
    sprite_cache_mb: int = _key(64, "Memory for cached text sprites, in MiB.", min=1, max=4096)


@dataclass(frozen=True, slots=True)
class BenchConfig:
    probe: bool = _key(False, "Draw probe events as a barcode strip (latency benchmarks).")


@dataclass(frozen=True, slots=True)
class AuthConfig:
    secret_file: str = _key(
        "",
        "File holding the HMAC secret that signs access tokens; empty = "
        "<node.data_dir>/node.secret, created (mode 0600) on first start.",
    )
    token_ttl_s: int = _key(
        86400, "Lifetime of tokens `edge-node token` mints, in seconds.", min=60, max=31536000
    )
    audience: str = _key(
        "edge-node",
        'Token audience: tokens for "<audience>" or "<audience>:<node.id>" are accepted.',
    )


@dataclass(frozen=True, slots=True)
class InteractionConfig:
    allow_anonymous: bool = _key(
        False, "Let clients without a token chat as anonymous viewers (the demo does)."
    )
    allowed_origins: list[str] = _key(
        [],
        "Origins (scheme://host[:port]) allowed to open the WebSocket; empty = any.",
    )
    max_message_bytes: int = _key(
        65536, "Largest interaction message, checked before decoding.", min=256, max=1048576
    )
    comment_rate_per_s: float = _key(
        1.0, "Comments per second per user (token bucket rate).", min=0.01, max=10000.0
    )
    comment_burst: int = _key(3, "Comments a user may send at once.", min=1, max=100000)
    like_rate_per_s: float = _key(10.0, "Like messages per second per user.", min=0.01, max=10000.0)
    like_burst: int = _key(20, "Like messages a user may send at once.", min=1, max=100000)
    vote_rate_per_s: float = _key(
        2.0, "Votes and lottery entries per second per user.", min=0.01, max=10000.0
    )
    vote_burst: int = _key(4, "Votes a user may send at once.", min=1, max=100000)
    ip_rate_per_s: float = _key(
        50.0, "Messages per second per client address, all types.", min=0.01, max=100000.0
    )
    ip_burst: int = _key(100, "Messages one address may send at once.", min=1, max=1000000)
    max_connections_per_ip: int = _key(
        20, "Open WebSocket/data-channel connections per address.", min=1, max=100000
    )
    max_connections: int = _key(
        5000, "Open interaction connections in all; more are refused.", min=1, max=1000000
    )
    vote_change_allowed: bool = _key(
        True, "A viewer may change their vote while the poll is open (else: forbidden)."
    )
    max_events_per_s: float = _key(
        20000.0,
        "Admission control: events per second the whole node takes; beyond it "
        "clients get `busy` instead of a growing queue.",
        min=1.0,
        max=1e7,
    )
    idle_timeout_s: float = _key(
        120.0, "Close a connection that sends nothing for this long.", min=5.0, max=86400.0
    )


@dataclass(frozen=True, slots=True)
class ModerationConfig:
    words_file: str = _key(
        "",
        "Word list loaded at start and re-read when the file changes (no restart): "
        "*.json as the words.set command's list, otherwise one ACTION<TAB>PATTERN a line "
        "(ACTION block|mask|hold; # comments). Empty: start with no list (words.set sets one).",
    )
    review_capacity: int = _key(
        500,
        "Comments held for review at most; when full the oldest expires (audited).",
        min=1,
        max=100000,
    )
    audit_path: str = _key(
        "", "Append-only audit log (JSON lines); empty = <node.data_dir>/audit.jsonl."
    )
    audit_fsync: str = _key(
        "batch",
        "Audit log durability: every line is flushed at once (a crash of the process loses "
        "nothing); 'batch' fsyncs about once a second, 'write' after every line.",
        choices=("batch", "write"),
    )


@dataclass(frozen=True, slots=True)
class AnticheatConfig:
    enabled: bool = _key(
        True,
        "Detect abnormal viewer behaviour and restrict it automatically (each action is a "
        "review entry the operator can reverse: review.list / review.reject).",
    )
    detectors: str = _key(
        "rate,identical_text,like_burst,swarm",
        "Comma-separated detectors to run: rate (a user far above the room's comment "
        "rate), identical_text (one line from many accounts), like_burst, swarm (many "
        "fresh accounts saying one thing).",
    )
    rate_ceiling_per_s: float = _key(
        0.8, "Comments/s above which a user is restricted whatever they say.", min=0.05, max=100.0
    )
    rate_action: str = _key(
        "mute",
        "What the rate detector does: mute (the user is told) or shadow_drop (acked, not shown).",
        choices=("mute", "shadow_drop"),
    )
    rate_action_s: float = _key(
        60.0, "First restriction by the rate detector, doubled per repeat.", min=1.0, max=86400.0
    )
    text_min_users: int = _key(
        8, "Accounts sending one line (repeatedly) before it counts as a ring.", min=2, max=10000
    )
    text_action_s: float = _key(
        600.0, "Shadow-drop of a ring's comments, seconds.", min=1.0, max=86400.0
    )
    like_short_floor_per_s: float = _key(
        30.0,
        "Likes/s over ~3 s that no thumb sustains (the burst detector's floor).",
        min=1.0,
        max=100000.0,
    )
    like_action_s: float = _key(
        300.0, "Shadow-drop of a like-bot's likes, seconds.", min=1.0, max=86400.0
    )
    swarm_min_users: int = _key(
        10, "Fresh accounts saying one thing before they count as a swarm.", min=2, max=100000
    )
    swarm_action_s: float = _key(
        1800.0, "Shadow-drop of a swarm's events, seconds.", min=1.0, max=86400.0
    )
    whitelist_s: float = _key(
        3600.0,
        "A user whose restriction the operator reversed is exempt this long.",
        min=0.0,
        max=604800.0,
    )
    max_users: int = _key(
        50000, "Users whose behaviour is remembered (about 0.3 KB each).", min=100, max=10000000
    )


@dataclass(frozen=True, slots=True)
class CloudConfig:
    target: str = _key(
        "",
        "Collector to dial (host:port); empty = no cloud link. The demo dials its "
        "embedded collector at 127.0.0.1:50051.",
    )
    token: str = _key("", "Bearer token the collector expects (never logged).")
    tls: bool = _key(False, "Use TLS to the collector.")
    tls_ca: str = _key("", "CA bundle for the collector's certificate; empty = system roots.")
    tls_cert: str = _key("", "Client certificate for mTLS (PEM).")
    tls_key: str = _key("", "Client key for mTLS (PEM).")
    connect_timeout_s: float = _key(10.0, "Deadline to establish the stream.", min=0.5, max=120.0)
    window_lateness_s: float = _key(
        2.0,
        "How long a one-second window waits for late events before it is sent.",
        min=0.0,
        max=60.0,
    )
    embedded_collector: str = _key(
        "",
        "Run the reference collector in this process, listening here (the demo: "
        "127.0.0.1:50051, its database in the data dir); empty = none.",
    )


@dataclass(frozen=True, slots=True)
class SpoolConfig:
    path: str = _key(
        "",
        "SQLite file (WAL mode) holding cloud summaries until the cloud acks them; "
        "empty = <node.data_dir>/spool.db.",
    )
    durability: str = _key(
        "fsync",
        "When a record counts as stored: fsync = after its batch is fsynced (survives "
        "kill -9 and power loss); os = after the OS has it (survives kill -9; power loss "
        "may lose the last batches); memory = no syncs at all (survives kill -9; power "
        "loss may damage the file, which start-up then repairs; for tests and benchmarks).",
        choices=("fsync", "os", "memory"),
    )
    max_records: int = _key(
        1_000_000,
        "Records held before the spool counts as full. When full: mergeable records "
        "(likes and other counts) are merged, oldest first; when nothing is left to merge, "
        "new mergeable data goes into one overflow aggregate; gifts, votes and lottery "
        "entries are never dropped (kept beyond the bound). Every merge is counted.",
        min=100,
        max=100_000_000,
    )
    max_bytes: int = _key(
        512 * 1024 * 1024,
        "Payload bytes held before the spool counts as full (same policy as max_records).",
        min=1024 * 1024,
        max=1024**4,
    )
    max_age_s: float = _key(
        7 * 86400.0,
        "Mergeable records older than this are merged into one aggregate per kind; "
        "records that are not mergeable are kept whatever their age.",
        min=60.0,
        max=365 * 86400.0,
    )
    commit_interval_ms: int = _key(
        50, "Group commit: a batch is committed this long after its first record.", min=1, max=1000
    )
    commit_records: int = _key(
        1000,
        "Group commit: a batch is also committed as soon as it holds this many records.",
        min=1,
        max=100_000,
    )


@dataclass(frozen=True, slots=True)
class Config:
    node: NodeConfig = field(default_factory=NodeConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    video: VideoConfig = field(default_factory=VideoConfig)
    source: SourceConfig = field(default_factory=SourceConfig)
    webrtc: WebrtcConfig = field(default_factory=WebrtcConfig)
    worker: WorkerConfig = field(default_factory=WorkerConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    push: PushConfig = field(default_factory=PushConfig)
    record: RecordConfig = field(default_factory=RecordConfig)
    overlay: OverlayConfig = field(default_factory=OverlayConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    interaction: InteractionConfig = field(default_factory=InteractionConfig)
    moderation: ModerationConfig = field(default_factory=ModerationConfig)
    anticheat: AnticheatConfig = field(default_factory=AnticheatConfig)
    spool: SpoolConfig = field(default_factory=SpoolConfig)
    cloud: CloudConfig = field(default_factory=CloudConfig)


def _section_types() -> dict[str, type[Any]]:
    hints = typing.get_type_hints(Config)
    return {f.name: hints[f.name] for f in dataclasses.fields(Config)}


def _field_types(section: type[Any]) -> dict[str, Any]:
    return typing.get_type_hints(section)


def _coerce(key: str, tp: Any, value: Any) -> Any:
    """Check ``value`` against the annotated type; TOML and env values both arrive here."""
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(key, f"expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(key, f"expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(key, f"expected a finite number, got {value!r}")
            return float(value)
        raise ConfigError(key, f"expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(key, f"expected a string, got {value!r}")
    origin = typing.get_origin(tp)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(key, f"expected a list, got {value!r}")
        return [_coerce(f"{key}[{i}]", item_tp, v) for i, v in enumerate(value)]
    if isinstance(tp, types.UnionType):
        raise ConfigError(key, "union types are not supported in the schema")
    raise ConfigError(key, f"unsupported schema type {tp!r}")


def _parse_env(key: str, tp: Any, raw: str) -> Any:
    """Turn an environment string into the value the schema expects."""
    if tp is str:
        return raw
    if tp is bool:
        low = raw.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ConfigError(key, f"expected true or false, got {raw!r}")
    if tp is int:
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(key, f"expected an integer, got {raw!r}") from None
    if tp is float:
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(key, f"expected a number, got {raw!r}") from None
    if typing.get_origin(tp) is list:
        text = raw.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except json.JSONDecodeError as exc:
                raise ConfigError(key, f"expected a JSON list: {exc}") from None
        return [part.strip() for part in text.split(",") if part.strip()]
    raise ConfigError(key, f"cannot be set from the environment (type {tp!r})")


def _check_limits(key: str, f: dataclasses.Field[Any], value: Any) -> None:
    lo, hi, choices = f.metadata.get("min"), f.metadata.get("max"), f.metadata.get("choices")
    if lo is not None and value < lo:
        raise ConfigError(key, f"{value!r} is below the minimum {lo}")
    if hi is not None and value > hi:
        raise ConfigError(key, f"{value!r} is above the maximum {hi}")
    if choices is not None and value not in choices:
        raise ConfigError(key, f"{value!r} is not one of {', '.join(choices)}")


def _build_section(name: str, cls: type[Any], data: Mapping[str, Any]) -> Any:
    """Check the given keys of one section; returns the section with them applied."""
    hints = _field_types(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for k in data:
        if k not in fields:
            raise ConfigError(f"{name}.{k}", f"unknown key (known: {', '.join(fields)})")
    kwargs = {}
    for k, v in data.items():
        key = f"{name}.{k}"
        value = _coerce(key, hints[k], v)
        _check_limits(key, fields[k], value)
        kwargs[k] = value
    return cls(**kwargs)


def _validate_whole(cfg: Config) -> None:
    """Rules that involve more than one key."""
    if cfg.video.width % 2 or cfg.video.height % 2:
        key = "video.width" if cfg.video.width % 2 else "video.height"
        raise ConfigError(key, "must be even (yuv420p halves the chroma planes)")
    if cfg.ingest.rtsp_url and not cfg.ingest.rtsp_url.startswith(("rtsp://", "rtsps://")):
        raise ConfigError(
            "ingest.rtsp_url", f"expected an rtsp:// URL, got {cfg.ingest.rtsp_url!r}"
        )
    for key in ("text_color", "outline_color", "highlight_color"):
        try:
            parse_color(getattr(cfg.overlay, key))
        except ValueError as exc:
            raise ConfigError(f"overlay.{key}", str(exc)) from None
    if (cfg.cloud.tls_cert == "") != (cfg.cloud.tls_key == ""):
        raise ConfigError("cloud.tls_key", "mTLS needs both cloud.tls_cert and cloud.tls_key")
    if cfg.push.url and not cfg.push.url.startswith(("rtmp://", "rtmps://")):
        raise ConfigError("push.url", f"expected an rtmp:// URL, got {cfg.push.url!r}")
    if cfg.push.backoff_initial_s > cfg.push.backoff_max_s:
        raise ConfigError("push.backoff_initial_s", "must not exceed push.backoff_max_s")
    if cfg.source.kind == "file":
        if not cfg.source.path:
            raise ConfigError("source.path", 'required when source.kind = "file"')
        if not Path(cfg.source.path).is_file():
            raise ConfigError("source.path", f"no such file: {cfg.source.path}")
    if not cfg.auth.audience:
        raise ConfigError("auth.audience", "must not be empty")
    for i, origin in enumerate(cfg.interaction.allowed_origins):
        if not origin.startswith(("http://", "https://")) or origin.endswith("/"):
            raise ConfigError(
                f"interaction.allowed_origins[{i}]",
                f"expected an origin like https://example.com[:port], got {origin!r}",
            )


def parse_color(text: str) -> tuple[int, int, int, int]:
    """'#RRGGBB' or '#RRGGBBAA' -> (r, g, b, a)."""
    raw = text.removeprefix("#")
    if len(raw) not in (6, 8) or any(c not in "0123456789abcdefABCDEF" for c in raw):
        raise ValueError(f"{text!r} is not a colour like #RRGGBB or #RRGGBBAA")
    r, g, b = (int(raw[i : i + 2], 16) for i in (0, 2, 4))
    a = int(raw[6:8], 16) if len(raw) == 8 else 255
    return r, g, b, a


def merge_env(data: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """Apply ``EDGE_NODE_<SECTION>__<KEY>`` variables on top of the TOML data."""
    sections = _section_types()
    merged = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for var, raw in sorted(environ.items()):
        if not var.startswith(ENV_PREFIX) or "__" not in var:
            continue
        section, _, name = var[len(ENV_PREFIX) :].lower().partition("__")
        key = f"{section}.{name}"
        if section not in sections:
            raise ConfigError(key, f"unknown section in environment variable {var}")
        hints = _field_types(sections[section])
        if name not in hints:
            raise ConfigError(key, f"unknown key in environment variable {var}")
        target = merged.setdefault(section, {})
        if not isinstance(target, dict):
            raise ConfigError(section, "expected a table")
        target[name] = _parse_env(key, hints[name], raw)
    return merged


def from_mapping(data: Mapping[str, Any], base: Config | None = None) -> Config:
    """Build a Config from nested dicts (TOML layout) on top of ``base`` (defaults)."""
    base = base or Config()
    sections = _section_types()
    for name in data:
        if name not in sections:
            raise ConfigError(name, f"unknown section (known: {', '.join(sections)})")
    built = {}
    for name, cls in sections.items():
        given = data.get(name, {})
        if not isinstance(given, Mapping):
            raise ConfigError(name, f"expected a table, got {given!r}")
        checked = _build_section(name, cls, given)
        # Keys not given keep the base's values; given keys take their checked values.
        built[name] = dataclasses.replace(
            getattr(base, name), **{k: getattr(checked, k) for k in given}
        )
    cfg = Config(**built)
    _validate_whole(cfg)
    return cfg


def load(
    path: str | Path | None,
    environ: Mapping[str, str] | None = None,
    base: Config | None = None,
) -> Config:
    """Load a TOML file (or only defaults when ``path`` is None) plus env overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError("--config", f"no such file: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("--config", f"{path} is not valid TOML: {exc}") from None
    merged = merge_env(data, os.environ if environ is None else environ)
    return from_mapping(merged, base)


def demo_config() -> Config:
    """The embedded default of ``edge-node demo`` (before env overrides)."""
    return Config(
        node=NodeConfig(id="demo"),
        ingest=IngestConfig(stream_key="demo"),
        source=SourceConfig(kind="test_pattern"),
        bench=BenchConfig(probe=True),
        interaction=InteractionConfig(allow_anonymous=True),
        cloud=CloudConfig(target="127.0.0.1:50051", embedded_collector="127.0.0.1:50051"),
    )


def to_wire(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def from_wire(data: Mapping[str, Any]) -> Config:
    return from_mapping(data)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def example_toml() -> str:
    """The commented example config: every key, its default, its meaning and limits."""
    lines = [
        "# edge-node configuration: every key with its default.",
        "# Generated from edge_node/config.py (python -m edge_node.config > this file);",
        "# tests/test_config.py fails when the two disagree.",
        "# Any key can be overridden by EDGE_NODE_<SECTION>__<KEY>,",
        "# e.g. EDGE_NODE_HTTP__PORT=9090.",
    ]
    defaults = Config()
    for section in dataclasses.fields(Config):
        lines.append("")
        lines.append(f"[{section.name}]")
        sect = getattr(defaults, section.name)
        for f in dataclasses.fields(sect):
            meta = f.metadata
            limits = []
            if meta.get("min") is not None:
                limits.append(f"min {meta['min']}")
            if meta.get("max") is not None:
                limits.append(f"max {meta['max']}")
            if meta.get("choices"):
                limits.append("one of " + ", ".join(meta["choices"]))
            doc = meta["doc"] + (f" ({'; '.join(limits)})" if limits else "")
            lines.append(f"# {doc}")
            lines.append(f"{f.name} = {_toml_value(getattr(sect, f.name))}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(example_toml(), end="")

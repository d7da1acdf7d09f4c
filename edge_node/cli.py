"""The ``edge-node`` console script."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from edge_node import __version__, logs
from edge_node import config as config_mod
from edge_node.errors import ConfigError
from edge_node.interaction.auth import ROLES

if TYPE_CHECKING:
    from edge_node.cloud.collector import TlsFiles

DESCRIPTION = """\
edge-node: ingest a live stream, mix interactive overlays onto every frame,
encode once, fan out over WHEP.

verbs:
  demo          run on the embedded default (test pattern, probe on)
  run           production start from a TOML config
  check-config  validate a config file and exit
  token         print a signed access token (same secret as the node)
  collector     run the reference cloud collector (gRPC; SQLite or PostgreSQL)
  summaries     print the summaries a collector stored, oldest first
  command       send a command to a node through a collector, print its result
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edge-node",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"edge-node {__version__}")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)

    demo = verbs.add_parser("demo", help="run on the embedded default (test pattern, probe on)")
    demo.add_argument("--data-dir", help="state directory (default ./edge-data/)")
    demo.add_argument("--config", help="optional TOML applied on top of the demo defaults")
    demo.add_argument(
        "--audience",
        type=int,
        default=40,
        metavar="N",
        help="simulated viewers chatting, liking and voting (default 40; 0 = none)",
    )

    run = verbs.add_parser("run", help="production start from a TOML config")
    run.add_argument("--config", required=True, help="the node's TOML config file")

    check = verbs.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("file", help="TOML config file")

    token = verbs.add_parser("token", help="print a signed access token")
    token.add_argument("--user", required=True, help="user id (the token's subject)")
    token.add_argument("--role", required=True, choices=ROLES, help="the token's role")
    token.add_argument(
        "--ttl",
        type=_positive_int,
        metavar="SECONDS",
        help="lifetime in seconds (default auth.token_ttl_s, one day)",
    )
    where = token.add_mutually_exclusive_group()
    where.add_argument("--data-dir", help="the node's state directory (default ./edge-data/)")
    where.add_argument("--config", help="the node's TOML config (its data dir and secret)")

    collector = verbs.add_parser("collector", help="run the reference cloud collector")
    collector.add_argument(
        "--listen", required=True, metavar="HOST:PORT", help="gRPC address (port 0 = any free)"
    )
    store = collector.add_mutually_exclusive_group(required=True)
    store.add_argument(
        "--db",
        metavar="FILE|DSN",
        help="SQLite database file, or a postgresql:// (postgres://) DSN to store in "
        "PostgreSQL (needs the collector-pg extra); a password left out of the DSN is "
        "taken from PGPASSWORD or ~/.pgpass, as libpq does",
    )
    store.add_argument(
        "--db-dsn-file",
        metavar="F",
        help="read the PostgreSQL DSN from this file instead (keeps its password off the "
        "command line; make it readable by the collector only)",
    )
    collector.add_argument("--token", metavar="T", help="bearer token every caller must present")
    collector.add_argument("--tls-cert", metavar="F", help="server certificate chain (PEM)")
    collector.add_argument("--tls-key", metavar="F", help="server private key (PEM)")
    collector.add_argument(
        "--client-ca", metavar="F", help="CA of client certificates: require them (mTLS)"
    )

    summaries = verbs.add_parser("summaries", help="print a collector's stored summaries")
    summaries.add_argument(
        "--collector", required=True, metavar="HOST:PORT", help="the collector's gRPC address"
    )
    summaries.add_argument("--node", metavar="ID", help="only this node's summaries")
    summaries.add_argument(
        "--since", type=_unix_seconds, metavar="UNIX_S", help="only windows starting from then"
    )
    summaries.add_argument("--json", action="store_true", help="one JSON object per line")
    summaries.add_argument(
        "--rollup",
        type=int,
        choices=(10, 60),
        metavar="10|60",
        help="join the 1 s windows into 10 s or 60 s windows per node (counts add; "
        "`seqs` gives the first and last seq joined)",
    )
    _collector_client_flags(summaries)

    command = verbs.add_parser("command", help="send a command to a node, print its result")
    command.add_argument(
        "--collector", required=True, metavar="HOST:PORT", help="the collector's gRPC address"
    )
    command.add_argument("--node", required=True, metavar="ID", help="the target node")
    command.add_argument("--cmd", required=True, metavar="NAME", help="e.g. announce, poll.open")
    command.add_argument("--args", default="{}", metavar="JSON", help="arguments, a JSON object")
    command.add_argument(
        "--timeout",
        type=_positive_float,
        default=10.0,
        metavar="S",
        help="seconds to wait for the node's answer (default 10)",
    )
    _collector_client_flags(command)
    return p


def _collector_client_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--token", metavar="T", help="bearer token the collector requires")
    p.add_argument("--tls-ca", metavar="F", help="use TLS; CA of the collector's certificate")
    p.add_argument("--tls-cert", metavar="F", help="client certificate for mTLS (PEM)")
    p.add_argument("--tls-key", metavar="F", help="client private key for mTLS (PEM)")


def _unix_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected Unix seconds, got {text!r}") from None
    if not 0 <= value < 1e11:
        raise argparse.ArgumentTypeError(f"out of range: {text}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0 < value <= 300:
        raise argparse.ArgumentTypeError(f"must be in (0, 300], got {text}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a whole number of seconds, got {text!r}"
        ) from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def _token(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from edge_node.interaction import auth

    base = config_mod.Config()
    if args.data_dir:
        base = config_mod.from_mapping({"node": {"data_dir": args.data_dir}}, base)
    cfg = config_mod.load(args.config, base=base)
    path = auth.secret_path(Path(cfg.node.data_dir), cfg.auth.secret_file)
    try:
        secret = auth.load_or_create_secret(Path(cfg.node.data_dir), path=path)
    except OSError as exc:
        print(f"edge-node: cannot read or create the secret {path}: {exc}", file=sys.stderr)
        return 1
    ttl_s = args.ttl if args.ttl is not None else cfg.auth.token_ttl_s
    try:
        token = auth.mint(secret, args.user, args.role, ttl_s, time.time(), cfg.auth.audience)
    except ValueError as exc:
        print(f"edge-node: {exc}", file=sys.stderr)
        return 2
    print(token)
    return 0


def _collector(args: argparse.Namespace) -> int:
    import signal

    import uvloop

    from edge_node.cloud import collector as col

    if bool(args.tls_cert) != bool(args.tls_key):
        raise ConfigError("--tls-cert", "--tls-cert and --tls-key go together")
    if args.client_ca and not args.tls_cert:
        raise ConfigError("--client-ca", "needs --tls-cert and --tls-key (mTLS is TLS)")
    tls = col.TlsFiles(args.tls_cert, args.tls_key, args.client_ca) if args.tls_cert else None
    db = args.db if args.db is not None else _read_dsn_file(args.db_dsn_file)
    logs.setup("info", "json", process_role="collector")

    async def run() -> None:
        server = await col.serve(args.listen, db, token=args.token, tls=tls)
        # A DSN is shown without its password.
        where = server.store.location if col.is_dsn(db) else db
        print(f"edge-node collector listening on {server.address} (db {where})", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await server.stop()

    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(run())
    except col.CollectorError as exc:
        print(f"edge-node: {exc}", file=sys.stderr)
        return 2
    return 0


def _read_dsn_file(path: str) -> str:
    """The DSN in ``path`` (surrounding whitespace dropped); never echoes the file."""
    from edge_node.cloud import collector as col

    try:
        with open(path, encoding="utf-8") as fh:
            dsn = fh.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("--db-dsn-file", f"cannot read {path}: {exc}") from None
    if not col.is_dsn(dsn):
        raise ConfigError("--db-dsn-file", f"{path} must hold one postgresql:// or postgres:// DSN")
    return dsn


def _client_tls(args: argparse.Namespace) -> TlsFiles | None:
    from edge_node.cloud import collector as col

    if bool(args.tls_cert) != bool(args.tls_key):
        raise ConfigError("--tls-cert", "--tls-cert and --tls-key go together")
    if args.tls_cert and not args.tls_ca:
        raise ConfigError("--tls-cert", "needs --tls-ca (client certificates are for TLS)")
    if not args.tls_ca:
        return None
    return col.TlsFiles(args.tls_cert or "", args.tls_key or "", args.tls_ca)


def _collector_call(args: argparse.Namespace, call: Coroutine[Any, Any, int]) -> int:
    """Run one client coroutine on uvloop; a failed call is exit status 2."""
    import uvloop

    from edge_node.cloud import collector as col

    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(call)
    except col.CollectorCallError as exc:
        print(f"edge-node: collector {args.collector}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"edge-node: {exc}", file=sys.stderr)
        return 2


def _summaries(args: argparse.Namespace) -> int:
    import json
    from datetime import UTC, datetime

    from edge_node.cloud import collector as col
    from edge_node.cloud.summaries import rollup

    tls = _client_tls(args)
    since_ms = round(args.since * 1000) if args.since is not None else 0

    def show(row: dict[str, Any]) -> None:
        if args.json:
            print(json.dumps(row, ensure_ascii=False))
            return
        start = datetime.fromtimestamp(float(row["start"]), UTC)
        events = row.get("events") or {}
        what = "empty" if not events else json.dumps(events, separators=(",", ":"))
        seq = row.get("seq", row.get("seqs"))
        print(f"{row['node']}\t{seq}\t{start.isoformat()}\t{row['window_s']}s\t{what}")

    async def run() -> int:
        by_node: dict[str, list[dict[str, Any]]] = {}
        async with col.CollectorClient(args.collector, token=args.token, tls=tls) as client:
            async for s in client.query_summaries(node_id=args.node or "", since_ms=since_ms):
                row = col.summary_as_json(s)
                if args.rollup:
                    by_node.setdefault(str(row["node"]), []).append(row)
                else:
                    show(row)
        for node, rows in by_node.items():
            for rolled in rollup(rows, args.rollup):
                end = rolled["start"] + args.rollup
                joined = [int(r["seq"]) for r in rows if rolled["start"] <= int(r["start"]) < end]
                show({"node": node, "seqs": [min(joined), max(joined)], **rolled})
        return 0

    return _collector_call(args, run())


def _command(args: argparse.Namespace) -> int:
    import json

    from edge_node.cloud import collector as col

    try:
        parsed = json.loads(args.args)
    except json.JSONDecodeError as exc:
        raise ConfigError("--args", f"not JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise ConfigError("--args", "must be a JSON object")
    tls = _client_tls(args)

    async def run() -> int:
        async with col.CollectorClient(args.collector, token=args.token, tls=tls) as client:
            result = await client.send_command(
                args.node, args.cmd, json.dumps(parsed), timeout_s=args.timeout
            )
        print(json.dumps(col.result_as_json(result), ensure_ascii=False))
        return 0 if result.ok else 1

    return _collector_call(args, run())


def _run(cfg: config_mod.Config, banner: bool, audience: int = 0) -> int:
    import uvloop

    from edge_node.app import serve

    logs.setup(cfg.node.log_level, cfg.node.log_format)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(cfg, banner=banner, audience=audience))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.verb == "check-config":
            cfg = config_mod.load(args.file)
            print(
                f"{args.file}: ok (node {cfg.node.id}, http port {cfg.http.port}, "
                f"source {cfg.source.kind})"
            )
            return 0
        if args.verb == "token":
            return _token(args)
        if args.verb == "collector":
            return _collector(args)
        if args.verb == "summaries":
            return _summaries(args)
        if args.verb == "command":
            return _command(args)
        if args.verb == "demo":
            base = config_mod.demo_config()
            if args.data_dir:
                base = config_mod.from_mapping({"node": {"data_dir": args.data_dir}}, base)
            cfg = config_mod.load(args.config, base=base)
            if args.audience < 0:
                raise ConfigError("--audience", f"must be 0 or more, got {args.audience}")
            return _run(cfg, banner=True, audience=args.audience)
        cfg = config_mod.load(args.config)
        if not cfg.ingest.stream_key and not cfg.ingest.rtsp_url:
            raise ConfigError(
                "ingest.stream_key",
                "required by `run`: publishers must present a stream key "
                "(or set ingest.rtsp_url to pull a camera)",
            )
        return _run(cfg, banner=False)
    except ConfigError as exc:
        print(f"edge-node: {exc}", file=sys.stderr)
        return 2

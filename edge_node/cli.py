"""The ``edge-node`` console script."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from edge_node import __version__, logs
from edge_node import config as config_mod
from edge_node.errors import ConfigError
from edge_node.interaction.auth import ROLES

DESCRIPTION = """\
edge-node: ingest a live stream, mix interactive overlays onto every frame,
encode once, fan out over WHEP.

verbs:
  demo          run on the embedded default (test pattern, probe on)
  run           production start from a TOML config
  check-config  validate a config file and exit
  token         print a signed access token (same secret as the node)
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
    return p


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

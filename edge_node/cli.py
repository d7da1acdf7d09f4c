"""The ``edge-node`` console script."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from edge_node import __version__, logs
from edge_node import config as config_mod
from edge_node.errors import ConfigError

DESCRIPTION = """\
edge-node: ingest a live stream, mix interactive overlays onto every frame,
encode once, fan out over WHEP.

verbs:
  demo          run on the embedded default (test pattern, probe on)
  run           production start from a TOML config
  check-config  validate a config file and exit
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

    run = verbs.add_parser("run", help="production start from a TOML config")
    run.add_argument("--config", required=True, help="the node's TOML config file")

    check = verbs.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("file", help="TOML config file")
    return p


def _run(cfg: config_mod.Config, banner: bool) -> int:
    import uvloop

    from edge_node.app import serve

    logs.setup(cfg.node.log_level, cfg.node.log_format)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(cfg, banner=banner))
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
        if args.verb == "demo":
            base = config_mod.demo_config()
            if args.data_dir:
                base = config_mod.from_mapping({"node": {"data_dir": args.data_dir}}, base)
            cfg = config_mod.load(args.config, base=base)
            return _run(cfg, banner=True)
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

"""Health probe for edge-node in a container: GET /healthz on the node's own HTTP port.

Installed in the image as ``edge-node-healthcheck``. Two questions, two modes:

- default: is the node fully working? Only 200 passes; 503 ("degraded": no video
  for 2 s, media worker down, spool cannot commit) fails. Docker's HEALTHCHECK uses
  it, so ``docker ps`` shows a degraded node as unhealthy.
- ``--alive``: does the control process still answer at all? 200 and 503 both pass.
  Kubernetes' liveness probe uses it: restarting a node because its spool disk is
  full or its worker is being restarted would drop every viewer and fix nothing,
  while a control process that no longer answers (a hung event loop) is restarted.

The address comes from the node's own config loader (``--config``, plus the
``EDGE_NODE_*`` overrides of the environment), so the probe follows ``http.port``
and ``http.host``; ``--url`` bypasses the config. Exit status 0 = pass, 1 = fail
(the convention of both Docker and Kubernetes), with one line saying why.
Standard library only, besides the node's config module.
"""

from __future__ import annotations

import argparse
import http.client
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence

from edge_node import config as config_mod
from edge_node.errors import ConfigError

DEFAULT_CONFIG = "/etc/edge-node/edge-node.toml"
HEALTH_PATH = "/healthz"
# Statuses that show the control process answered: degraded is still alive.
ALIVE_STATUSES = (200, 503)


def healthz_url(cfg: config_mod.Config) -> str:
    """The /healthz URL of the node configured by ``cfg``, as seen from inside its box."""
    host = cfg.http.host
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{cfg.http.port}{HEALTH_PATH}"


def check(url: str, *, alive: bool, timeout_s: float) -> tuple[bool, str]:
    """(passed, why) for one GET of ``url``."""
    accepted = ALIVE_STATUSES if alive else (200,)
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            status = int(resp.status)
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        return False, f"{url}: no answer ({reason})"
    if status in accepted:
        return True, f"{url}: {status}"
    return False, f"{url}: {status} (passes: {', '.join(map(str, accepted))})"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edge-node-healthcheck",
        description="GET the node's /healthz; exit 0 when it passes, 1 when it does not.",
    )
    p.add_argument(
        "--alive",
        action="store_true",
        help="pass on 503 (degraded) too: only check that the control process answers",
    )
    p.add_argument(
        "--config",
        default=DEFAULT_CONFIG,
        help=f"the node's TOML config, for http.host and http.port (default {DEFAULT_CONFIG})",
    )
    p.add_argument("--url", help="probe this URL instead of the configured one")
    p.add_argument(
        "--timeout", type=float, default=4.0, metavar="S", help="seconds to wait (default 4)"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.url:
        url = args.url
    else:
        try:
            url = healthz_url(config_mod.load(args.config))
        except ConfigError as exc:
            print(f"edge-node-healthcheck: {exc}", file=sys.stderr)
            return 1
    passed, why = check(url, alive=args.alive, timeout_s=args.timeout)
    print(why, file=sys.stdout if passed else sys.stderr)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())

"""The node serves its pages and their assets itself, with a policy that lets them load
nothing from anywhere else."""

from __future__ import annotations

import re

import aiohttp
import pytest

from edge_node.server.http import PAGES, load_web_files
from tests.conftest import NodeProcess

pytestmark = pytest.mark.timeout(60)


async def test_pages_and_assets_are_served_with_a_strict_policy(node: NodeProcess) -> None:
    async with aiohttp.ClientSession() as http:
        for path in PAGES:
            async with http.get(node.url + path) as resp:
                assert resp.status == 200, path
                assert resp.content_type == "text/html"
                policy = resp.headers["Content-Security-Policy"]
                assert "script-src 'self'" in policy and "connect-src 'self'" in policy
                assert ("frame-ancestors 'none'" in policy) == (path != "/")
                assert resp.headers["Referrer-Policy"] == "no-referrer"
                html = await resp.text()
            # Everything a page loads is the node's own, and exists.
            for ref in re.findall(r'(?:src|href)="([^"]+)"', html):
                if ref.startswith("data:"):
                    continue
                assert ref.startswith("/static/"), (path, ref)
                async with http.get(node.url + ref) as asset:
                    assert asset.status == 200, ref
        async with http.get(node.url + "/static/common.js") as resp:
            assert resp.content_type == "text/javascript"
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
        for bad in ("/static/nope.js", "/static/index.html", "/static/..%2Fserver.py"):
            async with http.get(node.url + bad) as resp:
                assert resp.status == 404, bad
                assert (await resp.json())["field"] == "path"


def test_every_module_import_resolves_to_a_served_file() -> None:
    files = load_web_files()
    for name, body in files.items():
        if not name.endswith(".js"):
            continue
        for target in re.findall(r'from "(/static/[^"]+)"', body.decode()):
            assert target.removeprefix("/static/") in files, (name, target)

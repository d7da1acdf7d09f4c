"""The committed code in edge_node/cloud/_proto/ is what ``python proto/generate.py``
makes from proto/ today: edit the .proto, forget to regenerate, and this fails."""

from __future__ import annotations

import difflib
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "edge_node" / "cloud" / "_proto"


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    out = tmp_path / "_proto"
    done = subprocess.run(
        [sys.executable, "proto/generate.py", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    fresh = {p.name: p.read_text(encoding="utf-8") for p in out.iterdir() if p.is_file()}
    committed = {
        p.name: p.read_text(encoding="utf-8")
        for p in COMMITTED.iterdir()
        if p.is_file() and p.suffix in (".py", ".pyi")
    }
    assert set(fresh) == set(committed), "files differ: run `python proto/generate.py`"
    for name, text in sorted(fresh.items()):
        if text != committed[name]:
            diff = "".join(
                difflib.unified_diff(
                    committed[name].splitlines(keepends=True),
                    text.splitlines(keepends=True),
                    f"committed/{name}",
                    f"generated/{name}",
                )
            )
            raise AssertionError(
                f"edge_node/cloud/_proto/{name} is stale: run `python proto/generate.py`"
                f" (with the pinned grpcio-tools)\n{diff[:4000]}"
            )


def test_generated_code_imports_as_a_subpackage() -> None:
    from edge_node.cloud._proto import edge_pb2, edge_pb2_grpc

    assert edge_pb2.DESCRIPTOR.package == "edge_node.v1"
    assert edge_pb2_grpc.edge__node_dot_v1_dot_edge__pb2 is edge_pb2
    assert {s.name for s in edge_pb2.DESCRIPTOR.services_by_name.values()} == {
        "EdgeLink",
        "Collector",
    }

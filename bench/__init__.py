"""The benchmark suite: ``python -m bench list | run | compare``.

Starts (or attaches to) a node, drives it from separate processes (WHEP viewers, later
publishers and interaction clients), samples the node's CPU and memory from /proc,
reads its /metrics, and writes report.json, report.md and PNG plots. Never imports the
node's internals beyond its public clients and version: the bench measures the node
from the outside, the way an operator would.
"""

REPORT_SCHEMA = 1

"""The cloud side of a node: what leaves the venue box, how it survives outages, and
the reference collector that receives it.

- ``summaries``: the one-second windows (sans-I/O).
- ``spool_state``: the durable spool's sequence logic (sans-I/O: inputs and ``now`` in,
  effects out); ``spool``: its SQLite store, group-commit writer thread and asyncio
  adapter. A summary counts as sent only after it is stored, and leaves only once
  the collector acks it.
- ``link``: the node's gRPC client; ``collector``: the reference collector.
- ``_proto``: generated code, never edited by hand.

Nothing here may block the event loop.
"""

"""The cloud link: what leaves the venue box for the cloud, and how it survives outages.

``spool_state`` is the durable spool's sequence logic (sans-I/O: inputs and ``now`` in,
effects out); ``spool`` is its SQLite store, the group-commit writer thread and the
asyncio adapter the rest of the node uses. Nothing here may block the event loop.
"""

"""edge-node: a low-latency edge stream-processing node."""

__version__ = "0.1.0"

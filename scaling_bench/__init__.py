"""scaling-bench: what happens to a network's cost and behaviour as its parameter count grows."""

__version__ = "0.1.0"

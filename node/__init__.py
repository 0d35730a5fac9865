"""Agora node runtime: what every role shares, and the daemon that composes them."""

__version__ = "0.1.0"

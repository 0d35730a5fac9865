"""Agora tests: unit, integration (real nodes on loopback) and end-to-end."""

"""Run a real in-process Node on loopback in a background event loop, for synchronous tests."""

from __future__ import annotations

import asyncio
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from node.app import Node, NodeAddresses
from node.config import Settings, load_settings


def loopback_settings(**sections: dict[str, Any]) -> Settings:
    """Plaintext loopback settings on free ports and a fresh data dir, with section overrides merged in."""
    data_dir = tempfile.mkdtemp(prefix="agora-test-node-")
    base: dict[str, dict[str, Any]] = {
        "node": {"listen": "127.0.0.1:0", "drain_notice_s": 0.0, "data_dir": data_dir},
        "metrics": {"listen": "127.0.0.1:0"},
        "security": {"insecure": True},
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    return load_settings(overrides=base)


@contextmanager
def running_node(node: Node) -> Iterator[NodeAddresses]:
    """Start ``node`` on a private event loop in a thread; stop it gracefully on exit."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="node-loop", daemon=True)
    thread.start()
    try:
        addresses = asyncio.run_coroutine_threadsafe(node.start(), loop).result(timeout=30)
        try:
            yield addresses
        finally:
            asyncio.run_coroutine_threadsafe(node.stop(), loop).result(timeout=60)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()

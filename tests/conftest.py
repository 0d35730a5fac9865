"""Shared test fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _no_agora_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Tests start from defaults: AGORA_* variables of the caller's shell must not leak in."""
    for key in list(os.environ):
        if key.startswith("AGORA_"):
            monkeypatch.delenv(key)
    yield

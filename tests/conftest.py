"""Shared test fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _no_agora_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Tests start from defaults: AGORA_* variables of the caller's shell must not leak in."""
    for key in list(os.environ):
        if key.startswith("AGORA_"):
            monkeypatch.delenv(key)
    yield


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Tiny models on one intra-op thread: with two, a loaded 2-core CI machine runs them 10-30x
    slower (each op's threads wait on each other), and tests run nodes and models side by side."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def page_model(tmp_path_factory: pytest.TempPathFactory, _one_torch_thread: None) -> Path:
    """A tiny arithmetic teacher model trained on public Exemplify pages (tests.teachers.pages),
    built once per session: it writes "X\\nOutput: Y" after an "Input:" prompt."""
    from tests.teachers import train_page_model  # imports torch: only for the tests that use it

    return train_page_model(tmp_path_factory.mktemp("page-model") / "model")

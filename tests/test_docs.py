"""The README documents every setting, metric and command, so docs cannot drift from code."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from node.config import Settings
from node.metrics import NodeMetrics

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_readme_opens_with_the_two_commands() -> None:
    first_block = README.split("```")[1]
    commands = [line.split("#")[0].strip() for line in first_block.splitlines()[1:] if line.strip()]
    assert commands == ["make demo", "make test"]


def test_every_setting_is_in_the_readme() -> None:
    missing = []
    for section_name, field in Settings.model_fields.items():
        section_type = field.annotation
        assert isinstance(section_type, type) and issubclass(section_type, BaseModel)
        for name in section_type.model_fields:
            if f"`{section_name}.{name}`" not in README:
                missing.append(f"{section_name}.{name}")
    assert missing == []


def test_every_agora_metric_is_in_the_readme() -> None:
    exposed = {
        family.name + ("_total" if family.type == "counter" else "")  # as Prometheus sees counters
        for family in NodeMetrics(model="tiny:llama").registry.collect()
        if family.name.startswith("agora_")
    }
    assert "agora_rpc_requests_total" in exposed
    assert sorted(name for name in exposed if f"`{name}`" not in README) == []

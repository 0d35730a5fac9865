"""A teacher's private data: per-task JSONL files of {input, output} records, and its canaries.

Nothing here is ever sent or logged: lesson makers read records to build shard prompts and
votes, and the leakage guard reads them to block lessons that come too close. Errors name the
file and line, never the content.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from node.config import ConfigError


@dataclass(frozen=True)
class PrivateRecord:
    input: str
    output: str

    @property
    def text(self) -> str:
        """The record as the guard compares lessons with it."""
        return f"{self.input}\n{self.output}"


def read_records(path: Path) -> list[PrivateRecord]:
    """The records of one JSONL file; ConfigError naming the file and line on bad content."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeError) as exc:
        raise ConfigError(
            f"teacher.private_data: cannot read {path}: {getattr(exc, 'strerror', None) or exc}"
        ) from None
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise ConfigError(f"teacher.private_data: {path} line {number} is not JSON") from None
        if not isinstance(row, dict) or not isinstance(row.get("input"), str) or not isinstance(row.get("output"), str):
            raise ConfigError(f'teacher.private_data: {path} line {number} needs string "input" and "output" fields')
        records.append(PrivateRecord(row["input"], row["output"]))
    return records


class PrivateData:
    """Every task's private records, loaded once at start."""

    def __init__(self, records: Mapping[str, list[PrivateRecord]]) -> None:
        self._records = dict(records)

    @classmethod
    def load(cls, files: Mapping[str, Path], tasks: list[str]) -> PrivateData:
        unknown = sorted(set(files) - set(tasks))
        if unknown:
            raise ConfigError(f"teacher.private_data names tasks this node does not teach: {', '.join(unknown)}")
        return cls({task: read_records(path) for task, path in files.items()})

    def records(self, task: str) -> list[PrivateRecord]:
        return list(self._records.get(task, []))

    def texts(self) -> list[str]:
        """Every record of every task: a lesson of one task must not leak another's either."""
        return [record.text for records in self._records.values() for record in records]

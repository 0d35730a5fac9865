"""The command line: complete help for every command, version, console script."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from node import __version__
from node.cli import build_parser, main


def _parsers(parser: argparse.ArgumentParser, prefix: str = "agora") -> list[tuple[str, argparse.ArgumentParser]]:
    found = [(prefix, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _parsers(sub, f"{prefix} {name}")
    return found


def test_every_command_and_option_has_help() -> None:
    parsers = _parsers(build_parser())
    assert {name for name, _ in parsers} >= {"agora run", "agora health", "agora config show", "agora config schema"}
    for name, parser in parsers:
        assert parser.description, f"`{name}` has no description"
        for action in parser._actions:
            assert action.help, f"`{name}` option {action.option_strings or action.dest} has no help"


@pytest.mark.parametrize("command", [[], ["run"], ["health"], ["config"], ["config", "show"], ["config", "schema"]])
def test_help_exits_zero(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main([*command, "--help"])
    assert done.value.code == 0
    assert "usage: agora" in capsys.readouterr().out


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["health"])  # --address is required
    assert done.value.code == 2
    assert "--address" in capsys.readouterr().err


def test_health_of_nothing_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    """No node at the address: a clear UNREACHABLE line and exit code 1."""
    assert main(["health", "--address", "127.0.0.1:1", "--timeout", "1"]) == 1
    assert "127.0.0.1:1: UNREACHABLE" in capsys.readouterr().out


def test_health_mtls_needs_all_three_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["health", "--address", "127.0.0.1:1", "--ca", str(tmp_path / "ca.pem")]) == 2
    assert "needs all of --ca, --cert and --key" in capsys.readouterr().err


def test_console_script_is_installed() -> None:
    script = shutil.which("agora", path=str(Path(sys.executable).parent))
    assert script is not None
    result = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=60, check=False)
    assert result.stdout.strip() == f"agora {__version__}"

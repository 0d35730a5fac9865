"""Config: precedence (defaults < file < env < flags) and one clear message per kind of mistake."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from node.cli import main
from node.config import ConfigError, Settings, load_settings

LOOPBACK = "security:\n  insecure: true\n"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def agora(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a child process, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "node.cli", *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )


def test_defaults_are_complete_and_documented() -> None:
    """Every field of every section has a default and a one-line description."""
    settings = Settings()
    assert settings.node.listen == "127.0.0.1:50051"
    schema = Settings.model_json_schema()
    for section_name, section in schema["$defs"].items():
        for field_name, field in section["properties"].items():
            assert field.get("description"), f"{section_name}.{field_name} has no description"
            assert "\n" not in field["description"]
    expected = {"node", "model", "peers", "security", "privacy", "metrics", "teacher", "student"}
    assert set(schema["properties"]) == expected


def test_precedence_file_then_env_then_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write(tmp_path / "node.yaml", "node:\n  name: from-file\n  listen: 127.0.0.1:7001\n" + LOOPBACK)
    only_file = load_settings(config)
    assert (only_file.node.name, only_file.node.listen) == ("from-file", "127.0.0.1:7001")

    monkeypatch.setenv("AGORA_NODE__NAME", "from-env")
    monkeypatch.setenv("AGORA_PEERS__SEEDS", '["10.0.0.1:7000", "dns:///agora.default.svc:7000"]')
    with_env = load_settings(config)
    assert with_env.node.name == "from-env"
    assert with_env.node.listen == "127.0.0.1:7001"  # untouched by env, still from the file
    assert with_env.peers.seeds == ["10.0.0.1:7000", "dns:///agora.default.svc:7000"]

    with_flag = load_settings(config, {"node": {"name": "from-flag"}})
    assert with_flag.node.name == "from-flag"
    assert with_flag.node.listen == "127.0.0.1:7001"
    assert with_flag.peers.seeds == with_env.peers.seeds


def test_precedence_through_the_cli(tmp_path: Path) -> None:
    """The same order holds for `agora config show`, with --set as the flag."""
    config = write(tmp_path / "node.yaml", "node:\n  name: from-file\n  roles: [teacher]\n" + LOOPBACK)
    env = {"PATH": "/usr/bin:/bin", "AGORA_NODE__NAME": "from-env", "AGORA_METRICS__LISTEN": "127.0.0.1:9999"}
    shown = agora(
        "config", "show", "--config", str(config), "--set", "node.name=from-flag", "--format", "json", env=env
    )
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["node"]["name"] == "from-flag"
    assert data["node"]["roles"] == ["teacher"]
    assert data["metrics"]["listen"] == "127.0.0.1:9999"


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("node:\n  max_message_bytes: lots\n", "node.max_message_bytes: Input should be a valid integer"),
        ("node:\n  nmae: alice\n", "node.nmae: unknown setting"),
        ("nodes:\n  name: alice\n", "nodes: unknown setting"),
        ("node:\n  roles: [teacher, janitor]\n", "node.roles.1: Input should be 'teacher' or 'student'"),
        ("node:\n  listen: localhost\n", "node.listen"),
        ("model:\n  dim: 100\n  heads: 3\n", "model.heads (3) must divide model.dim (100)"),
        ("node: [a, b]\n", "node: Input should be a valid dictionary"),
        ("peers:\n  dead_after_s: 2\n", "peers.dead_after_s (2) must exceed peers.ping_interval_s x"),
        ("peers:\n  forget_after_s: 10\n", "peers.forget_after_s (10) must exceed peers.dead_after_s (15)"),
        ("peers:\n  seeds: ['dns:///agora']\n", "peers.seeds: expected HOST:PORT"),
        ("security:\n  allow: [bob, 'not a name!']\n", "'not a name!' is neither a node id (64 hex digits) nor"),
        ("node:\n  listen: 0.0.0.0:5000\n", "set node.advertise to the HOST:PORT peers should dial"),
        ("node:\n  advertise: '[::]:5000'\n", "is a wildcard address; advertise one that peers can dial"),
    ],
    ids=[
        "wrong-type",
        "unknown-key",
        "unknown-section",
        "bad-choice",
        "bad-address",
        "cross-field",
        "not-a-mapping",
        "dead-before-suspect",
        "forget-before-dead",
        "bad-seed",
        "bad-allow",
        "wildcard-unadvertised",
        "wildcard-advertised",
    ],
)
def test_invalid_values_name_the_field(tmp_path: Path, yaml_text: str, expected: str) -> None:
    config = write(tmp_path / "node.yaml", yaml_text)
    with pytest.raises(ConfigError) as error:
        load_settings(config)
    assert expected in str(error.value)
    assert str(config) in str(error.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config file .*absent\.yaml does not exist"):
        load_settings(tmp_path / "absent.yaml")


def test_bad_yaml_gives_the_position(tmp_path: Path) -> None:
    config = write(tmp_path / "node.yaml", "node:\n  name: alice\n  roles: [teacher\n")
    with pytest.raises(ConfigError, match=r"is not valid YAML at line \d+, column \d+"):
        load_settings(config)


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    config = write(tmp_path / "node.yaml", "- node\n- model\n")
    with pytest.raises(ConfigError, match="must hold a mapping of sections"):
        load_settings(config)


def test_bad_env_value_names_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGORA_NODE__SHUTDOWN_GRACE_S", "soon")
    with pytest.raises(ConfigError, match=r"node\.shutdown_grace_s: Input should be a valid number"):
        load_settings()


def test_plaintext_only_on_loopback() -> None:
    with pytest.raises(ConfigError, match="allowed only on loopback"):
        load_settings(overrides={"security": {"insecure": True}, "node": {"listen": "0.0.0.0:7000"}})
    assert load_settings(overrides={"security": {"insecure": True}, "node": {"listen": "[::1]:7000"}})


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"node.yaml": "node:\n  nmae: x\n"}, "node.nmae: unknown setting"),
        ({"node.yaml": "node: {name: [\n"}, "is not valid YAML"),
        ({}, "does not exist"),
        ({"node.yaml": "node:\n  max_message_bytes: lots\n"}, "node.max_message_bytes"),
    ],
    ids=["unknown-key", "bad-yaml", "missing-file", "wrong-type"],
)
def test_cli_reports_one_message_and_exit_code_2(tmp_path: Path, files: dict[str, str], message: str) -> None:
    """A user's mistake is one line on stderr and exit code 2: no traceback, for run and show."""
    for name, text in files.items():
        write(tmp_path / name, text)
    for command in (["config", "show"], ["run"]):
        result = agora(*command, "--config", str(tmp_path / "node.yaml"))
        assert result.returncode == 2, result.stderr
        assert message in result.stderr
        assert "Traceback" not in result.stderr + result.stdout
        assert result.stderr.startswith(f"agora {command[0]}: ")


def test_bad_set_override_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "show", "--set", "name"]) == 2
    assert "--set expects SECTION.FIELD=VALUE" in capsys.readouterr().err


def test_schema_is_json_with_every_section(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["$defs"]["NodeSection"]["properties"]["listen"]["default"] == "127.0.0.1:50051"

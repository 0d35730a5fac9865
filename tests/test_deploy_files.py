"""The deployment files (deploy/) agree with the real CLI, config loader and Prometheus.

No Docker daemon is assumed: compose.yaml, the Dockerfile and prometheus.yml are checked as
files, every `agora` command in them is parsed by the real argparse parser, every node config by
the real config loader, and the certs service's script is run for real against temporary
directories standing in for its volumes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from cryptography import x509

from node.cli import build_parser
from node.config import Settings, load_settings, split_host_port

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"
AGORA_IMAGE = "agora:local"
NODE_ROLES = {"teacher": "teacher", "student-1": "student", "student-2": "student"}
NODE_COMMANDS = {"teacher": "run", "student-1": "learn", "student-2": "learn"}
SHELLS = {"sh", "/bin/sh", "bash", "/bin/bash"}
SHELL_SEPARATORS = {"||", "&&", ";", "|", "&"}


# --- helpers -----------------------------------------------------------------------------------


def _compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict), "compose.yaml must be a mapping"
    return data


def _services() -> dict[str, dict[str, Any]]:
    services = _compose().get("services")
    assert isinstance(services, dict) and services, "compose.yaml has no services"
    return services


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, rest = (pending + line).partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        pending = ""
    return instructions


def _runtime_stage() -> list[tuple[str, str]]:
    """The instructions of the last stage: the image that is run."""
    instructions = _dockerfile_instructions()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def _exec_form(keyword: str) -> list[str]:
    values = [rest for kw, rest in _runtime_stage() if kw == keyword]
    assert values, f"the Dockerfile's final stage has no {keyword}"
    argv = json.loads(values[-1])  # only the exec (JSON) form is accepted: no shell in between
    assert isinstance(argv, list) and all(isinstance(a, str) for a in argv)
    return argv


def _parse_agora(argv: list[str], where: str) -> argparse.Namespace:
    assert argv and argv[0] == "agora", f"{where}: not an agora command: {argv}"
    try:
        return build_parser().parse_args(argv[1:])
    except SystemExit as exc:  # argparse exits on bad arguments (and on --help)
        pytest.fail(f"{where}: `{shlex.join(argv)}` is not a valid agora command line (exit {exc.code})")


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return shlex.split(value)
    assert isinstance(value, list)
    return [str(v) for v in value]


def _service_argv(service: dict[str, Any]) -> list[str]:
    """What the container runs: its entrypoint (or the image's) followed by its command (or the image's)."""
    entrypoint = _as_list(service["entrypoint"]) if "entrypoint" in service else _exec_form("ENTRYPOINT")
    command = _as_list(service["command"]) if "command" in service else _exec_form("CMD")
    return entrypoint + command


def _shell_commands(script: str) -> Iterator[list[str]]:
    """Every simple command of a shell script, split at ;, &&, || and |."""
    for line in script.splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        lexer.commenters = "#"
        command: list[str] = []
        for token in lexer:
            if token in SHELL_SEPARATORS:
                if command:
                    yield command
                command = []
            else:
                command.append(token)
        if command:
            yield command


def _agora_invocations(name: str, service: dict[str, Any]) -> list[list[str]]:
    argv = _service_argv(service)
    if argv and argv[0] in SHELLS:
        script = argv[-1]
        commands = list(_shell_commands(script))
        found = [c for c in commands if c[0] == "agora"]
        # An agora call the splitter did not isolate (e.g. inside $(...)) would escape the check.
        mentions = sum(token == "agora" for c in commands for token in c)
        assert mentions == len(found), f"{name}: an agora command in its script is not a plain command"
        return found
    return [argv] if argv and argv[0] == "agora" else []


def _agora_services() -> dict[str, dict[str, Any]]:
    return {name: s for name, s in _services().items() if s.get("image") == AGORA_IMAGE}


def _binds(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> source (a host path relative to deploy/, or a volume name)."""
    binds: dict[str, str] = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            binds[str(volume["target"])] = str(volume["source"])
        else:
            source, target = str(volume).split(":")[:2]
            binds[target] = source
    return binds


def _node_config_path(name: str) -> Path:
    """The host file mounted where the node's --config points."""
    args = _parse_agora(_service_argv(_services()[name]), name)
    assert args.config is not None, f"{name}: its command passes no --config"
    source = _binds(_services()[name]).get(str(args.config))
    assert source is not None, f"{name}: nothing is mounted at its --config path {args.config}"
    assert source.startswith("."), f"{name}: its config should be a file from deploy/, not volume {source!r}"
    return (DEPLOY / source).resolve()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # The containers set no AGORA_* variables; the runner's own must not change what is loaded.
    for key in list(os.environ):
        if key.startswith("AGORA_"):
            monkeypatch.delenv(key)


def _node_settings(name: str) -> Settings:
    return load_settings(config_file=_node_config_path(name))


def _volume_source(service: dict[str, Any], container_path: str) -> tuple[str, str]:
    """(volume, mount point) of the mount holding container_path, the deepest one."""
    path = PurePosixPath(container_path)
    mounts = [(target, source) for target, source in _binds(service).items() if path.is_relative_to(target)]
    assert mounts, f"nothing is mounted above {container_path}"
    target, source = max(mounts, key=lambda m: len(m[0]))
    return source, target


# --- compose ---------------------------------------------------------------------------------


def test_compose_has_the_network_and_its_monitoring() -> None:
    assert set(_services()) >= {"certs", *NODE_ROLES, "prometheus", "grafana"}
    assert set(_agora_services()) == {"certs", *NODE_ROLES}
    assert _services()["prometheus"]["image"].startswith("prom/prometheus")
    assert _services()["grafana"]["image"].startswith("grafana/grafana")
    assert "3000:3000" in _services()["grafana"]["ports"]


def test_every_agora_command_in_compose_is_a_valid_invocation() -> None:
    for name, service in _agora_services().items():
        invocations = _agora_invocations(name, service)
        assert invocations, f"{name} runs the agora image but no agora command"
        for argv in invocations:
            _parse_agora(argv, name)


def test_each_node_runs_its_command_with_a_valid_config_for_its_role(clean_env: None) -> None:
    for name, role in NODE_ROLES.items():
        args = _parse_agora(_service_argv(_services()[name]), name)
        assert args.command == NODE_COMMANDS[name], f"{name} should run `agora {NODE_COMMANDS[name]}`"
        settings = _node_settings(name)
        assert role in settings.node.roles, f"{name}: its config lacks the {role} role"
        # The compose service name is the DNS name peers dial and the certificate's name.
        assert settings.node.name == name
        host, port = split_host_port(settings.node.listen)
        assert host == "0.0.0.0", f"{name} must listen on every interface to be reachable from other containers"
        assert settings.node.advertise == f"{name}:{port}"
        assert not settings.security.insecure
        depends = _services()[name]["depends_on"]
        assert depends["certs"]["condition"] == "service_completed_successfully"


def test_students_seed_from_the_teacher_once_it_is_healthy(clean_env: None) -> None:
    teacher = _node_settings("teacher")
    for name, role in NODE_ROLES.items():
        if role != "student":
            continue
        assert _node_settings(name).peers.seeds == [teacher.node.advertise]
        assert _node_settings(name).student.task in teacher.teacher.tasks
        assert _services()[name]["depends_on"]["teacher"]["condition"] == "service_healthy"


def test_every_file_a_service_mounts_exists() -> None:
    volumes = set(_compose().get("volumes") or {})
    for name, service in _services().items():
        for target, source in _binds(service).items():
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name} mounts {source} at {target}, which does not exist"
            else:
                assert source in volumes, f"{name} mounts volume {source!r}, not declared under volumes:"


def test_certs_service_issues_each_node_the_certificate_its_config_names(clean_env: None) -> None:
    certs = _services()["certs"]
    issued = {}
    for argv in _agora_invocations("certs", certs):
        args = _parse_agora(argv, "certs")
        if args.certs_command == "issue":
            issued[args.name] = args
    for name in NODE_ROLES:
        settings = _node_settings(name)
        assert name in issued, f"the certs service issues no certificate named {name}"
        ca_cert, cert, key = settings.security.tls_files(settings.node.data_dir)
        out = str(issued[name].out)
        assert {str(ca_cert.parent), str(cert.parent), str(key.parent)} == {out}, f"{name} reads certs from elsewhere"
        # The node must see the volume the certs service wrote, at the same place.
        assert _volume_source(_services()[name], out) == _volume_source(certs, out)
        ca_volume, _ = _volume_source(certs, str(issued[name].ca))
        assert ca_volume not in _binds(_services()[name]).values(), f"{name} can read the CA's private key"


def _certs_script_locally(root: Path) -> str:
    """The certs service's script, with its volumes moved under root and the venv's agora."""
    argv = _service_argv(_services()["certs"])
    assert argv[0] in SHELLS
    script = argv[-1]
    for target in _binds(_services()["certs"]):
        script = re.sub(rf"(?<![\w/]){re.escape(target)}(?=/|\s|$)", str(root) + target, script)
    # A path outside the certs service's volumes would be lost with its container.
    for command in _shell_commands(script):
        for token in command:
            assert not token.startswith("/") or token.startswith(str(root)), f"{token} is in no volume"
    return script


def test_certs_script_runs_and_is_idempotent(tmp_path: Path, clean_env: None) -> None:
    script = _certs_script_locally(tmp_path)
    for target in _binds(_services()["certs"]):
        (tmp_path / target.lstrip("/")).mkdir(parents=True)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    argv = _service_argv(_services()["certs"])
    first = subprocess.run([*argv[:-1], script], env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    files = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    second = subprocess.run([*argv[:-1], script], env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, f"rerunning the certs service fails: {second.stderr}"
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == files, "a rerun changed the certs"
    for name in NODE_ROLES:
        settings = _node_settings(name)
        ca_cert, cert_path, key = settings.security.tls_files(settings.node.data_dir)
        local = [tmp_path / str(p).lstrip("/") for p in (ca_cert, cert_path, key)]
        assert all(p.is_file() for p in local), f"{name}: its config names files the certs service did not write"
        cert = x509.load_pem_x509_certificate(local[1].read_bytes())
        dns = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.DNSName
        )
        # Peers dial <service>:50051 and the health check expects node.name: both must be in the cert.
        assert settings.node.name in dns
        assert split_host_port(settings.node.advertise)[0] in dns
        ca = x509.load_pem_x509_certificate(local[0].read_bytes())
        cert.verify_directly_issued_by(ca)


# --- Prometheus --------------------------------------------------------------------------------


def _scrape_targets() -> list[str]:
    config = yaml.safe_load(PROMETHEUS.read_text(encoding="utf-8"))
    return [
        target
        for job in config["scrape_configs"]
        for static in job.get("static_configs", [])
        for target in static["targets"]
    ]


def test_prometheus_scrapes_every_node_on_its_metrics_port(clean_env: None) -> None:
    targets = _scrape_targets()
    scraped = set()
    for target in targets:
        host, port = split_host_port(target)
        assert host in NODE_ROLES, f"Prometheus scrapes {target}, which is no node service"
        settings = _node_settings(host)
        assert settings.metrics.enabled
        metrics_host, metrics_port = split_host_port(settings.metrics.listen)
        assert port == metrics_port, f"{target}: {host} serves metrics on {settings.metrics.listen}"
        assert metrics_host == "0.0.0.0", f"{host}: metrics on {metrics_host} are unreachable from Prometheus"
        scraped.add(host)
    assert scraped == set(NODE_ROLES)
    assert len(targets) == len(scraped), "a node is scraped twice"


def _promtool() -> str:
    found = shutil.which("promtool") or next((p for p in ("/usr/bin/promtool",) if Path(p).is_file()), None)
    if found is None:
        pytest.fail("promtool is not installed; `make test` installs Prometheus (and promtool) before the tests")
    return found


def test_promtool_accepts_the_prometheus_config(tmp_path: Path) -> None:
    promtool = _promtool()
    result = subprocess.run([promtool, "check", "config", str(PROMETHEUS)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    # The same check must reject a broken config, or the pass above proves nothing.
    broken = tmp_path / "prometheus.yml"
    broken.write_text(PROMETHEUS.read_text(encoding="utf-8").replace("scrape_interval: 15s", "scrape_interval: often"))
    assert "often" in broken.read_text(encoding="utf-8")
    rejected = subprocess.run([promtool, "check", "config", str(broken)], capture_output=True, text=True, timeout=60)
    assert rejected.returncode != 0


# --- Dockerfile --------------------------------------------------------------------------------


def test_dockerfile_runs_agora_as_a_non_root_user() -> None:
    users = [rest for keyword, rest in _runtime_stage() if keyword == "USER"]
    assert users, "the image runs as root"
    user = users[-1].split(":")[0]
    assert user == "10001"
    assert _exec_form("ENTRYPOINT") == ["agora"]
    args = _parse_agora(["agora", *_exec_form("CMD")], "Dockerfile CMD")
    assert args.command == "run"


def test_dockerfile_declares_data_and_cert_volumes_and_ports() -> None:
    volumes = [v for kw, rest in _runtime_stage() if kw == "VOLUME" for v in json.loads(rest)]
    assert {"/data", "/certs"} <= set(volumes)
    exposed = {p for kw, rest in _runtime_stage() if kw == "EXPOSE" for p in rest.split()}
    assert {"50051", "9464"} <= exposed


def test_dockerfile_healthcheck_checks_each_node_with_its_own_config(clean_env: None) -> None:
    checks = [rest for keyword, rest in _runtime_stage() if keyword == "HEALTHCHECK"]
    assert checks, "the image has no HEALTHCHECK"
    _, sep, command = checks[-1].partition("CMD ")
    assert sep, "HEALTHCHECK must run a command"
    args = _parse_agora(json.loads(command), "Dockerfile HEALTHCHECK")
    assert args.command == "health"
    assert args.config is not None, "the health check must use the node's mTLS files (--config)"
    _, health_port = split_host_port(args.address)
    for name in NODE_ROLES:
        assert str(args.config) in _binds(_services()[name]), f"{name} mounts no config where the check reads it"
        settings = _node_settings(name)
        assert split_host_port(settings.node.listen)[1] == health_port, f"the health check misses {name}'s port"
        # Node state and certificates live on the image's volumes, not in the container layer.
        assert PurePosixPath(settings.node.data_dir).is_relative_to("/data")
        assert all(
            PurePosixPath(p).is_relative_to("/certs") for p in settings.security.tls_files(settings.node.data_dir)
        )

"""The `agora` command line.

    agora run --config node.yaml          start a node
    agora health --address HOST:PORT      exit 0 when a node is SERVING
    agora config show|schema              the effective config, or its JSON schema
    agora model init|train|eval           build, train and evaluate tiny models
    agora task list|sample                the task library and its gold rationales
    agora certs init-ca|issue             the network CA and node certificates (mTLS)
    agora peers --config node.yaml        a node's view of its peers
    agora privacy --config node.yaml      a teacher's privacy ledger: spent and left
    agora teacher dp-train                fine-tune a teacher's generator under DP-SGD
    agora audit --model DIR               Secret Sharer audit of planted canaries
    agora learn --config student.yaml     run a student: learn from the network's teachers
    agora tnd train-teacher|train-reward|report   TnD's teacher, age predictor and word-learning report
    agora simulate [--nodes N] [--out DIR]  a whole teaching network on this machine, and its report

Exit codes: 0 success, 1 the operation failed (node not serving, port taken), 2 bad input
(usage, invalid config) with one message and no traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any

import yaml

from node import (
    __version__,
    cli_audit,
    cli_certs,
    cli_learn,
    cli_model,
    cli_peers,
    cli_privacy,
    cli_simulate,
    cli_teacher,
    cli_tnd,
)
from node.cli_errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, UsageError
from node.config import ConfigError, Settings, load_settings, overrides_to_dict, parse_override
from node.logs import configure_logging

log = logging.getLogger("agora.cli")


def _config_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("configuration (file < AGORA_* environment < flags)")
    group.add_argument("--config", "-c", type=Path, metavar="FILE", help="YAML config file (see `agora config schema`)")
    group.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        dest="overrides",
        help="override one setting, e.g. --set node.name=alice --set node.roles=[student]; repeatable",
    )


def _log_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-format", choices=["human", "json"], help="log line format (default: node.log_format)")
    parser.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], help="log verbosity (default: node.log_level)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agora",
        description="Agora: peer-to-peer social learning between language models.",
        epilog="Run `agora COMMAND --help` for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"agora {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, help="one of:")

    run = commands.add_parser(
        "run",
        help="start a node and serve until SIGTERM/SIGINT",
        description="Start a node: gRPC server (health, reflection, Agora services) and /metrics. "
        "On SIGTERM or SIGINT it reports NOT_SERVING, lets in-flight calls finish within "
        "node.shutdown_grace_s, and exits 0.",
        epilog="example: agora run --config node.yaml --listen 127.0.0.1:50051 --log-format json",
    )
    _config_arguments(run)
    run.add_argument("--name", help="node name (node.name)")
    run.add_argument("--listen", metavar="HOST:PORT", help="gRPC listen address (node.listen); port 0 = any free port")
    run.add_argument(
        "--metrics-listen", metavar="HOST:PORT", help="metrics address (metrics.listen); port 0 = any free port"
    )
    run.add_argument("--roles", metavar="ROLE[,ROLE]", help="comma-separated roles: teacher, student (node.roles)")
    run.add_argument("--data-dir", type=Path, metavar="DIR", help="node data directory (node.data_dir)")
    run.add_argument(
        "--insecure",
        action="store_true",
        default=None,
        help="plaintext gRPC without mTLS, loopback addresses only (security.insecure)",
    )
    _log_arguments(run)

    check = commands.add_parser(
        "health",
        help="check a node's health; exit 0 when SERVING",
        description="Call the standard gRPC health service of a node. Exit 0 when SERVING, 1 otherwise "
        "(NOT_SERVING, unknown service, unreachable). Plaintext unless TLS files are given "
        "directly or through --config.",
        epilog="example: agora health --address 127.0.0.1:50051",
    )
    check.add_argument("--address", required=True, metavar="HOST:PORT", help="the node's gRPC address")
    check.add_argument("--service", default="", help="service to ask about, e.g. agora.v1.Teacher (default: the node)")
    check.add_argument(
        "--timeout", type=float, default=5.0, metavar="SECONDS", help="deadline for the check (default 5)"
    )
    check.add_argument(
        "--config", "-c", type=Path, metavar="FILE", help="take mTLS files and server name from this node config"
    )
    check.add_argument("--ca", type=Path, metavar="PEM", help="network CA certificate (mTLS)")
    check.add_argument("--cert", type=Path, metavar="PEM", help="client certificate (mTLS)")
    check.add_argument("--key", type=Path, metavar="PEM", help="client private key (mTLS)")
    check.add_argument(
        "--server-name", metavar="NAME", help="expected certificate name of the node (default: node.name with --config)"
    )

    config = commands.add_parser(
        "config", help="show the effective config or its schema", description="Inspect configuration."
    )
    config_commands = config.add_subparsers(dest="config_command", metavar="SUBCOMMAND", required=True, help="one of:")
    show = config_commands.add_parser(
        "show",
        help="print the effective config (defaults < file < environment < --set)",
        description="Print the config a node would run with, after every source is applied.",
        epilog="example: AGORA_NODE__NAME=bob agora config show --config node.yaml --format json",
    )
    _config_arguments(show)
    show.add_argument("--format", choices=["yaml", "json"], default="yaml", help="output format (default yaml)")
    config_commands.add_parser(
        "schema",
        help="print the JSON schema of the config, with every field's default and description",
        description="Print the JSON schema of the whole config.",
    )
    cli_model.add_commands(commands)
    cli_certs.add_commands(commands)
    cli_peers.add_command(commands, _config_arguments)
    cli_audit.add_command(commands)
    cli_privacy.add_command(commands, _config_arguments)
    cli_teacher.add_command(commands, _config_arguments)
    cli_learn.add_command(commands, _config_arguments)
    cli_tnd.add_commands(commands)
    cli_simulate.add_command(commands)
    return parser


def _settings_from(args: argparse.Namespace, flags: dict[str, dict[str, Any]] | None = None) -> Settings:
    overrides = overrides_to_dict([parse_override(text) for text in args.overrides])
    for section, values in (flags or {}).items():
        for key, value in values.items():
            if value is not None:
                overrides.setdefault(section, {})[key] = value
    return load_settings(args.config, overrides)


def _run(args: argparse.Namespace) -> int:
    from node.app import Node  # imports grpc services; keep `agora --help` fast

    roles = [r.strip() for r in args.roles.split(",")] if args.roles else None
    settings = _settings_from(
        args,
        {
            "node": {
                "name": args.name,
                "listen": args.listen,
                "roles": roles,
                "data_dir": args.data_dir,
                "log_format": args.log_format,
                "log_level": args.log_level,
            },
            "metrics": {"listen": args.metrics_listen},
            "security": {"insecure": args.insecure},
        },
    )
    configure_logging(settings.node.log_level, settings.node.log_format)
    node = Node(settings)
    try:
        asyncio.run(node.serve_until_signal())
    except OSError as exc:
        log.error("node %s cannot start: %s", settings.node.name, exc)
        return EXIT_FAILED
    return EXIT_OK


def _health(args: argparse.Namespace) -> int:
    from node.client import check_health
    from node.security import channel_credentials, tls_material

    files = (args.ca, args.cert, args.key)
    credentials, server_name = None, args.server_name
    if any(files):
        if not all(files):
            raise UsageError("mTLS needs all of --ca, --cert and --key")
        try:
            ca, cert, key = (path.read_bytes() for path in files)
        except OSError as exc:
            raise UsageError(f"cannot read {exc.filename}: {exc.strerror}") from None
        credentials = channel_credentials(ca, cert, key)
    elif args.config is not None:
        settings = load_settings(args.config)
        if not settings.security.insecure:
            credentials = channel_credentials(*tls_material(settings))
            server_name = server_name or settings.node.name
    result = check_health(args.address, args.service, args.timeout, credentials, server_name)
    target = f"{args.address} ({args.service})" if args.service else args.address
    print(f"{target}: {result.status}" + (f" - {result.detail}" if result.detail else ""))
    return EXIT_OK if result.serving else EXIT_FAILED


def _config(args: argparse.Namespace) -> int:
    if args.config_command == "schema":
        print(json.dumps(Settings.model_json_schema(), indent=2))
        return EXIT_OK
    data = _settings_from(args).model_dump(mode="json")
    print(json.dumps(data, indent=2) if args.format == "json" else yaml.safe_dump(data, sort_keys=False), end="")
    if args.format == "json":
        print()
    return EXIT_OK


def _peers(args: argparse.Namespace) -> int:
    return cli_peers.run(args, _settings_from(args))


def _privacy(args: argparse.Namespace) -> int:
    return cli_privacy.run(args, _settings_from(args))


def _teacher(args: argparse.Namespace) -> int:
    return cli_teacher.run(args, _settings_from(args))


def _learn(args: argparse.Namespace) -> int:
    return cli_learn.run(args, _settings_from(args, cli_learn.flags(args)))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # as typed, for reports that show how to rerun
    handlers = {
        "run": _run,
        "health": _health,
        "config": _config,
        "model": cli_model.run,
        "task": cli_model.run,
        "certs": cli_certs.run,
        "peers": _peers,
        "audit": cli_audit.run,
        "privacy": _privacy,
        "teacher": _teacher,
        "learn": _learn,
        "tnd": cli_tnd.run,
        "simulate": cli_simulate.run,
    }
    try:
        return handlers[args.command](args)
    except (ConfigError, UsageError) as exc:
        print(f"agora {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug: say so in one line; the traceback only with --log-level debug
        log.debug("unexpected error", exc_info=True)
        print(
            f"agora {args.command}: unexpected error: {exc!r}; rerun with --log-level debug for details",
            file=sys.stderr,
        )
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())

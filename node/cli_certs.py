"""`agora certs init-ca | issue`: the network CA and node certificates for mTLS.

agora certs init-ca --out ca/
agora certs issue --ca ca/ --name alice --dns alice.example --ip 10.0.0.5 --out alice-data/certs
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from node.cli_errors import UsageError
from node.config import NODE_NAME


def add_commands(commands: Any) -> None:
    certs = commands.add_parser(
        "certs", help="make the network CA and node certificates", description="mTLS certificate material."
    )
    sub = certs.add_subparsers(dest="certs_command", metavar="SUBCOMMAND", required=True, help="one of:")
    init = sub.add_parser(
        "init-ca",
        help="make a new network CA (ca.crt, ca.key)",
        description="Make a self-signed ECDSA P-256 CA for one network. Keep ca.key private: whoever holds "
        "it can admit nodes. ca.crt goes to every node.",
        epilog="example: agora certs init-ca --out ca/",
    )
    init.add_argument("--out", type=Path, required=True, metavar="DIR", help="directory for ca.crt and ca.key")
    init.add_argument("--name", default="agora-network-ca", help="the CA's common name (default agora-network-ca)")
    init.add_argument("--days", type=float, default=3650, help="validity in days (default 3650)")
    init.add_argument("--force", action="store_true", help="replace a CA already in --out")

    issue = sub.add_parser(
        "issue",
        help="issue a node certificate signed by the CA",
        description="Issue a certificate with CN = the node name (it must equal node.name) and SANs for the "
        "DNS names and IP addresses peers dial. Writes ca.crt, node.crt and node.key: point --out at "
        "<data_dir>/certs to use them without further config.",
        epilog="example: agora certs issue --ca ca/ --name alice --ip 10.0.0.5 --out alice-data/certs",
    )
    issue.add_argument("--ca", type=Path, required=True, metavar="DIR", help="CA directory made by init-ca")
    issue.add_argument("--name", required=True, help="node name: the certificate's CN")
    issue.add_argument("--dns", action="append", default=[], metavar="NAME", help="DNS name SAN; repeatable")
    issue.add_argument("--ip", action="append", default=[], metavar="ADDRESS", help="IP address SAN; repeatable")
    issue.add_argument("--out", type=Path, required=True, metavar="DIR", help="directory for the node's files")
    issue.add_argument("--days", type=float, default=825, help="validity in days (default 825)")
    issue.add_argument("--force", action="store_true", help="replace a certificate already in --out")


def run(args: argparse.Namespace) -> int:
    from node.security.certs import CA_KEY, NODE_CERT, CertificateAuthority, CertificateError

    if args.days <= 0:
        raise UsageError(f"--days must be positive, got {args.days:g}")
    try:
        if args.certs_command == "init-ca":
            if (args.out / CA_KEY).exists() and not args.force:
                raise UsageError(
                    f"{args.out} already holds a CA; pass --force to replace it (all nodes then need new certificates)"
                )
            authority = CertificateAuthority(args.name, args.days)
            authority.save(args.out)
            print(f"made CA {args.name!r} in {args.out} (keep {args.out / CA_KEY} private)")
            return 0
        if not NODE_NAME.fullmatch(args.name):
            raise UsageError(f"--name {args.name!r} is not a node name (letters, digits, . _ -; at most 64)")
        if (args.out / NODE_CERT).exists() and not args.force:
            raise UsageError(f"{args.out} already holds a node certificate; pass --force to replace it")
        authority = CertificateAuthority.load(args.ca)
        authority.issue_node(args.name, args.out, tuple(args.dns), tuple(args.ip), args.days)
    except CertificateError as exc:
        raise UsageError(str(exc)) from None
    sans = ", ".join(dict.fromkeys([args.name, *args.dns, *args.ip]))
    print(f"issued {args.name!r} (SANs: {sans}) by CA {authority.name!r} -> {args.out}")
    return 0

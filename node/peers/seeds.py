"""Seeds from config: ``HOST:PORT`` is one address; ``dns:///NAME:PORT`` is every address NAME
resolves to (a Kubernetes headless service lists each pod), each verified under NAME over mTLS."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from dataclasses import dataclass

from node.config import join_host_port, split_host_port

log = logging.getLogger("agora.peers")
DNS_SCHEME = "dns:///"


@dataclass(frozen=True)
class JoinTarget:
    """An address to say Hello to, the certificate name to expect there (None: grpc checks the
    address itself), and where it came from (the seed as configured, or "remembered")."""

    address: str
    server_name: str | None
    origin: str


async def resolve_seeds(seeds: list[str]) -> list[JoinTarget]:
    """Every address the seeds name, in order, without duplicates; unresolvable names are logged
    and skipped (DNS may not list every pod yet, and the next rejoin asks again)."""
    loop = asyncio.get_running_loop()
    targets: dict[str, JoinTarget] = {}
    for seed in seeds:
        if not seed.startswith(DNS_SCHEME):
            targets.setdefault(seed, JoinTarget(seed, None, seed))
            continue
        host, port = split_host_port(seed.removeprefix(DNS_SCHEME))
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            log.warning("seed %s does not resolve (%s); will ask again at the next rejoin", seed, exc)
            continue
        for _family, _type, _proto, _name, sockaddr in infos:
            address = join_host_port(str(sockaddr[0]), port)
            targets.setdefault(address, JoinTarget(address, None if _is_ip(host) else host, seed))
    return list(targets.values())


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True

"""Hosts on one machine: Linux network namespaces on a bridge, one per node.

Loopback shares one network stack among all nodes, so it cannot show that a node works when its
peers are really elsewhere: every node would have the same address, and so would need its own
port, and the certificates would all name 127.0.0.1. In a namespace each node has a real interface
with its own address (10.77.X.1, .2, …), certificates name a different IP and host per node, and
every node listens on the same port, as on separate machines. A bridge joins the namespaces, and
its address (.254) lives in the root namespace, so the process that made them reaches every node
directly (to scrape metrics, to dial it) without any routing.

Used by tests/test_netns.py and by `agora simulate --netns`. Needs root and iproute2's `ip netns`;
`netns_unavailable()` says why not, so that callers can skip or refuse with the reason.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

IP: str | None = shutil.which("ip") or next((p for p in ("/usr/sbin/ip", "/sbin/ip") if os.path.exists(p)), None)
# Unique per process: parallel runs, or the leftovers of one killed hard, do not clash.
DEFAULT_TAG = f"{os.getpid() % 100000}"
# `ip netns exec NS` bind-mounts the files in /etc/netns/NS/ over /etc/ (e.g. a per-host `hosts`).
ETC_NETNS = Path("/etc/netns")
GATEWAY_HOST = 254  # the bridge's host number; nodes get 1, 2, … so at most 253 of them
IFNAMSIZ = 15  # the kernel's limit on an interface name's length


class NetnsError(RuntimeError):
    """An `ip` command failed; the message quotes the command and its stderr."""


@dataclass(frozen=True)
class Host:
    """One namespace, one address: where one node runs."""

    name: str  # the caller's name for it
    netns: str  # the namespace, agora-<tag>-<index>
    ip: str  # its address on the bridge
    gateway: str  # the bridge's address in the root namespace, reachable from this host

    def prefix(self) -> list[str]:
        """The command prefix that runs a process in this namespace (NodeProcess's `prefix=`).

        `ip netns exec` execs the command in place: the pid, signals and exit code are its own."""
        return [IP or "ip", "netns", "exec", self.netns]


def netns_unavailable() -> str | None:
    """Why namespaces cannot be made here, or None; probed by making (and removing) one."""
    if os.geteuid() != 0:
        return f"needs root for ip netns (running as uid {os.geteuid()})"
    if IP is None:
        return "iproute2 `ip` is not installed"
    probe = f"agora-probe-{DEFAULT_TAG}"
    added = subprocess.run([IP, "netns", "add", probe], capture_output=True, text=True)
    if added.returncode != 0:
        return f"`ip netns add` does not work here: {added.stderr.strip()}"
    subprocess.run([IP, "netns", "del", probe], capture_output=True)
    return None


def _ip(*args: str, check: bool = True) -> None:
    if IP is None:
        raise NetnsError("iproute2 `ip` is not installed")
    result = subprocess.run([IP, *args], capture_output=True, text=True)
    if check and result.returncode != 0:
        raise NetnsError(f"`ip {' '.join(args)}` failed ({result.returncode}): {result.stderr.strip()}")


def _free_subnet() -> int:
    """X of a 10.77.X.0/24 that no interface or route here uses (start from the pid, for spread)."""
    if IP is None:
        raise NetnsError("iproute2 `ip` is not installed")
    used = " ".join(
        subprocess.run([IP, "-4", *what], capture_output=True, text=True).stdout
        for what in (["-o", "addr", "show"], ["route", "show", "table", "all"])
    )
    for offset in range(250):
        x = (os.getpid() + offset) % 250 + 1
        if f"10.77.{x}." not in used:
            return x
    raise NetnsError("every 10.77.X.0/24 is in use on this machine")


@contextmanager
def bridged_namespaces(names: Sequence[str], tag: str | None = None) -> Iterator[dict[str, Host]]:
    """One namespace per name at 10.77.X.1, .2, … (a free X), on a bridge at 10.77.X.254 in the
    root namespace. Yields name -> Host; removes the namespaces, links, bridge and their
    /etc/netns/<ns> directories on exit, and first whatever a run killed hard left with this tag."""
    tag = DEFAULT_TAG if tag is None else tag
    if not re.fullmatch(r"[A-Za-z0-9]+", tag):
        raise ValueError(f"tag {tag!r} must be letters and digits (it is part of interface names)")
    if len(set(names)) != len(names):
        raise ValueError(f"names must be distinct: {list(names)}")
    if len(names) >= GATEWAY_HOST:
        raise ValueError(f"at most {GATEWAY_HOST - 1} namespaces on one /24, not {len(names)}")
    # Interface names come from the tag and the index, never from the caller's names: the kernel
    # allows 15 characters, and the index keeps them distinct.
    bridge = f"agbr{tag}"
    indexed = list(enumerate(names, start=1))
    namespaces = {k: f"agora-{tag}-{k}" for k, _ in indexed}
    outside = {k: f"agv{tag}{k}" for k, _ in indexed}  # the veth end on the bridge
    inside = {k: f"agp{tag}{k}" for k, _ in indexed}  # its peer, in the namespace
    longest = max([bridge, *outside.values(), *inside.values()], key=len)
    if len(longest) > IFNAMSIZ:
        raise ValueError(f"tag {tag!r} is too long: interface name {longest!r} exceeds {IFNAMSIZ} characters")

    def remove() -> None:  # tolerant: parts may be missing, or left by an earlier run killed hard
        for k, netns in namespaces.items():
            _ip("netns", "del", netns, check=False)  # also destroys the veth pair
            _ip("link", "del", outside[k], check=False)
            shutil.rmtree(ETC_NETNS / netns, ignore_errors=True)
        _ip("link", "del", bridge, check=False)

    made_etc_netns = not ETC_NETNS.exists()
    remove()  # before choosing the subnet: a leftover bridge holds one
    try:
        net = f"10.77.{_free_subnet()}"
        gateway = f"{net}.{GATEWAY_HOST}"
        _ip("link", "add", bridge, "type", "bridge")
        _ip("addr", "add", f"{gateway}/24", "dev", bridge)
        _ip("link", "set", bridge, "up")
        hosts: dict[str, Host] = {}
        for k, name in indexed:
            netns = namespaces[k]
            _ip("netns", "add", netns)
            _ip("link", "add", outside[k], "type", "veth", "peer", "name", inside[k])
            _ip("link", "set", inside[k], "netns", netns)
            _ip("link", "set", outside[k], "master", bridge)
            _ip("link", "set", outside[k], "up")
            _ip("-n", netns, "addr", "add", f"{net}.{k}/24", "dev", inside[k])
            _ip("-n", netns, "link", "set", inside[k], "up")
            _ip("-n", netns, "link", "set", "lo", "up")  # a node may also listen on 127.0.0.1
            hosts[name] = Host(name=name, netns=netns, ip=f"{net}.{k}", gateway=gateway)
        yield hosts
    finally:
        remove()
        if made_etc_netns:
            with suppress(OSError):  # not empty: another run is using it
                ETC_NETNS.rmdir()

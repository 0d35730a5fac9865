"""node/netns.py on its own: two namespaces on a bridge, each reachable at its own address from the
root namespace, and nothing left behind afterwards.

Needs root and iproute2's `ip netns`; skipped otherwise, with the reason.
"""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from node.netns import IP, bridged_namespaces, netns_unavailable

PORT = 50051
# Binds the host's address (which exists only inside its namespace), says so, and answers one
# connection with the name it was given.
LISTENER = """
import socket, sys
server = socket.create_server((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
connection, _ = server.accept()
connection.sendall(sys.argv[3].encode())
connection.close()
"""


def netns_list() -> set[str]:
    assert IP is not None
    listed = subprocess.run([IP, "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in listed.splitlines() if line.strip()}  # "NAME (id: N)"


def test_a_too_long_tag_is_refused_before_anything_is_made() -> None:
    with pytest.raises(ValueError, match="too long"), bridged_namespaces(["a"], tag="x" * 12):
        pass


@pytest.mark.timeout(60)
def test_two_namespaces_are_reachable_at_their_own_addresses_and_removed_after() -> None:
    reason = netns_unavailable()
    if reason is not None:
        pytest.skip(reason)

    with bridged_namespaces(["a", "b"]) as hosts:
        assert sorted(hosts) == ["a", "b"]
        a, b = hosts["a"], hosts["b"]
        assert a.ip != b.ip, f"both hosts at {a.ip}"
        assert a.netns != b.netns
        assert a.gateway == b.gateway and a.gateway not in (a.ip, b.ip)
        namespaces = [host.netns for host in hosts.values()]
        assert set(namespaces) <= netns_list(), netns_list()

        for host in hosts.values():
            # The same port in both namespaces: separate network stacks.
            command = [*host.prefix(), sys.executable, "-c", LISTENER, host.ip, str(PORT), host.name]
            listener = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                assert listener.stdout is not None
                ready = listener.stdout.readline()
                if ready.strip() != "ready":
                    listener.kill()
                    _, stderr = listener.communicate()
                    pytest.fail(f"{host.name}: the listener in {host.netns} did not start: {ready!r}\n{stderr}")
                with socket.create_connection((host.ip, PORT), timeout=5) as connection:
                    assert connection.recv(100) == host.name.encode()
                assert listener.wait(timeout=10) == 0
            finally:
                listener.kill()
                listener.wait()

    assert not set(namespaces) & netns_list(), f"left behind: {set(namespaces) & netns_list()}"

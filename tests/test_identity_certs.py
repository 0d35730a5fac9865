"""Node identity (Ed25519 in the data dir) and `agora certs`, with real nodes and real mTLS."""

from __future__ import annotations

import asyncio
import hashlib
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from node.app import Node
from node.cli import main
from node.client import check_health
from node.security import channel_credentials
from node.security.identity import IDENTITY_FILE, IdentityError, NodeIdentity, verify_signature
from tests.nodes import loopback_settings


def test_identity_is_made_once_kept_private_and_signs(tmp_path: Path) -> None:
    first = NodeIdentity.load_or_create(tmp_path)
    key_file = tmp_path / IDENTITY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert first.node_id == hashlib.sha256(first.public_key).hexdigest() and len(first.public_key) == 32
    again = NodeIdentity.load_or_create(tmp_path)
    assert again.node_id == first.node_id
    signature = first.sign(b"lesson bytes")
    assert verify_signature(first.public_key, b"lesson bytes", signature)
    assert not verify_signature(first.public_key, b"lesson bytez", signature)
    assert not verify_signature(NodeIdentity.load_or_create(tmp_path / "other").public_key, b"lesson bytes", signature)


def test_a_corrupt_identity_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / IDENTITY_FILE).write_text("not a key")
    with pytest.raises(IdentityError, match=f"{IDENTITY_FILE} is not a readable private key"):
        NodeIdentity.load_or_create(tmp_path)


def test_a_restarted_node_keeps_its_node_id(tmp_path: Path) -> None:
    async def start_stop() -> str:
        node = Node(loopback_settings(node={"data_dir": str(tmp_path)}))
        await node.start()
        await node.stop()
        assert node.identity is not None
        return node.identity.node_id

    assert asyncio.run(start_stop()) == asyncio.run(start_stop())


def test_certs_made_by_the_cli_secure_a_real_node(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ca_dir, data_dir, client_dir = tmp_path / "ca", tmp_path / "alice-data", tmp_path / "client"
    assert main(["certs", "init-ca", "--out", str(ca_dir), "--name", "test-net"]) == 0
    assert stat.S_IMODE((ca_dir / "ca.key").stat().st_mode) == 0o600
    issue = ["certs", "issue", "--ca", str(ca_dir)]
    assert (
        main([*issue, "--name", "alice", "--ip", "127.0.0.1", "--dns", "alice.local", "--out", str(data_dir / "certs")])
        == 0
    )
    assert main([*issue, "--name", "operator", "--out", str(client_dir)]) == 0
    assert "issued 'alice' (SANs: alice, alice.local, 127.0.0.1) by CA 'test-net'" in capsys.readouterr().out

    cert = x509.load_pem_x509_certificate((data_dir / "certs" / "node.crt").read_bytes())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "alice"
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["alice", "alice.local"]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]

    # The node finds its files in <data_dir>/certs by default: no security settings needed.
    settings = loopback_settings(node={"name": "alice", "data_dir": str(data_dir)}, security={"insecure": False})
    credentials = channel_credentials(*((client_dir / f).read_bytes() for f in ("ca.crt", "node.crt", "node.key")))

    async def scenario() -> str:
        node = Node(settings)
        addresses = await node.start()
        try:
            result = await asyncio.to_thread(check_health, addresses.grpc, "", 5.0, credentials, "alice")
            return result.status
        finally:
            await node.stop()

    assert asyncio.run(scenario()) == "SERVING"


def test_certs_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["certs", "init-ca", "--out", str(tmp_path / "ca")]) == 0
    capsys.readouterr()
    issue = ["certs", "issue", "--ca", str(tmp_path / "ca"), "--out", str(tmp_path / "n")]
    cases = [
        (["certs", "init-ca", "--out", str(tmp_path / "ca")], "already holds a CA; pass --force"),
        (
            ["certs", "issue", "--ca", str(tmp_path / "none"), "--name", "a", "--out", str(tmp_path / "n")],
            "does not exist; make a CA with `agora certs init-ca`",
        ),
        ([*issue, "--name", "alice", "--ip", "10.0.0.300"], "'10.0.0.300' is not an IP address"),
        ([*issue, "--name", "bad name!"], "is not a node name"),
        ([*issue, "--name", "alice", "--days", "0"], "--days must be positive"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (argv, err)

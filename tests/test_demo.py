"""`make demo` end to end: it must run on a fresh machine and show what it says it shows."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest


@pytest.mark.timeout(180)
def test_the_demo_joins_three_nodes_survives_a_kill_and_exits_cleanly() -> None:
    demo = subprocess.run([sys.executable, "-m", "node.demo"], capture_output=True, text=True, timeout=170)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    out = demo.stdout
    assert re.search(r"\[3/6\] every node sees the other two alive after [\d.]+s", out), out
    assert re.search(r"^\s+bob\s+[0-9a-f]{12}\s+127\.0\.0\.1:\d+\s+alive", out, re.MULTILINE), out
    assert "health with a network certificate: SERVING" in out
    assert "without a client certificate -> UNAVAILABLE" in out
    assert "no signed envelope -> UNAUTHENTICATED: /agora.v1.Teacher/Instruct needs a signed envelope" in out
    assert 'agora_auth_rejections_total{reason="missing_envelope"} 1.0' in out
    assert re.search(r"alice marks carol suspect after [\d.]+s .* then dead [\d.]+s later", out), out
    assert "same node id (yes:" in out and "exit codes 0, 0, 0" in out
    assert "Traceback" not in demo.stderr

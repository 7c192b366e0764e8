import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def test_the_run_command_starts_what_exists_says_what_is_missing_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ingress_local", "--once", "--state-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "nats-server (JetStream) on nats://127.0.0.1:" in out
    assert "DOMAIN" in out and "CONDITION" in out
    for name in (
        "ingress-watcher",
        "ipam",
        "l4-programmer",
        "l7-config",
        "dns-writer",
        "bgp-speaker",
    ):
        assert (f"started {name}" in out) != (f"not built yet: {name}" in out)
    assert "stopped: every process this run started has exited" in out
    leftover = subprocess.run(["pgrep", "-f", f"nats-server.*{tmp_path}"], capture_output=True)
    assert leftover.returncode == 1, "nats-server still running"

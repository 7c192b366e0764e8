"""A real nats-server with JetStream, started per test on a free port with a temporary store.

Where the binary is: ``$NATS_SERVER_BIN``, then ``nats-server`` on PATH, then Debian's
``/usr/sbin/nats-server``. ``NATS_URL`` makes the fixtures use an existing server instead (each test
then gets a subject root of its own, so tests stay isolated on a shared server). Where a Docker
engine exists and no binary does, testcontainers' NATS container is used.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_nats_server() -> str | None:
    candidates = [
        os.environ.get("NATS_SERVER_BIN"),
        shutil.which("nats-server"),
        "/usr/sbin/nats-server",
    ]
    return next((c for c in candidates if c and Path(c).is_file()), None)


def _wait_for_port(port: int, deadline: float, proc: subprocess.Popen[bytes] | None) -> None:
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"nats-server exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.02)
    raise TimeoutError(f"nats-server did not listen on {port}")


@dataclass
class NatsServer:
    """One nats-server process. ``restart`` keeps the store: used to prove nothing is lost."""

    binary: str
    port: int = field(default_factory=free_port)
    store_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="nats-js-")))
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    config: Path | None = None
    """An extra nats-server configuration file (e.g. authorization), passed with ``-c``."""
    env: dict[str, str] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> NatsServer:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.store_dir / "nats-server.log"
        log = self.log_path.open("ab")
        extra = ["-c", str(self.config)] if self.config else []
        self.proc = subprocess.Popen(
            [
                self.binary,
                *extra,
                "-js",
                "-sd",
                str(self.store_dir),
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-l",
                str(self.log_path),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(self.env or {})},
            # Its own session: a terminal's Ctrl-C must not kill the bus before the services
            # it serves have finished (bgp-speaker withdraws routes through it on shutdown).
            start_new_session=True,
        )
        _wait_for_port(self.port, time.monotonic() + timeout, self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.store_dir, ignore_errors=True)


@contextlib.contextmanager
def nats_server_url() -> Iterator[str]:
    """A server URL for one test: ``NATS_URL``, a local binary, or a testcontainers container."""
    if os.environ.get("NATS_URL"):
        yield os.environ["NATS_URL"]
        return
    binary = find_nats_server()
    if binary is not None:
        server = NatsServer(binary).start()
        try:
            yield server.url
        finally:
            server.cleanup()
        return
    from testcontainers.nats import NatsContainer  # only where a Docker engine exists

    with NatsContainer(command="-js") as container:
        yield container.nats_uri()

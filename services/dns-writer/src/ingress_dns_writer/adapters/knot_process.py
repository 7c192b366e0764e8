"""A Knot DNS server run as a plain foreground process with its own config, zone and storage.

Tests, the benchmark and the local runner use it: one knotd per caller, on loopback and a free
port, with every file under one temporary directory, and TSIG keys allowed to update and transfer
the zones. ``render_config`` is pure so its output is pinned by a golden file.
"""

from __future__ import annotations

import base64
import contextlib
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class TsigKey:
    name: str
    algorithm: str
    secret: str
    """Base64, as Knot and dnspython both take it."""

    @staticmethod
    def generate(name: str, algorithm: str = "hmac-sha256") -> TsigKey:
        return TsigKey(name, algorithm, base64.b64encode(secrets.token_bytes(32)).decode())


def render_config(
    *,
    port: int,
    workdir: Path,
    zones: list[str],
    keys: list[TsigKey],
    address: str = "127.0.0.1",
    writers: list[str] | None = None,
) -> str:
    key_lines = "".join(
        f"  - id: {k.name}\n    algorithm: {k.algorithm}\n    secret: {k.secret}\n" for k in keys
    )
    # Keys outside ``writers`` are known to the server but not allowed to write (REFUSED).
    key_ids = ", ".join(writers if writers is not None else [k.name for k in keys])
    zone_lines = "".join(f"  - domain: {z}\n" for z in zones)
    return (
        "server:\n"
        f"  rundir: {workdir}\n"
        f"  listen: {address}@{port}\n"
        # Two workers are plenty on loopback and keep five parallel test runs from
        # starving each other on a two-core machine.
        "  udp-workers: 1\n"
        "  tcp-workers: 1\n"
        "  background-workers: 1\n"
        # Knot drops a TCP client that stalls for 500 ms; a Python client parsing a 20,000-record
        # AXFR on a busy machine does, and the transfer then ends in EOF.
        "  tcp-io-timeout: 10000\n"
        "\n"
        "log:\n"
        "  - target: stderr\n"
        "    any: info\n"
        "\n"
        "database:\n"
        f"  storage: {workdir}/db\n"
        "\n"
        "control:\n"
        f"  listen: {workdir}/knot.sock\n"
        "\n"
        "key:\n"
        f"{key_lines}"
        "\n"
        "acl:\n"
        "  - id: writers\n"
        f"    key: [{key_ids}]\n"
        "    action: [update, transfer]\n"
        "\n"
        "template:\n"
        "  - id: default\n"
        f"    storage: {workdir}/zones\n"
        '    file: "%s.zone"\n'
        "    acl: writers\n"
        # Never rewrite the zone files: the journal holds the changes, the files stay what the
        # test wrote (and a SIGTERM mid-flush cannot corrupt them).
        "    zonefile-sync: -1\n"
        "    zonefile-load: difference-no-serial\n"
        "    journal-content: all\n"
        "    serial-policy: increment\n"
        "\n"
        "zone:\n"
        f"{zone_lines}"
    )


def render_zone(zone: str, extra: list[str] | None = None) -> str:
    lines = [
        f"$ORIGIN {zone}.",
        "$TTL 300",
        f"@ IN SOA ns1.{zone}. hostmaster.{zone}. 1 3600 600 86400 60",
        f"@ IN NS ns1.{zone}.",
        "ns1 IN A 127.0.0.1",
        *(extra or []),
    ]
    return "\n".join(lines) + "\n"


def _free_udp_tcp_port() -> int:
    # knotd needs the same number free for UDP and TCP.
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port for both UDP and TCP")


def find_knotd() -> str:
    for candidate in (shutil.which("knotd"), "/usr/sbin/knotd"):
        if candidate and Path(candidate).is_file():
            return candidate
    raise RuntimeError("knotd is not installed: apt-get install -y knot knot-dnsutils")


@dataclass
class KnotServer:
    """One knotd. ``stop`` then ``start`` keeps the zones and journal (a server outage)."""

    zones: list[str]
    keys: list[TsigKey]
    zone_extra: dict[str, list[str]] = field(default_factory=dict)
    writers: list[str] | None = None
    port: int = field(default_factory=_free_udp_tcp_port)
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="dns-writer-knot-")))
    proc: subprocess.Popen[bytes] | None = None

    @property
    def config_path(self) -> Path:
        return self.workdir / "knot.conf"

    @property
    def log_path(self) -> Path:
        return self.workdir / "knotd.log"

    def start(self, timeout: float = 10.0) -> KnotServer:
        zones_dir = self.workdir / "zones"
        zones_dir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "db").mkdir(exist_ok=True)
        for zone in self.zones:
            path = zones_dir / f"{zone}.zone"
            if not path.exists():
                path.write_text(render_zone(zone, self.zone_extra.get(zone)))
        self.config_path.write_text(
            render_config(
                port=self.port,
                workdir=self.workdir,
                zones=self.zones,
                keys=self.keys,
                writers=self.writers,
            )
        )
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [find_knotd(), "-c", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        self._wait_ready(time.monotonic() + timeout)
        return self

    def _wait_ready(self, deadline: float) -> None:
        import dns.message
        import dns.query
        import dns.rcode

        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"knotd exited with {self.proc.returncode}: {self.log_path.read_text()[-2000:]}"
                )
            loaded = 0
            for zone in self.zones:
                query = dns.message.make_query(f"{zone}.", "SOA")
                with contextlib.suppress(Exception):
                    answer = dns.query.udp(query, "127.0.0.1", timeout=0.2, port=self.port)
                    if answer.rcode() == dns.rcode.NOERROR and answer.answer:
                        loaded += 1
            if loaded == len(self.zones):
                return
            time.sleep(0.05)
        raise TimeoutError(f"knotd did not serve {self.zones} on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

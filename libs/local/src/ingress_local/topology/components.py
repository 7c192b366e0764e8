"""The real components around the services: Envoy, knotd, two BIRDs, echo backends.

Each is a plain child process in its own session (a Ctrl-C reaches only the runner, which then
stops everything in order), with its log under the run's directory.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from ingress_l7_config.testing import bootstrap as envoy_bootstrap
from ingress_l7_config.testing import envoy_binary

from .addresses import AddressPlan
from .overlay import BackendAddress


def find_binary(name: str, *extra: str) -> str | None:
    venv_bin = str(Path(sys.executable).parent)
    path = os.pathsep.join([venv_bin, os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    found = shutil.which(name, path=path)
    if found:
        return found
    return next((c for c in extra if Path(c).is_file()), None)


def free_port(host: str = "127.0.0.1", udp_too: bool = False) -> int:
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port = int(tcp.getsockname()[1])
            if not udp_too:
                return port
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((host, port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port")


@dataclass
class Child:
    """One child process with a log file; ``stop`` is SIGTERM, then SIGKILL."""

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] | None = None
    proc: subprocess.Popen[bytes] | None = None
    dumps_stacks: bool = False
    """A service of ours: before SIGKILL it is asked for its task and thread stacks
    (ingress_runtime's SIGUSR2 and SIGUSR1), so its log says where it was stuck."""

    def start(self) -> Child:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, chars: int = 2000) -> str:
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-chars:]

    def kill(self) -> None:
        """SIGKILL to its whole session, as a crash would end it (no clean shutdown)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 10.0) -> bool:
        """True when it exited by itself after SIGTERM."""
        if self.proc is None:
            return True
        clean = True
        if self.proc.poll() is None:
            # The whole session: `ip netns exec` children and the process itself.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                clean = False
                if self.dumps_stacks:
                    for sig in (signal.SIGUSR2, signal.SIGUSR1):
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(self.proc.pid, sig)
                        time.sleep(1.0)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # anything it left in its session
        return clean


async def wait_until(what: str, check: object, timeout: float, child: Child | None = None) -> None:
    assert callable(check)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child is not None and not child.running:
            raise RuntimeError(f"{child.name} exited: {child.log_tail()}")
        if check():
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{what} not ready after {timeout:.0f} s")


# ------------------------------------------------------------------------------------ Envoy


def envoy(workdir: Path, node: str, xds_port: int) -> Child:
    """Envoy bootstrapped (l7-config's own bootstrap) to take everything over ADS from
    l7-config on loopback; no admin interface."""
    config = workdir / "envoy-bootstrap.json"
    config.write_text(json.dumps(envoy_bootstrap(node, xds_port)))
    binary = envoy_binary()
    argv = [binary, "-c", str(config), "--disable-hot-restart", "--concurrency", "1"]
    return Child("envoy", [*argv, "--log-level", "warn"], workdir / "logs" / "envoy.log")


# ------------------------------------------------------------------------------------ knotd


@dataclass(frozen=True)
class Tsig:
    name: str
    algorithm: str
    secret: str

    @staticmethod
    def generate(name: str = "ingress-local") -> Tsig:
        return Tsig(name, "hmac-sha256", base64.b64encode(secrets.token_bytes(32)).decode())


def knot_config(
    workdir: Path, storage: Path, listen: list[str], zones: list[str], key: Tsig
) -> str:
    listen_list = ", ".join(listen)
    zone_lines = "".join(f"  - domain: {z}\n" for z in zones)
    return (
        "server:\n"
        f"  rundir: {workdir}\n"
        f"  listen: [{listen_list}]\n"
        "  udp-workers: 1\n  tcp-workers: 1\n  background-workers: 1\n"
        "  tcp-io-timeout: 10000\n\n"
        "log:\n  - target: stderr\n    any: info\n\n"
        f"database:\n  storage: {storage}/db\n\n"
        f"control:\n  listen: {workdir}/knot.sock\n\n"
        f"key:\n  - id: {key.name}\n    algorithm: {key.algorithm}\n    secret: {key.secret}\n\n"
        f"acl:\n  - id: writers\n    key: [{key.name}]\n    action: [update, transfer]\n\n"
        "template:\n  - id: default\n"
        f"    storage: {storage}/zones\n"
        '    file: "%s.zone"\n'
        "    acl: writers\n"
        "    zonefile-sync: -1\n"
        "    zonefile-load: difference-no-serial\n"
        "    journal-content: all\n"
        "    serial-policy: increment\n\n"
        f"zone:\n{zone_lines}"
    )


def zone_file(zone: str, ns_address: str) -> str:
    return (
        f"$ORIGIN {zone}.\n$TTL 300\n"
        f"@ IN SOA ns1.{zone}. hostmaster.{zone}. 1 3600 600 86400 60\n"
        f"@ IN NS ns1.{zone}.\n"
        f"ns1 IN A {ns_address}\n"
    )


def knotd(
    workdir: Path, storage: Path, listen: list[str], zones: list[str], key: Tsig, ns_address: str
) -> Child:
    binary = find_binary("knotd", "/usr/sbin/knotd")
    if binary is None:
        raise RuntimeError("knotd is not installed: apt-get install -y knot knot-dnsutils")
    (storage / "zones").mkdir(parents=True, exist_ok=True)
    (storage / "db").mkdir(parents=True, exist_ok=True)
    for zone in zones:
        path = storage / "zones" / f"{zone}.zone"
        if not path.exists():
            path.write_text(zone_file(zone, ns_address))
    rundir = workdir / "knot"
    rundir.mkdir(parents=True, exist_ok=True)
    config = rundir / "knot.conf"
    config.write_text(knot_config(rundir, storage, listen, zones, key))
    os.chmod(config, 0o600)
    return Child("knotd", [binary, "-c", str(config)], workdir / "logs" / "knotd.log")


def dns_answers(server: str, port: int, name: str) -> list[str]:
    """A records of ``name`` straight from the server (dnspython, no recursion)."""
    import dns.exception
    import dns.message
    import dns.query
    import dns.rdatatype

    query = dns.message.make_query(name, "A")
    try:
        answer = dns.query.udp(query, server, timeout=1.0, port=port)
    except (dns.exception.DNSException, OSError):
        return []
    return sorted(
        rr.address for rrset in answer.answer if rrset.rdtype == dns.rdatatype.A for rr in rrset
    )


def dns_serves(server: str, port: int, zone: str) -> bool:
    import dns.exception
    import dns.message
    import dns.query
    import dns.rcode

    try:
        answer = dns.query.udp(dns.message.make_query(f"{zone}.", "SOA"), server, 0.5, port)
    except (dns.exception.DNSException, OSError):
        return False
    return answer.rcode() == dns.rcode.NOERROR and bool(answer.answer)


# ------------------------------------------------------------------------------------- BIRD


def tor_bird_config(plan: AddressPlan, l4_asn: int, tor_asn: int, password: str | None) -> str:
    """The ToR: learns the VIP /32s from the L4 node and installs them in its kernel table."""
    if password is not None and ('"' in password or "\\" in password or "\n" in password):
        raise ValueError("the BGP password holds characters BIRD cannot take literally")
    lines = [
        f"router id {plan.tor_up_addr};",
        "protocol device { scan time 10; }",
        "protocol kernel { ipv4 { import none; export all; }; merge paths on limit 16; }",
        "protocol bgp l4_a {",
        f"  local {plan.tor_up_addr} as {tor_asn};",
        f"  neighbor {plan.l4_down_addr} as {l4_asn};",
        "  hold time 9; keepalive time 3; connect retry time 1;",
        *([f'  password "{password}";'] if password else []),
        "  ipv4 { import all; export none; };",
        "}",
    ]
    return "\n".join(lines) + "\n"


def bird(name: str, ns: str, config: Path, socket_path: Path, workdir: Path) -> Child:
    binary = find_binary("bird", "/usr/sbin/bird")
    if binary is None:
        raise RuntimeError("BIRD is not installed: apt-get install -y bird2")
    pid = workdir / f"{name}.pid"
    argv = ["ip", "netns", "exec", ns, binary, "-f", "-c", str(config), "-s", str(socket_path)]
    return Child(name, [*argv, "-P", str(pid)], workdir / "logs" / f"{name}.log")


def kernel_routes(ns: str) -> dict[str, list[str]]:
    """BIRD's routes in a namespace's kernel table: prefix -> next hops."""
    out = subprocess.run(
        ["ip", "-n", ns, "-j", "route", "show", "proto", "bird"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    routes: dict[str, list[str]] = {}
    for route in json.loads(out or "[]"):
        hops = [route["gateway"]] if "gateway" in route else []
        hops += [h["gateway"] for h in route.get("nexthops", []) if "gateway" in h]
        dst = route["dst"] if "/" in route["dst"] else f"{route['dst']}/32"
        routes[dst] = sorted(hops)
    return routes


# ------------------------------------------------------------------------------ echo servers


class EchoBackends:
    """HTTP/1.1 echo servers on the EndpointSlices' loopback addresses: each answers with the
    Service it stands for, the address it listens on, the path and the Host header.

    They live like pods: a new backend listens before the manifests that name it reach the
    watcher (a pod is ready before its endpoint is), and one that left the manifests keeps
    serving for ``grace`` seconds (a terminating pod keeps serving while the endpoint removal
    propagates), so that endpoint churn alone never refuses a request.
    """

    def __init__(self, grace: float = 0.0) -> None:
        self.grace = grace
        self.servers: dict[BackendAddress, asyncio.Server] = {}
        self.failed: dict[BackendAddress, str] = {}
        self.leaving: dict[BackendAddress, float] = {}
        """Backends no longer in the manifests -> when they stop (monotonic)."""
        self._connections: dict[BackendAddress, set[asyncio.StreamWriter]] = {}

    async def reconcile(self, wanted: set[BackendAddress]) -> None:
        now = time.monotonic()
        for backend in wanted:
            self.leaving.pop(backend, None)
        for gone in [b for b in self.servers if b not in wanted and b not in self.leaving]:
            self.leaving[gone] = now + self.grace
        for backend, until in list(self.leaving.items()):
            if until <= now:
                del self.leaving[backend]
                self._stop(backend)
        self.failed = {b: why for b, why in self.failed.items() if b in wanted}
        for backend in sorted(wanted - set(self.servers), key=lambda b: (b.address, b.port)):
            try:
                self.servers[backend] = await asyncio.start_server(
                    self._handler(backend), backend.address, backend.port
                )
                self.failed.pop(backend, None)
            except OSError as exc:
                self.failed[backend] = exc.strerror or str(exc)

    def _stop(self, backend: BackendAddress) -> None:
        """The pod is gone: no more listening, and its open connections are cut."""
        server = self.servers.pop(backend, None)
        if server is not None:
            server.close()
        for writer in self._connections.pop(backend, set()):
            writer.close()

    async def close(self) -> None:
        for server in self.servers.values():
            server.close()
        for writers in self._connections.values():
            for writer in writers:
                writer.close()
        self._connections.clear()
        for server in self.servers.values():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2)
        self.servers.clear()
        self.leaving.clear()

    def _handler(
        self, backend: BackendAddress
    ) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self._serve(backend, reader, writer)

        return handle

    async def _serve(
        self, backend: BackendAddress, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        connections = self._connections.setdefault(backend, set())
        connections.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                _, path, _ = lines[0].split(" ", 2)
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (line.partition(":") for line in lines[1:] if line)
                }
                length = int(headers.get("content-length", "0") or 0)
                if length:
                    await reader.readexactly(length)
                body = (
                    f"service={backend.service}\nbackend={backend.address}:{backend.port}\n"
                    f"path={path}\nhost={headers.get('host', '')}\n"
                ).encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n"
                    + f"content-length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        except ValueError:
            pass
        finally:
            connections.discard(writer)
            writer.close()


# ------------------------------------------------------------------------------ nats-server


def nats_server(binary: str, port: int, store: Path, log_dir: Path) -> Child:
    """nats-server with JetStream on loopback, in a session of its own (like every child here:
    a Ctrl-C must not stop the bus before the services have withdrawn through it)."""
    store.mkdir(parents=True, exist_ok=True)
    argv = [binary, "-js", "-sd", str(store), "-a", "127.0.0.1", "-p", str(port)]
    return Child(
        "nats-server", [*argv, "-l", str(log_dir / "nats-server.log")], log_dir / "nats-server.out"
    )


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), 0.2):
        return True
    return False

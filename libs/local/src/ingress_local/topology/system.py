"""The whole system on this machine: nats-server, the six services, Envoy, knotd, BIRD for an
L4 node and a ToR in network namespaces, nftables at the L4 node, echo backends, a client.

``LocalSystem`` is used by ``ingress-local`` and by tests/e2e alike. ``start`` either brings
everything up or undoes what it did and raises; ``stop`` always leaves nothing behind: no
namespaces (the nft table, VIP interface and BIRDs live inside them), no processes, no
interfaces or routes in the root namespace, no /etc/netns entry.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingress_events.bus import Bus, BusSettings
from ingress_l4_programmer.domain.nft import parse_table
from ingress_testkit.nats_server import find_nats_server

from . import components as comp
from .addresses import DEFAULT_VIP_POOL, L4_ASN_DEFAULT, TOR_ASN_DEFAULT, AddressPlan, choose_plan
from .netns import Network
from .overlay import L7_POOL_NAMESPACE, L7_POOL_SERVICE, L7Pool, Overlay, backend_addresses, zones

NFT_TABLE = "ingress_l4"
"""The L4 node's nftables table (l4-programmer's NFT_TABLE)."""


@dataclass(frozen=True)
class ServiceEntry:
    name: str
    issue: int

    @property
    def command(self) -> str:
        return self.name if self.name.startswith("ingress-") else f"ingress-{self.name}"

    @property
    def env_prefix(self) -> str:
        return self.name.upper().replace("-", "_") + "_"


SERVICES = (
    ServiceEntry("ingress-watcher", 3),
    ServiceEntry("ipam", 4),
    ServiceEntry("l4-programmer", 5),
    ServiceEntry("l7-config", 6),
    ServiceEntry("dns-writer", 7),
    ServiceEntry("bgp-speaker", 8),
)
STOP_ORDER = ("ingress-watcher", "ipam", "dns-writer", "l7-config", "bgp-speaker", "l4-programmer")


def find_command(command: str) -> str | None:
    venv_bin = Path(sys.executable).parent
    return shutil.which(command, path=f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}")


def topology_problems() -> list[str]:
    """Why the network topology cannot run here (empty: it can)."""
    problems = []
    if os.geteuid() != 0:
        problems.append("not root (network namespaces need it)")
    for binary in ("ip", "nft", "curl"):
        if comp.find_binary(binary) is None:
            problems.append(f"{binary} is not installed")
    return problems


@dataclass
class Options:
    manifests: Path
    state_dir: Path
    nats_port: int
    vip_pool: str = DEFAULT_VIP_POOL
    sync_interval: float = 0.5
    backend_grace_seconds: float = 10.0
    """How long an echo backend keeps serving after it left the manifests (a pod's grace)."""
    extra_env: Mapping[str, str] = field(default_factory=dict)
    """Added to every service's environment (e.g. shorter hold-downs in tests)."""
    say: Callable[[str], None] = print


@dataclass
class PeerInfo:
    local_asn: int = L4_ASN_DEFAULT
    peer_asn: int = TOR_ASN_DEFAULT
    password: str | None = None


class LocalSystem:
    def __init__(self, options: Options) -> None:
        self.o = options
        self.plan: AddressPlan | None = None
        self.nats: comp.Child | None = None
        self.nats_url = f"nats://127.0.0.1:{options.nats_port}"
        self.bus: Bus | None = None
        self.network: Network | None = None
        self.overlay: Overlay | None = None
        self.backends = comp.EchoBackends(options.backend_grace_seconds)
        self.infra: list[comp.Child] = []
        self.services: dict[str, comp.Child] = {}
        self.missing: list[ServiceEntry] = []
        self.knot_port = 0
        self.zones: list[str] = []
        self.l7: L7Pool | None = None
        self._sync_task: asyncio.Task[None] | None = None
        self.xds_port = 0
        self._stopped = False

    # ------------------------------------------------------------------ paths
    @property
    def run_dir(self) -> Path:
        return self.o.state_dir / "run"

    @property
    def overlay_dir(self) -> Path:
        return self.run_dir / "manifests"

    @property
    def log_dir(self) -> Path:
        return self.o.state_dir / "logs"

    def log_of(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    # ------------------------------------------------------------------ start
    async def start(self) -> LocalSystem:
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def _start(self) -> None:
        say = self.o.say
        binary = find_nats_server()
        if binary is None:
            raise RuntimeError("nats-server is not installed: run scripts/setup first")
        problems = topology_problems()
        if problems:
            raise RuntimeError("the local topology cannot run here: " + "; ".join(problems))
        state = self.o.state_dir
        state.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(exist_ok=True)
        shutil.rmtree(self.run_dir, ignore_errors=True)
        self.run_dir.mkdir()
        os.chmod(self.run_dir, stat.S_IRWXU)  # TSIG key, BGP password, TLS keys live here
        self._fresh_state_if_topology_changed()

        self.nats = comp.nats_server(binary, self.o.nats_port, state / "nats", self.log_dir)
        self.nats.start()
        await comp.wait_until(
            "nats-server", lambda: comp.port_open(self.o.nats_port), 15, self.nats
        )
        say(f"nats-server (JetStream) on {self.nats_url}, store {state / 'nats'}")
        self.bus = await Bus.connect(
            BusSettings(servers=[self.nats_url], source="//ingress-domain/local/ingress-local")
        )
        await self.bus.ensure_streams()

        plan = self.plan = choose_plan(self.o.vip_pool)
        self.network = Network(plan, dns_server=plan.root_addr)
        self.network.create()
        say(
            f"network namespaces {', '.join(plan.namespaces)}; links in {plan.block}; "
            f"VIP pool {plan.vip_pool}"
        )
        self.l7 = L7Pool(plan.root_addr, comp.free_port(plan.root_addr), 0)
        self.l7 = L7Pool(plan.root_addr, self.l7.http_port, comp.free_port(plan.root_addr))
        self.overlay = Overlay(self.o.manifests, self.overlay_dir, plan, self.l7)
        await self.sync_now()
        self.zones = zones(self.overlay.documents()) or ["example.com"]

        await self._start_knot()
        peer = self._peer()
        await self._start_birds(peer)
        xds_port = self.xds_port = comp.free_port()
        envoy = comp.envoy(self.run_dir, "ingress-local-envoy", xds_port)
        envoy.log_path = self.log_of("envoy")
        self.infra.append(envoy.start())
        say(
            f"envoy: listeners {plan.root_addr}:{self.l7.http_port} (http) and "
            f":{self.l7.https_port} (https), xDS from l7-config on 127.0.0.1:{xds_port}"
        )
        self._start_services(xds_port)
        self._sync_task = asyncio.create_task(self._sync_loop())

    def _fresh_state_if_topology_changed(self) -> None:
        """The bus and knotd's zones persist in the state directory; allocations made for
        another VIP pool (an older runner used loopback) would stay held, so such a store starts
        afresh."""
        marker = self.o.state_dir / "topology.json"
        want = {"vip_pool": self.o.vip_pool, "version": 1}
        have: Any = None
        with contextlib.suppress(OSError, ValueError):
            have = json.loads(marker.read_text())
        if have != want:
            for sub in ("nats", "knot"):
                if (self.o.state_dir / sub).exists():
                    self.o.say(f"state for another topology in {self.o.state_dir / sub}: cleared")
                    shutil.rmtree(self.o.state_dir / sub, ignore_errors=True)
            marker.write_text(json.dumps(want))

    async def _start_knot(self) -> None:
        assert self.plan is not None
        self.knot_port = comp.free_port(udp_too=True)
        self.tsig = comp.Tsig.generate()
        self.tsig_file = self.run_dir / "tsig.secret"
        self.tsig_file.write_text(self.tsig.secret + "\n")
        os.chmod(self.tsig_file, 0o600)
        listen = [f"127.0.0.1@{self.knot_port}", f"{self.plan.root_addr}@53"]
        knot = comp.knotd(
            self.run_dir,
            self.o.state_dir / "knot",
            listen,
            self.zones,
            self.tsig,
            self.plan.root_addr,
        )
        knot.log_path = self.log_of("knotd")
        self.infra.append(knot.start())
        await comp.wait_until(
            "knotd",
            lambda: all(comp.dns_serves("127.0.0.1", self.knot_port, z) for z in self.zones),
            20,
            knot,
        )
        self.o.say(
            f"knotd: zones {', '.join(self.zones)} at {self.plan.root_addr}:53 (the client's "
            f"resolver) and 127.0.0.1:{self.knot_port} (dns-writer, TSIG key {self.tsig.name})"
        )

    def _peer(self) -> PeerInfo:
        assert self.overlay is not None
        for doc in self.overlay.documents():
            if doc.get("kind") != "BgpPeer":
                continue
            spec = doc.get("spec") or {}
            info = PeerInfo(
                local_asn=int(spec.get("localASN") or L4_ASN_DEFAULT),
                peer_asn=int(spec.get("peerASN") or TOR_ASN_DEFAULT),
            )
            ref = spec.get("passwordSecretRef")
            if isinstance(ref, Mapping):
                namespace = ref.get("namespace") or L7_POOL_NAMESPACE
                path = (
                    self.overlay.secrets_dir
                    / namespace
                    / str(ref.get("name"))
                    / str(ref.get("key"))
                )
                if path.is_file():
                    info.password = path.read_text().strip()
            return info
        return PeerInfo()

    async def _start_birds(self, peer: PeerInfo) -> None:
        assert self.plan is not None
        plan, bird_dir = self.plan, self.run_dir / "bird"
        bird_dir.mkdir()
        tor_conf = bird_dir / "tor.conf"
        tor_conf.write_text(
            comp.tor_bird_config(plan, peer.local_asn, peer.peer_asn, peer.password)
        )
        os.chmod(tor_conf, 0o600)
        self.tor_socket = bird_dir / "tor.ctl"
        tor = comp.bird("bird-tor", plan.ns_tor, tor_conf, self.tor_socket, bird_dir)
        tor.log_path = self.log_of("bird-tor")
        self.infra.append(tor.start())
        self.l4_bird_conf = bird_dir / "l4.conf"
        self.l4_bird_conf.write_text(self._l4_bootstrap())
        os.chmod(self.l4_bird_conf, 0o600)
        self.l4_socket = bird_dir / "l4.ctl"
        l4 = comp.bird("bird-l4", plan.ns_l4, self.l4_bird_conf, self.l4_socket, bird_dir)
        l4.log_path = self.log_of("bird-l4")
        self.infra.append(l4.start())
        for child, sock in ((tor, self.tor_socket), (l4, self.l4_socket)):
            await comp.wait_until(child.name, sock.exists, 10, child)
        self.o.say(
            f"BIRD: ToR (AS {peer.peer_asn}) in {plan.ns_tor} at {plan.tor_up_addr}, "
            f"L4 node {plan.node} (AS {peer.local_asn}) in {plan.ns_l4} at {plan.l4_down_addr}"
        )

    def _l4_bootstrap(self) -> str:
        """What bgp-speaker finds before its first reconcile: no peers, no routes."""
        assert self.plan is not None
        try:
            from ingress_bgp_speaker.domain.model import BirdDesired
            from ingress_bgp_speaker.domain.render import render
        except ImportError:
            return f"router id {self.plan.l4_down_addr};\nprotocol device {{ }}\n"
        desired = BirdDesired(
            node=self.plan.node, router_id=self.plan.l4_down_addr, peers=(), pools=()
        )
        return str(render(desired))

    def service_env(self, entry: ServiceEntry, xds_port: int) -> dict[str, str]:
        assert self.plan is not None and self.overlay is not None
        assert self.l7 is not None
        plan = self.plan
        per_service: dict[str, dict[str, str]] = {
            "ingress-watcher": {
                "MANIFESTS_DIR": str(self.overlay.target),
                "STATUS_DIR": str(self.run_dir / "status"),
            },
            "ipam": {"DEFAULT_POOL_CIDRS": "[]", "COOLDOWN_SECONDS": "30"},
            "l4-programmer": {
                "NODE_NAME": plan.node,
                "NETNS": plan.ns_l4,
                "DATAPLANE": "nftables",
                "NFT_TABLE": NFT_TABLE,
                "SCHEDULER": "numgen",
                "POOL_NAMESPACE": L7_POOL_NAMESPACE,
                "POOL_SERVICE": L7_POOL_SERVICE,
                "RESYNC_SECONDS": "30",  # the default; a full read is ~1.5 s at 20,000 services
            },
            "l7-config": {
                "XDS_HOST": "127.0.0.1",
                "XDS_PORT": str(xds_port),
                "LISTEN_ADDRESS": plan.root_addr,
                "HTTP_PORT": str(self.l7.http_port),
                "HTTPS_PORT": str(self.l7.https_port),
                "HTTPS_REDIRECT_PORT": "443",
                "SECRETS_DIR": str(self.overlay.secrets_dir),
            },
            "dns-writer": {
                "SERVER": "127.0.0.1",
                "PORT": str(self.knot_port),
                "ZONES": ",".join(self.zones),
                "TSIG_KEY_NAME": self.tsig.name,
                "TSIG_ALGORITHM": self.tsig.algorithm,
                "TSIG_SECRET_FILE": str(self.tsig_file),
            },
            "bgp-speaker": {
                "NODE": plan.node,
                "BIRD_SOCKET": str(self.l4_socket),
                "BIRD_CONFIG": str(self.l4_bird_conf),
                "ROUTER_ID": plan.l4_down_addr,
                "SECRETS_DIR": str(self.overlay.secrets_dir),
            },
        }
        env = dict(os.environ)
        prefix = entry.env_prefix
        settings = {
            "NATS_URL": self.nats_url,
            "CLUSTER": "local",
            **per_service.get(entry.name, {}),
        }
        env.update({prefix + k: v for k, v in settings.items()})
        for key, value in self.o.extra_env.items():
            if key.startswith(prefix):
                env[key] = value
        return env

    def _start_services(self, xds_port: int) -> None:
        for entry in SERVICES:
            path = find_command(entry.command)
            if path is None:
                self.missing.append(entry)
                continue
            env = self.service_env(entry, xds_port)
            argv = [path, "run"]
            child = comp.Child(entry.name, argv, self.log_of(entry.name), env, dumps_stacks=True)
            self.services[entry.name] = child.start()
            self.o.say(f"started {entry.name} (log: {child.log_path})")
        for entry in self.missing:
            self.o.say(
                f"not built yet: {entry.name} (issue #{entry.issue}) -- its stage stays empty"
            )

    # ------------------------------------------------------------------ running
    async def _sync_loop(self) -> None:
        assert self.overlay is not None
        while True:
            await asyncio.sleep(self.o.sync_interval)
            try:
                await self.sync_now()
            except OSError as exc:
                self.o.say(f"!! mirroring {self.o.manifests}: {exc}")

    async def sync_now(self) -> None:
        """One pass: backends new in examples/ start listening first, then the overlay (what
        the watcher reads) follows; backends that left keep serving for their grace."""
        assert self.overlay is not None
        await self.backends.reconcile(backend_addresses(self.overlay.source_documents()))
        self.overlay.sync()

    # ------------------------------------------------------------------ faults
    def kill_service(self, name: str) -> None:
        """SIGKILL one service (a crash: no clean shutdown, nothing acked that was in hand)."""
        self.services[name].kill()

    def start_service(self, name: str) -> None:
        """Start a service again, with the same command and environment."""
        child = self.services[name]
        if child.running:
            raise RuntimeError(f"{name} is still running")
        child.start()

    async def restart_nats(self, kill: bool = False) -> None:
        """Stop nats-server (SIGKILL with ``kill``, else SIGTERM) and start it again on the
        same port and file store; every client reconnects by itself."""
        assert self.nats is not None
        if kill:
            self.nats.kill()
        else:
            await asyncio.to_thread(self.nats.stop, 10.0)
        self.nats.start()
        await comp.wait_until(
            "nats-server", lambda: comp.port_open(self.o.nats_port), 15, self.nats
        )

    def exited(self) -> list[str]:
        return [
            f"{c.name} exited with {c.proc.returncode if c.proc else '?'}; see {c.log_path}"
            for c in [*self.infra, *self.services.values()]
            if not c.running
        ]

    def tor_routes(self) -> dict[str, list[str]]:
        assert self.plan is not None
        return comp.kernel_routes(self.plan.ns_tor)

    def dns_a(self, name: str) -> list[str]:
        return comp.dns_answers("127.0.0.1", self.knot_port, name)

    def resolver_a(self, name: str) -> list[str]:
        """A records as the client's resolver sees them (knotd on the link address, port 53)."""
        assert self.plan is not None
        return comp.dns_answers(self.plan.root_addr, 53, name)

    def nft_services(self) -> set[tuple[str, str, int]]:
        """(VIP, protocol, port) of every virtual service in the L4 node's nftables table, as
        l4-programmer's own read-back parses it."""
        assert self.plan is not None
        out = subprocess.run(
            ["ip", "netns", "exec", self.plan.ns_l4, "nft", "-j", "list", "table", "ip", NFT_TABLE],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        if not out.strip():
            return set()
        return {(k.vip, k.protocol, k.port) for k in parse_table(json.loads(out))}

    # ------------------------------------------------------------------ stop
    async def stop(self) -> list[str]:
        """Stop everything in order; returns what did not go cleanly (also printed)."""
        if self._stopped:
            return []
        self._stopped = True
        problems: list[str] = []
        if self._sync_task is not None:
            self._sync_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sync_task
        # Services first (bgp-speaker withdraws through BIRD, so BIRD must still run), in
        # parallel: each gets SIGTERM and its own grace period.
        order = [n for n in STOP_ORDER if n in self.services]
        results = await asyncio.gather(
            *(asyncio.to_thread(self.services[n].stop, 30.0) for n in order)
        )
        for name, clean in zip(order, results, strict=True):
            if not clean:
                # The run directory goes below: keep where it was stuck (the stacks it printed).
                problems.append(
                    f"{name} did not stop in 30 s; killed. The end of its log:\n"
                    + self.services[name].log_tail(6000)
                )
        for child in reversed(self.infra):
            if not await asyncio.to_thread(child.stop, 10.0):
                problems.append(f"{child.name} did not stop in 10 s; killed")
        await self.backends.close()
        if self.network is not None:
            problems += await asyncio.to_thread(self.network.destroy)
        if self.bus is not None:
            with contextlib.suppress(Exception):
                await self.bus.close()
        if self.nats is not None and not await asyncio.to_thread(self.nats.stop, 10.0):
            problems.append("nats-server did not stop in 10 s; killed")
        shutil.rmtree(self.run_dir, ignore_errors=True)
        for problem in problems:
            self.o.say(f"!! {problem}")
        return problems


async def wait_for(
    what: str, check: Callable[[], Any], timeout: float, interval: float = 0.2
) -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy; that value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(interval)
    raise TimeoutError(f"{what}: not after {timeout:.0f} s (last: {last!r})")

"""A ToR and L4 nodes, each a real BIRD in its own network namespace, joined by veth pairs.

Link i joins the ToR (10.255.<i+1>.1/30) and node i (10.255.<i+1>.2/30). The ToR runs eBGP
(AS 64500) to every node (AS 64512) with ECMP into its kernel table (``merge paths on``) and
sends a route of its own (198.51.100.0/24) so that tests can see nodes reject it. Names carry a
random suffix; :meth:`close` kills the BIRDs and deletes the namespaces (veths go with them).

Options: ``tor_bfd`` runs BFD on the ToR (``bfd on`` per session, or ``bfd graceful``, which turns
a BFD failure into a graceful restart instead of a withdrawal); ``ipv6`` adds fd00:255:<i+1>::1/64
and ::2/64 on each link and an IPv6 session (AS numbers as above) with ECMP into the ToR's IPv6
kernel table. The ToR is a graceful-restart helper (BIRD's default, ``graceful restart aware``).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ingress_bgp_speaker.domain.model import BirdDesired
from ingress_bgp_speaker.domain.render import render

TOR_ASN = 64500
NODE_ASN = 64512
TOR_ROUTE = "198.51.100.0/24"


def _run(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


@dataclass
class Node:
    name: str
    index: int
    netns: str
    socket: str
    config: str
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"10.255.{self.index + 1}.2"

    @property
    def tor_address(self) -> str:
        return f"10.255.{self.index + 1}.1"

    @property
    def address6(self) -> str:
        return f"fd00:255:{self.index + 1}::2"

    @property
    def tor_address6(self) -> str:
        return f"fd00:255:{self.index + 1}::1"


@dataclass
class BirdLab:
    workdir: Path
    node_names: list[str]
    tor_passwords: dict[str, str | None] = field(default_factory=dict)
    tor_bfd: Literal["off", "on", "graceful"] = "off"
    ipv6: bool = False
    suffix: str = field(default_factory=lambda: secrets.token_hex(3))
    nodes: list[Node] = field(default_factory=list)
    tor_socket: str = ""
    _tor: subprocess.Popen[bytes] | None = None
    _namespaces: list[str] = field(default_factory=list)

    @property
    def tor_netns(self) -> str:
        return f"bgpspk-{self.suffix}-tor"

    def start(self) -> BirdLab:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def _netns(self, name: str) -> str:
        _run("ip", "netns", "add", name)
        self._namespaces.append(name)
        _run("ip", "-n", name, "link", "set", "lo", "up")
        return name

    def _start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._netns(self.tor_netns)
        for i, name in enumerate(self.node_names):
            node = Node(
                name=name,
                index=i,
                netns=self._netns(f"bgpspk-{self.suffix}-n{i}"),
                socket=str(self.workdir / f"{name}.ctl"),
                config=str(self.workdir / f"{name}.conf"),
            )
            tor_if, node_if = f"bt{i}{self.suffix}", f"bn{i}{self.suffix}"
            _run("ip", "link", "add", tor_if, "type", "veth", "peer", "name", node_if)
            _run("ip", "link", "set", tor_if, "netns", self.tor_netns)
            _run("ip", "link", "set", node_if, "netns", node.netns)
            _run("ip", "-n", self.tor_netns, "addr", "add", f"{node.tor_address}/30", "dev", tor_if)
            _run("ip", "-n", node.netns, "addr", "add", f"{node.address}/30", "dev", node_if)
            if self.ipv6:
                for ns, addr, dev in (
                    (self.tor_netns, node.tor_address6, tor_if),
                    (node.netns, node.address6, node_if),
                ):
                    _run("ip", "-n", ns, "addr", "add", f"{addr}/64", "dev", dev, "nodad")
            _run("ip", "-n", self.tor_netns, "link", "set", tor_if, "up")
            _run("ip", "-n", node.netns, "link", "set", node_if, "up")
            # What the service's ConfigFile finds before its first reconcile: no peers, no
            # routes, as a DaemonSet's init step would leave it.
            bootstrap = BirdDesired(node=name, router_id=node.address, peers=(), pools=())
            Path(node.config).write_text(render(bootstrap))
            os.chmod(node.config, 0o600)
            node.process = self._bird(node.netns, node.config, node.socket, name)
            self.nodes.append(node)
        self.tor_socket = str(self.workdir / "tor.ctl")
        tor_conf = self.workdir / "tor.conf"
        tor_conf.write_text(self.tor_config())
        self._tor = self._bird(self.tor_netns, str(tor_conf), self.tor_socket, "tor")
        for path in [self.tor_socket, *(n.socket for n in self.nodes)]:
            self._wait_for_socket(path)

    def stop_tor(self) -> None:
        """The ToR goes down (BIRD ends: sessions close with a Cease notification)."""
        assert self._tor is not None
        self._tor.terminate()
        self._tor.wait(timeout=10)

    def start_tor(self) -> None:
        Path(self.tor_socket).unlink(missing_ok=True)
        tor_conf = str(self.workdir / "tor.conf")
        self._tor = self._bird(self.tor_netns, tor_conf, self.tor_socket, "tor")
        self._wait_for_socket(self.tor_socket)

    def node_graceful_restart(self, index: int) -> None:
        """``birdc graceful restart`` on a node: its BIRD exits, telling nobody, so that helpers
        keep its routes (stale) until it is back."""
        node = self.nodes[index]
        assert node.process is not None
        _run("birdc", "-s", node.socket, "graceful", "restart")
        node.process.wait(timeout=10)

    def start_node(self, index: int, *, recovery: bool = True) -> None:
        """Start a node's BIRD again from its config file (``-R``: graceful restart recovery)."""
        node = self.nodes[index]
        Path(node.socket).unlink(missing_ok=True)
        node.process = self._bird(
            node.netns, node.config, node.socket, node.name, ["-R"] if recovery else []
        )
        self._wait_for_socket(node.socket)

    def birdc(self, socket: str, *command: str) -> str:
        return _run("birdc", "-s", socket, *command)

    def drop_from_node(self, index: int) -> None:
        """A silent failure: the ToR drops every packet from the node (BGP and BFD), without
        the link going down, as a dead node or a broken cable would look."""
        node = self.nodes[index]
        rules = (
            "table inet bgpspk {\n  chain input {\n    type filter hook input priority 0;\n"
            f'    iifname "bt{node.index}{self.suffix}" drop\n  }}\n}}\n'
        )
        subprocess.run(
            ["ip", "netns", "exec", self.tor_netns, "nft", "-f", "-"],
            input=rules,
            check=True,
            capture_output=True,
            text=True,
        )

    def undrop(self) -> None:
        """Undo :meth:`drop_from_node`."""
        _run("ip", "netns", "exec", self.tor_netns, "nft", "delete", "table", "inet", "bgpspk")

    def tor_config(self) -> str:
        lines = [
            "router id 10.255.0.1;",
            "timeformat protocol iso long;",
            "protocol device { scan time 10; }",
            # ECMP: one kernel route with a next hop per node announcing the same VIP.
            "protocol kernel { ipv4 { import none; export all; }; merge paths on limit 16; }",
            f"protocol static tor_own {{ ipv4; route {TOR_ROUTE} blackhole; }}",
        ]
        if self.tor_bfd != "off":
            lines.append("protocol bfd { }")
        if self.ipv6:
            lines.append(
                "protocol kernel { ipv6 { import none; export all; }; merge paths on limit 16; }"
            )
        bfd = {"off": [], "on": ["  bfd on;"], "graceful": ["  bfd graceful;"]}[self.tor_bfd]
        for node in self.nodes:
            password = self.tor_passwords.get(node.name)
            sessions = [(node.tor_address, node.address, "", "ipv4")]
            if self.ipv6:
                sessions.append((node.tor_address6, node.address6, "_v6", "ipv6"))
            for local, neighbor, tag, channel in sessions:
                export = 'where proto = "tor_own"' if channel == "ipv4" else "none"
                lines += [
                    f"protocol bgp {node.name.replace('-', '_')}{tag} {{",
                    f"  local {local} as {TOR_ASN};",
                    f"  neighbor {neighbor} as {NODE_ASN};",
                    "  hold time 6; keepalive time 2; connect retry time 1;",
                    *([f'  password "{password}";'] if password else []),
                    *bfd,
                    f"  {channel} {{ import all; export {export}; }};",
                    "}",
                ]
        return "\n".join(lines) + "\n"

    def _bird(
        self, netns: str, config: str, socket: str, name: str, extra: list[str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as BIRD
        return subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                netns,
                "bird",
                "-f",
                "-c",
                config,
                "-s",
                socket,
                "-P",
                str(self.workdir / f"{name}.pid"),
                *(extra or []),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    @staticmethod
    def _wait_for_socket(path: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not os.path.exists(path):
            if time.monotonic() > deadline:
                raise RuntimeError(f"BIRD did not open {path}")
            time.sleep(0.02)

    def tor_kernel_route(self, prefix: str) -> list[str]:
        """Next hops of the ToR's kernel route to ``prefix`` ([] if there is none)."""
        family = "-6" if ":" in prefix else "-4"
        out = _run("ip", "-n", self.tor_netns, family, "-j", "route", "show", "exact", prefix)
        routes = json.loads(out or "[]")
        hops: list[str] = []
        for route in routes:
            if "gateway" in route:
                hops.append(route["gateway"])
            hops += [h["gateway"] for h in route.get("nexthops", []) if "gateway" in h]
        return sorted(hops)

    def tor_kernel_routes(self) -> set[str]:
        out = _run("ip", "-n", self.tor_netns, "-j", "route", "show", "proto", "bird")
        return {r["dst"] for r in json.loads(out or "[]")}

    def close(self) -> None:
        procs = [self._tor, *(n.process for n in self.nodes)]
        for proc in procs:
            if proc is not None and proc.poll() is None:
                proc.terminate()
        for proc in procs:
            if proc is not None:
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        for name in reversed(self._namespaces):
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)
        self._namespaces.clear()

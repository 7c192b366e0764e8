"""The address plan of one local topology: namespace names, links, VIP pool (pure).

Four places joined by three veth links, each a private /30 inside one random 10.a.b.0/28:

    root (services, Envoy, knotd, backends) --.0/30-- L4 --.4/30-- ToR --.8/30-- client

The root side of the first link carries the Envoy listeners and the DNS server address the
client resolves at. VIPs come from a documentation range (198.51.100.0/28 by default) and only
ever exist inside the namespaces this run created.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import subprocess
from dataclasses import dataclass

DEFAULT_VIP_POOL = "198.51.100.0/28"
L4_ASN_DEFAULT = 65001
TOR_ASN_DEFAULT = 65000


@dataclass(frozen=True)
class AddressPlan:
    tag: str
    """Random hex, part of every namespace and interface name of this run."""
    block: ipaddress.IPv4Network
    """The /28 the three links are cut from."""
    vip_pool: ipaddress.IPv4Network
    """The VIP range every VipPool of the manifests is rewritten to."""
    node: str = "l4-a"
    """The L4 node's name (l4-programmer and bgp-speaker)."""

    @property
    def prefix(self) -> str:
        return f"idl{self.tag}"

    # namespaces
    @property
    def ns_l4(self) -> str:
        return f"{self.prefix}-l4"

    @property
    def ns_tor(self) -> str:
        return f"{self.prefix}-tor"

    @property
    def ns_client(self) -> str:
        return f"{self.prefix}-cl"

    @property
    def namespaces(self) -> tuple[str, str, str]:
        return (self.ns_l4, self.ns_tor, self.ns_client)

    # interfaces (at most 15 characters: "idl" + 6 hex + 2)
    @property
    def if_root(self) -> str:
        return f"{self.prefix}r0"

    @property
    def if_l4_up(self) -> str:
        return f"{self.prefix}l0"

    @property
    def if_l4_down(self) -> str:
        return f"{self.prefix}l1"

    @property
    def if_tor_up(self) -> str:
        return f"{self.prefix}t0"

    @property
    def if_tor_down(self) -> str:
        return f"{self.prefix}t1"

    @property
    def if_client(self) -> str:
        return f"{self.prefix}c0"

    def _host(self, n: int) -> str:
        return str(self.block.network_address + n)

    # addresses
    @property
    def root_addr(self) -> str:
        """Envoy listeners and the DNS server, seen by the L4 node and the client."""
        return self._host(1)

    @property
    def l4_up_addr(self) -> str:
        return self._host(2)

    @property
    def l4_down_addr(self) -> str:
        """The L4 node's BGP address and router id (the ToR's next hop for the VIPs)."""
        return self._host(5)

    @property
    def tor_up_addr(self) -> str:
        """The ToR's address on the L4 link: the BgpPeer address."""
        return self._host(6)

    @property
    def tor_down_addr(self) -> str:
        return self._host(9)

    @property
    def client_addr(self) -> str:
        return self._host(10)

    def link(self, first_host: int) -> str:
        return str(ipaddress.IPv4Network(f"{self.block.network_address + first_host - 1}/30"))

    @property
    def vip_exclude(self) -> str:
        return str(self.vip_pool.network_address)


def _used_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network routed or addressed in the root namespace now."""
    nets: list[ipaddress.IPv4Network] = []
    for cmd in (["ip", "-j", "-4", "route", "show", "table", "all"], ["ip", "-j", "-4", "addr"]):
        out = subprocess.run(cmd, capture_output=True, text=True, check=False).stdout
        for item in json.loads(out or "[]"):
            if "dst" in item and item["dst"] not in ("default", "broadcast"):
                dst = item["dst"] if "/" in item["dst"] else f"{item['dst']}/32"
                try:
                    nets.append(ipaddress.IPv4Network(dst, strict=False))
                except ValueError:
                    continue
            for info in item.get("addr_info", []):
                nets.append(
                    ipaddress.IPv4Network(f"{info['local']}/{info['prefixlen']}", strict=False)
                )
    return nets


def choose_plan(vip_pool: str = DEFAULT_VIP_POOL) -> AddressPlan:
    """A fresh tag and a 10.a.b.0/28 that nothing in the root namespace uses yet."""
    used = _used_networks()
    for _ in range(200):
        second, third, fourth = 200 + secrets.randbelow(50), secrets.randbelow(256), 0
        fourth = 16 * secrets.randbelow(16)
        block = ipaddress.IPv4Network(f"10.{second}.{third}.{fourth}/28")
        if not any(block.overlaps(net) for net in used if net.prefixlen > 0):
            return AddressPlan(
                tag=secrets.token_hex(3), block=block, vip_pool=ipaddress.IPv4Network(vip_pool)
            )
    raise RuntimeError("no free 10.x.y.0/28 for the local topology's links")

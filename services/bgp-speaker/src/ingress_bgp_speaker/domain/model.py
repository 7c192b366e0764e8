"""The validated shapes the planner works on (built only by validate.py)."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@functools.lru_cache(maxsize=1 << 16)
def parse_address(address: str) -> Address:
    """``ipaddress.ip_address``, cached: every pass looks at every VIP again (readiness, pool
    membership, rendering), and parsing the same 10,000 strings was a third of a pass."""
    return ipaddress.ip_address(address)


@dataclass(frozen=True)
class PeerConfig:
    """A BgpPeer that passed every check, with its password already resolved."""

    name: str
    address: str
    peer_asn: int
    local_asn: int
    password: str | None
    hold_time_seconds: int
    keepalive_seconds: int | None
    graceful_restart: bool
    bfd: bool
    max_prefixes: int | None
    generation: int

    @property
    def family(self) -> int:
        return parse_address(self.address).version


@dataclass(frozen=True)
class PoolConfig:
    """A VipPool reduced to what the export filter needs."""

    name: str
    networks: tuple[Network, ...]
    priority: int = 0
    communities: tuple[tuple[int, int], ...] = ()
    large_communities: tuple[tuple[int, int, int], ...] = ()
    local_preference: int | None = None

    def contains(self, address: str) -> bool:
        ip = parse_address(address)
        return any(ip.version == net.version and ip in net for net in self.networks)


class PoolMembership:
    """Whether an address lies in one of a set of pools, remembered per address: every pass
    asks for every VIP, and pools change seldom (a new set of pools is a new membership). What
    it remembers is bounded by the addresses ipam assigns, i.e. by the pools themselves."""

    def __init__(self, pools: Iterable[PoolConfig]) -> None:
        self.pools = tuple(pools)
        self._known: dict[str, bool] = {}

    def __contains__(self, address: str) -> bool:
        known = self._known.get(address)
        if known is None:
            known = self._known[address] = any(p.contains(address) for p in self.pools)
        return known


@dataclass(frozen=True)
class BirdDesired:
    """Everything the rendered BIRD configuration depends on."""

    node: str
    router_id: str | None
    peers: tuple[PeerConfig, ...]
    pools: tuple[PoolConfig, ...]
    routes: frozenset[str] = field(default_factory=frozenset)
    """VIP addresses to announce (host routes)."""

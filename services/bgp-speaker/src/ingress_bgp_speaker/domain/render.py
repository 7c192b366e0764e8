"""BIRD 2 configuration from the desired state: deterministic text, so that an unchanged state
renders byte-identical and a converged reconcile writes nothing.

Shape of the output:

* one ``static`` protocol per address family holding a blackhole host route per announced VIP
  (the route only exists to be exported; traffic is handled by IPVS, never by these routes);
* one export filter per family that lets out only our static routes that lie inside a pool,
  adding the pool's communities, large communities and local preference;
* one ``bgp`` protocol per peer: import none (every route a peer sends is rejected), the export
  filter, an ``export limit`` as the guard against announcing more prefixes than configured.
"""

from __future__ import annotations

import functools
import hashlib
import re

from .model import BirdDesired, PeerConfig, PoolConfig, parse_address

STATIC_PROTOCOL = {4: "vips4", 6: "vips6"}
_SYMBOL_UNSAFE = re.compile(r"[^a-z0-9]")


def peer_protocol_name(peer: str) -> str:
    """A BIRD symbol for a Kubernetes name: readable, and unique although ``a-b`` and ``a.b``
    both map to ``a_b`` (the hash of the original tells them apart)."""
    digest = hashlib.sha256(peer.encode()).hexdigest()[:6]
    return f"peer_{_SYMBOL_UNSAFE.sub('_', peer)[:40]}_{digest}"


@functools.lru_cache(maxsize=1 << 16)
def host_prefix(vip: str) -> str:
    ip = parse_address(vip)
    return f"{ip}/{ip.max_prefixlen}"


@functools.lru_cache(maxsize=1 << 16)
def _route(vip: str) -> tuple[int, int, str]:
    """(family, address as a number, the config line) of one VIP's host route. Every pass
    renders every announced VIP again; formatting and ordering 10,000 address objects was most
    of a render, sorting plain numbers is not."""
    ip = parse_address(vip)
    return ip.version, int(ip), f"  route {ip}/{ip.max_prefixlen} blackhole;"


def _pool_clause(pool: PoolConfig, family: int) -> list[str]:
    nets = [n for n in pool.networks if n.version == family]
    if not nets:
        return []
    prefix_set = ", ".join(
        f"{n}+" for n in sorted(nets, key=lambda n: (n.network_address, n.prefixlen))
    )
    actions = [f"bgp_community.add(({a},{b}));" for a, b in pool.communities]
    actions += [f"bgp_large_community.add(({a},{b},{d}));" for a, b, d in pool.large_communities]
    if pool.local_preference is not None:
        actions.append(f"bgp_local_pref = {pool.local_preference};")
    actions.append("accept;")
    body = "\n".join(f"    {a}" for a in actions)
    return [f"  # pool {pool.name}", f"  if net ~ [ {prefix_set} ] then {{", body, "  }"]


def _filter(pools: tuple[PoolConfig, ...], family: int) -> list[str]:
    lines = [
        f"filter export_vips{family} {{",
        f'  if proto != "{STATIC_PROTOCOL[family]}" then reject;',
    ]
    for pool in pools:
        lines += _pool_clause(pool, family)
    lines += ["  reject;", "}", ""]
    return lines


def _peer(peer: PeerConfig) -> list[str]:
    family = peer.family
    lines = [
        f"protocol bgp {peer_protocol_name(peer.name)} {{",
        f'  description "BgpPeer {peer.name}";',
        f"  local as {peer.local_asn};",
        f"  neighbor {peer.address} as {peer.peer_asn};",
    ]
    if peer.password is not None:
        lines.append(f'  password "{peer.password}";')
    lines.append(f"  hold time {peer.hold_time_seconds};")
    if peer.keepalive_seconds is not None:
        lines.append(f"  keepalive time {peer.keepalive_seconds};")
    lines.append(f"  graceful restart {'on' if peer.graceful_restart else 'off'};")
    if peer.bfd:
        lines.append("  bfd on;")
    lines.append(f"  ipv{family} {{")
    lines.append("    import none;")
    lines.append(f"    export filter export_vips{family};")
    if peer.max_prefixes is not None:
        lines.append(f"    export limit {peer.max_prefixes} action block;")
    lines.append("    next hop self;")
    lines += ["  };", "}", ""]
    return lines


def render(desired: BirdDesired) -> str:
    pools = tuple(sorted(desired.pools, key=lambda p: (-p.priority, p.name)))
    lines = [
        f"# BIRD 2 configuration of bgp-speaker on node {desired.node}.",
        "# Generated: every change of peers, pools or ready VIPs rewrites it. Do not edit.",
        "log stderr { info, remote, warning, error, auth, fatal, bug };",
        "timeformat protocol iso long;",
    ]
    if desired.router_id is not None:
        lines.append(f"router id {desired.router_id};")
    lines += ["", "protocol device {", "  scan time 10;", "}", ""]
    if any(p.bfd for p in desired.peers):
        lines += ["protocol bfd {", "}", ""]
    for family in (4, 6):
        lines += _filter(pools, family)
    routes = sorted(_route(vip) for vip in desired.routes)
    for family in (4, 6):
        lines.append(f"protocol static {STATIC_PROTOCOL[family]} {{")
        lines.append(f"  ipv{family};")
        lines += [line for version, _, line in routes if version == family]
        lines += ["}", ""]
    for peer in sorted(desired.peers, key=lambda p: p.name):
        lines += _peer(peer)
    return "\n".join(lines)

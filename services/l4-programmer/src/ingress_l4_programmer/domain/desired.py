"""Events -> the desired dataplane state of this node, plus every refusal with its reason.

Inputs are the live ``vip.assigned`` events, the ``vip.released`` tombstones, the
``backend.endpoints`` of the Services behind the VIPs and the ``pool.desired`` pools. One bad
input only ever removes itself: a VIP outside every pool, a port another owner already holds or
an unusable endpoint is refused with a reason, and every other VIP is derived as usual.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ingress_events import catalogue as c

from .model import DesiredState, Proto, Real, VsKey, VsSpec

BackendKey = tuple[str, str, int]


@dataclass(frozen=True)
class DeriveConfig:
    pool_namespace: str
    pool_service: str
    pool_ports: frozenset[int]
    scheduler: str
    weight: int = 1
    tunnel: bool = True
    """IPVS tunnel mode cannot rewrite the port: a real server must listen on the VIP's port."""


@dataclass(frozen=True)
class Refusal:
    reason: str
    message: str


@dataclass(frozen=True)
class ObjectProblem:
    """A problem to report against a user object (AdmissionRejected, component l4-programmer)."""

    kind: str
    namespace: str
    name: str
    reason: str
    field: str
    message: str


@dataclass(frozen=True)
class VipIntent:
    vip: str
    observed_generation: int
    services: tuple[VsKey, ...]
    problem: Refusal | None = None
    """Set when the node cannot serve the VIP (the whole VIP is refused)."""


@dataclass
class Derived:
    desired: DesiredState
    vips: dict[str, VipIntent]
    problems: list[ObjectProblem] = field(default_factory=list)


def _pool_networks(
    pool: c.PoolDesired,
) -> tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...], frozenset[str]]:
    return _networks(
        tuple(pool.cidrs), tuple((r.first, r.last) for r in pool.ranges), frozenset(pool.exclude)
    )


@functools.lru_cache(maxsize=1024)
def _networks(
    cidrs: tuple[str, ...], ranges: tuple[tuple[str, str], ...], exclude: frozenset[str]
) -> tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...], frozenset[str]]:
    # Cached: every pass asks for every VIP's pool, and pools change rarely.
    nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = [
        ipaddress.ip_network(cidr) for cidr in cidrs
    ]
    for first_s, last_s in ranges:
        first, last = ipaddress.ip_address(first_s), ipaddress.ip_address(last_s)
        try:
            nets.extend(ipaddress.summarize_address_range(first, last))
        except (TypeError, ValueError):
            continue  # mixed families or first > last: ipam refuses the pool; no address here
    return tuple(nets), exclude


# Every pass derives every VIP again, and parsing the same 10,000 address strings was a third of
# a pass; the strings of live VIPs change rarely, so their parses are cached across passes.
@functools.lru_cache(maxsize=1 << 16)
def _version(address: str) -> int:
    return ipaddress.ip_address(address).version


@functools.lru_cache(maxsize=1 << 16)
def _within(address: str, nets: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> bool:
    parsed = ipaddress.ip_address(address)
    return any(parsed in net for net in nets)


def pool_of(vip: str, pools: Iterable[c.PoolDesired]) -> str | None:
    """The first pool (by name) that holds ``vip``; ``pools`` in name order."""
    for pool in pools:
        nets, excluded = _pool_networks(pool)
        if vip not in excluded and _within(vip, nets):
            return pool.pool
    return None


def owner_ref(owner: c.VipOwner) -> tuple[str, str, str]:
    """The object a problem is reported on: the Service, or the domain (cluster-scoped; a
    wildcard host's ``*`` is spelled ``wildcard`` as object names cannot hold it)."""
    if owner.kind == "service":
        assert owner.namespace is not None and owner.service is not None
        return ("Service", owner.namespace, owner.service)
    assert owner.host is not None
    return ("IngressDomain", c.CLUSTER_SCOPE, owner.host.replace("*", "wildcard"))


def real_server_problem(
    endpoint: c.Endpoint, vip: str, port: int, vips: frozenset[str], tunnel: bool
) -> str | None:
    address = ipaddress.ip_address(endpoint.address)
    if address.version != ipaddress.ip_address(vip).version:
        return f"IPv{address.version} endpoint behind an IPv{ipaddress.ip_address(vip).version} VIP"
    if (
        address.is_unspecified
        or address.is_loopback
        or address.is_multicast
        or address.is_link_local
        or address.is_reserved
        or (address.version == 4 and address == ipaddress.IPv4Address("255.255.255.255"))
    ):
        return f"{endpoint.address} is not a unicast address a real server can have"
    if endpoint.address in vips:
        return f"{endpoint.address} is a VIP; a real server behind itself would loop"
    if tunnel and endpoint.port != port:
        return (
            f"target port {endpoint.port} differs from the VIP port {port}: IP-in-IP forwarding "
            "keeps the destination port, so the real server must listen on the VIP port"
        )
    return None


def derive(
    assigned: Iterable[c.VipAssigned],
    released: Iterable[c.VipReleased],
    endpoints: Mapping[BackendKey, c.BackendEndpoints],
    pools: Iterable[c.PoolDesired],
    config: DeriveConfig,
) -> Derived:
    pools = sorted(pools, key=lambda p: p.pool)
    assigned = sorted(assigned, key=lambda a: (a.generation, a.owner.key()))
    problems: list[ObjectProblem] = []
    vips: dict[str, VipIntent] = {}
    services: dict[VsKey, VsSpec] = {}
    all_vips = frozenset(addr for a in assigned for addr in a.addresses)
    # (vip, protocol, port) -> the owner holding it; the earliest assignment wins a clash.
    holders: dict[tuple[str, Proto, int], c.VipOwner] = {}
    sharing: dict[str, str | None] = {}
    first_owner: dict[str, c.VipOwner] = {}
    specs: dict[tuple[BackendKey, Proto, int], VsSpec] = {}

    for a in assigned:
        kind, ns, name = owner_ref(a.owner)
        for vip in a.addresses:
            if _version(vip) != 4:
                vips.setdefault(
                    vip,
                    VipIntent(
                        vip,
                        a.generation,
                        (),
                        Refusal(
                            "UnsupportedAddressFamily",
                            f"{vip}: only IPv4 VIPs are programmed (IP-in-IP and the nftables "
                            "table are IPv4)",
                        ),
                    ),
                )
                continue
            pool = pool_of(vip, pools)
            if pool is None:
                vips[vip] = VipIntent(
                    vip,
                    a.generation,
                    (),
                    Refusal(
                        "VipOutsidePool",
                        f"{vip} is outside every configured VIP pool; this node only binds "
                        "addresses of its pools",
                    ),
                )
                continue
            if (
                vip in first_owner
                and first_owner[vip] != a.owner
                and (a.sharing_key is None or sharing[vip] != a.sharing_key)
            ):
                other = first_owner[vip]
                problems.append(
                    ObjectProblem(
                        kind,
                        ns,
                        name,
                        "AddressInUse",
                        "vip.addresses",
                        f"{vip} is already served for {'/'.join(other.key())} without a "
                        "common sharing key",
                    )
                )
                continue
            first_owner.setdefault(vip, a.owner)
            sharing.setdefault(vip, a.sharing_key)
            keys: list[VsKey] = list(vips[vip].services) if vip in vips else []
            for port_spec in a.ports:
                slot = (vip, port_spec.protocol, port_spec.port)
                holder = holders.get(slot)
                if holder is not None and holder != a.owner:
                    problems.append(
                        ObjectProblem(
                            kind,
                            ns,
                            name,
                            "PortClash",
                            f"ports[{port_spec.port}/{port_spec.protocol}]",
                            f"{vip}:{port_spec.port}/{port_spec.protocol} is already served for "
                            f"{'/'.join(holder.key())}",
                        )
                    )
                    continue
                holders[slot] = a.owner
                key = VsKey(vip, port_spec.protocol, port_spec.port)
                services[key] = _spec_for(a, key, endpoints, config, all_vips, problems, specs)
                if key not in keys:
                    keys.append(key)
            vips[vip] = VipIntent(
                vip,
                max(a.generation, vips[vip].observed_generation if vip in vips else 0),
                tuple(sorted(keys)),
            )

    served = frozenset(v for v, intent in vips.items() if intent.problem is None)
    gone = frozenset(addr for r in released for addr in r.addresses) - all_vips
    return Derived(
        desired=DesiredState(services=services, addresses=served, released=gone),
        vips=vips,
        problems=_dedupe(problems),
    )


def _spec_for(
    a: c.VipAssigned,
    key: VsKey,
    endpoints: Mapping[BackendKey, c.BackendEndpoints],
    config: DeriveConfig,
    all_vips: frozenset[str],
    problems: list[ObjectProblem],
    specs: dict[tuple[BackendKey, Proto, int], VsSpec],
) -> VsSpec:
    if a.owner.kind == "domain":
        if key.port not in config.pool_ports:
            return VsSpec(config.scheduler, {})
        backend: BackendKey = (config.pool_namespace, config.pool_service, key.port)
    else:
        assert a.owner.namespace is not None and a.owner.service is not None
        backend = (a.owner.namespace, a.owner.service, key.port)
    # Within a pass the spec depends on the VIP only through its family: the same Envoy pool
    # stands behind every domain VIP, and computing it once per VIP and port was most of a pass
    # (10,000 domains). Its problems are reported against the Service, identical for every VIP.
    family = 6 if ":" in key.vip else 4
    memo = (backend, key.protocol, family)
    known = specs.get(memo)
    if known is None:
        known = specs[memo] = _compute_spec(key, backend, endpoints, config, all_vips, problems)
    return known


def _compute_spec(
    key: VsKey,
    backend: BackendKey,
    endpoints: Mapping[BackendKey, c.BackendEndpoints],
    config: DeriveConfig,
    all_vips: frozenset[str],
    problems: list[ObjectProblem],
) -> VsSpec:
    event = endpoints.get(backend)
    reals: dict[Real, int] = {}
    if event is None or event.protocol != key.protocol:
        return VsSpec(config.scheduler, reals)
    for i, ep in enumerate(event.endpoints):
        if not (ep.ready or (ep.serving and ep.terminating)):
            continue
        why = real_server_problem(ep, key.vip, key.port, all_vips, config.tunnel)
        if why is not None:
            problems.append(
                ObjectProblem(
                    "Service",
                    backend[0],
                    backend[1],
                    "InvalidRealServer",
                    f"endpoints[{i}]",
                    f"port {key.port}: {why}",
                )
            )
            continue
        real = Real(ep.address, ep.port if not config.tunnel else key.port)
        # A terminating endpoint that still serves is drained: no new connections, old ones live.
        weight = config.weight if ep.ready and not ep.terminating else 0
        reals[real] = max(reals.get(real, 0), weight)
    return VsSpec(config.scheduler, reals)


def _dedupe(problems: list[ObjectProblem]) -> list[ObjectProblem]:
    seen: dict[ObjectProblem, None] = {}
    for p in problems:
        seen.setdefault(p, None)
    return list(seen)

"""Events -> the desired dataplane state of this node, plus every refusal with its reason.

Inputs are the live ``vip.assigned`` events, the ``vip.released`` tombstones, the
``backend.endpoints`` of the Services behind the VIPs and the ``pool.desired`` pools. One bad
input only ever removes itself: a VIP outside every pool, a port another owner already holds or
an unusable endpoint is refused with a reason, and every other VIP is derived as usual.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable, Iterable, Mapping
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


@dataclass(frozen=True, order=True)
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
    changed: frozenset[str] | None = field(default=None, compare=False)
    """The addresses whose part of the result may differ from the last pass's: their services,
    intent, binding or release (None: any address may have changed)."""


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


# A pool or config change derives every VIP again, and parsing the same 10,000 address strings
# was a third of such a pass; the strings of live VIPs change rarely, so their parses are cached.
@functools.lru_cache(maxsize=1 << 16)
def _version(address: str) -> int:
    return ipaddress.ip_address(address).version


@functools.lru_cache(maxsize=1 << 16)
def _within(address: str, nets: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> bool:
    parsed = ipaddress.ip_address(address)
    return any(parsed in net for net in nets)


PoolTable = list[
    tuple[str, tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...], frozenset[str]]
]


def pool_table(pools: Iterable[c.PoolDesired]) -> PoolTable:
    """Each pool's name, networks and excluded addresses, in the order given."""
    return [(pool.pool, *_pool_networks(pool)) for pool in pools]


def pool_of(vip: str, pools: PoolTable) -> str | None:
    """The first pool of ``pools`` (a :func:`pool_table`, in name order) that holds ``vip``."""
    for name, nets, excluded in pools:
        if vip not in excluded and _within(vip, nets):
            return name
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
    endpoint: c.Endpoint, family: int, port: int, vips: frozenset[str], tunnel: bool
) -> str | None:
    """Why ``endpoint`` cannot serve a VIP of this address ``family`` on ``port``, or None."""
    address = ipaddress.ip_address(endpoint.address)
    if address.version != family:
        return f"IPv{address.version} endpoint behind an IPv{family} VIP"
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


SpecKey = tuple[BackendKey, Proto, int]
"""A backend, the protocol and the VIP's address family: all a virtual service's spec depends
on besides the endpoints, the config and which endpoint addresses are VIPs."""


@dataclass(frozen=True)
class _Spec:
    event: c.BackendEndpoints | None
    looked_at: frozenset[str]
    """The endpoint addresses checked, and of those, the ones that were VIPs: the spec holds
    while that intersection does (a new VIP elsewhere changes nothing here)."""
    vips_among: frozenset[str]
    spec: VsSpec
    problems: tuple[ObjectProblem, ...]


@dataclass(frozen=True)
class _Share:
    """One address's part of a pass. It depends only on the assignments that hold the address
    (in their order), the pools, the config and the specs it uses; every clash, sharing key and
    port holder is between assignments of one address."""

    assignments: tuple[c.VipAssigned, ...]
    specs: dict[SpecKey, VsSpec]
    """The spec of every backend it sends to, as this share used it."""
    services: dict[VsKey, VsSpec]
    bindings: dict[VsKey, SpecKey]
    """The backend behind each service that has one (a domain VIP's port outside the Envoy
    pool's ports has none): a changed spec is bound again without deriving the address."""
    intent: VipIntent
    problems: tuple[ObjectProblem, ...]

    def rebound(self, spec_of: Callable[[SpecKey], VsSpec]) -> _Share:
        specs = {k: spec_of(k) for k in self.specs}
        services = {
            key: specs[self.bindings[key]] if key in self.bindings else spec
            for key, spec in self.services.items()
        }
        return _Share(self.assignments, specs, services, self.bindings, self.intent, self.problems)


OwnerKey = tuple[str, ...]
"""A VIP owner's key (``VipAssigned.key()``): one live assignment per owner."""


def _order(a: c.VipAssigned) -> tuple[int, tuple[str, ...]]:
    """Earliest first: the earliest assignment of an address wins a clash."""
    return (a.generation, a.owner.key())


def derive(
    assigned: Iterable[c.VipAssigned],
    released: Iterable[c.VipReleased],
    endpoints: Mapping[BackendKey, c.BackendEndpoints],
    pools: Iterable[c.PoolDesired],
    config: DeriveConfig,
) -> Derived:
    """The desired state from the events, from scratch: the definition that :class:`Deriver`
    keeps up to date one change at a time (the tests hold the two equal)."""
    pools = sorted(pools, key=lambda p: p.pool)
    by_address: dict[str, list[c.VipAssigned]] = {}
    for a in sorted(assigned, key=_order):
        for vip in a.addresses:
            by_address.setdefault(vip, []).append(a)
    all_vips = frozenset(by_address)
    specs: dict[SpecKey, _Spec] = {}

    def spec_of(key: SpecKey) -> VsSpec:
        if key not in specs:
            specs[key] = _compute_spec(key, endpoints.get(key[0]), config, all_vips)
        return specs[key].spec

    table = pool_table(pools)
    shares = {
        vip: _share_of(vip, tuple(group), table, config, spec_of)
        for vip, group in by_address.items()
    }
    services: dict[VsKey, VsSpec] = {}
    problems: list[ObjectProblem] = []
    for share in shares.values():
        services.update(share.services)
        problems.extend(share.problems)
    for spec in specs.values():
        problems.extend(spec.problems)
    vips = {vip: share.intent for vip, share in shares.items()}
    gone = frozenset(addr for r in released for addr in r.addresses) - all_vips
    return Derived(
        desired=DesiredState(
            services=services,
            addresses=frozenset(v for v, intent in vips.items() if intent.problem is None),
            released=gone,
        ),
        vips=vips,
        problems=sorted(set(problems)),
    )


class Deriver:
    """:func:`derive`, kept up to date between passes: each pass re-derives only the addresses
    whose assignments changed and the backends whose endpoints changed, so one new VIP among
    10,000 costs work in proportion to the VIP, not to the table (the whole pass was ~0.2 s of
    CPU per event at 10,000 VIPs, shared with every other service on the node).

    An address's part (a share) depends only on the assignments that hold it (in their order),
    the pools, the config and the specs of the backends it sends to; a spec depends on its
    endpoints event and on which of its endpoint addresses are VIPs. Those dependencies are
    indexed here, and a change of pools or config starts from scratch."""

    def __init__(self) -> None:
        self._context: tuple[object, ...] | None = None
        self.recomputed = 0
        """Addresses the last pass derived anew (the rest were reused)."""
        self._reset()

    def _reset(self) -> None:
        self._owners: dict[OwnerKey, c.VipAssigned] = {}
        """The assignment of each owner that the state below was derived from."""
        self._groups: dict[str, tuple[c.VipAssigned, ...]] = {}
        """Each address's assignments, earliest first."""
        self._specs: dict[SpecKey, _Spec] = {}
        self._users: dict[SpecKey, set[str]] = {}
        """The addresses whose share sends to each backend (a spec with none is dropped)."""
        self._shares: dict[str, _Share] = {}
        self._services: dict[VsKey, VsSpec] = {}
        self._intents: dict[str, VipIntent] = {}
        self._served: set[str] = set()
        self._troubled: set[str] = set()
        """Addresses whose share has problems (few: the rest need no look when listing them)."""
        self._gone: frozenset[str] = frozenset()

    def update(
        self,
        assigned: Mapping[OwnerKey, c.VipAssigned],
        released: Iterable[c.VipReleased],
        endpoints: Mapping[BackendKey, c.BackendEndpoints],
        pools: Iterable[c.PoolDesired],
        config: DeriveConfig,
        changed: Iterable[OwnerKey] | None = None,
    ) -> Derived:
        """The desired state of ``assigned`` (the live assignment of each owner) and the rest.
        ``changed``: the owners whose assignment may differ from the last pass's (None: any,
        found by comparing every owner). Assignments are recognized by identity, so a new
        object of equal content is derived again, which costs time, never correctness."""
        pools = sorted(pools, key=lambda p: p.pool)
        context = (tuple(pools), config)
        fresh = self._context != context
        if fresh:
            self._reset()
            self._context = context
        if changed is None or fresh:
            owners: Iterable[OwnerKey] = self._owners.keys() | assigned.keys()
        else:
            owners = set(changed)
        dirty: set[str] = set()
        for owner in owners:
            old, new = self._owners.get(owner), assigned.get(owner)
            if old is new:
                continue
            if old is not None:
                del self._owners[owner]
                for vip in dict.fromkeys(old.addresses):
                    dirty.add(vip)
                    rest = tuple(a for a in self._groups[vip] if a is not old)
                    if rest:
                        self._groups[vip] = rest
                    else:
                        del self._groups[vip]
            if new is not None:
                self._owners[owner] = new
                for vip in new.addresses:
                    dirty.add(vip)
                    self._groups[vip] = tuple(sorted((*self._groups.get(vip, ()), new), key=_order))
        # Addresses that became or stopped being VIPs: an endpoint on one is refused (or no
        # longer), so the specs that looked at them are derived again.
        flipped = {vip for vip in dirty if (vip in self._groups) != (vip in self._shares)}
        all_vips = frozenset(self._groups)
        rebind: set[str] = set()
        for key, entry in list(self._specs.items()):
            event = endpoints.get(key[0])
            if (entry.event is not event and entry.event != event) or entry.looked_at & flipped:
                self._specs[key] = _compute_spec(key, event, config, all_vips)
                if self._specs[key].spec != entry.spec:
                    rebind |= self._users[key]

        def spec_of(key: SpecKey) -> VsSpec:
            entry = self._specs.get(key)
            if entry is None:
                entry = self._specs[key] = _compute_spec(
                    key, endpoints.get(key[0]), config, all_vips
                )
                self._users[key] = set()
            return entry.spec

        table = pool_table(pools)
        self.recomputed = 0
        touched = dirty | rebind
        for vip in sorted(touched):
            group = self._groups.get(vip)
            if group is None:
                self._drop(vip)
            elif vip in dirty or vip not in self._shares:
                self._put(vip, _share_of(vip, group, table, config, spec_of))
                self.recomputed += 1
            else:
                self._put(vip, self._shares[vip].rebound(spec_of))
        for key in [k for k, users in self._users.items() if not users]:
            del self._specs[key], self._users[key]

        gone = frozenset(addr for r in released for addr in r.addresses) - all_vips
        touched |= gone ^ self._gone
        self._gone = gone
        problems = [p for vip in self._troubled for p in self._shares[vip].problems]
        problems.extend(p for entry in self._specs.values() for p in entry.problems)
        return Derived(
            desired=DesiredState(
                services=dict(self._services), addresses=frozenset(self._served), released=gone
            ),
            vips=dict(self._intents),
            problems=sorted(set(problems)),
            changed=None if fresh else frozenset(touched),
        )

    def _drop(self, vip: str) -> None:
        share = self._shares.pop(vip, None)
        if share is None:
            return
        for service in share.services:
            del self._services[service]
        for backend in share.specs:
            self._users[backend].discard(vip)
        del self._intents[vip]
        self._served.discard(vip)
        self._troubled.discard(vip)

    def _put(self, vip: str, share: _Share) -> None:
        self._drop(vip)
        self._shares[vip] = share
        self._services.update(share.services)
        for backend in share.specs:
            self._users[backend].add(vip)
        self._intents[vip] = share.intent
        if share.intent.problem is None:
            self._served.add(vip)
        if share.problems:
            self._troubled.add(vip)


def _share_of(
    vip: str,
    group: tuple[c.VipAssigned, ...],
    pools: PoolTable,
    config: DeriveConfig,
    spec_of: Callable[[SpecKey], VsSpec],
) -> _Share:
    """The address's services and intent from its assignments, earliest first: the earliest
    assignment wins a clash."""
    specs: dict[SpecKey, VsSpec] = {}
    services: dict[VsKey, VsSpec] = {}
    bindings: dict[VsKey, SpecKey] = {}
    problems: list[ObjectProblem] = []
    family = _version(vip)
    if family != 4:
        refusal = Refusal(
            "UnsupportedAddressFamily",
            f"{vip}: only IPv4 VIPs are programmed (IP-in-IP and the nftables table are IPv4)",
        )
        refused = VipIntent(vip, group[0].generation, (), refusal)
        return _Share(group, specs, services, bindings, refused, ())
    if pool_of(vip, pools) is None:
        refusal = Refusal(
            "VipOutsidePool",
            f"{vip} is outside every configured VIP pool; this node only binds addresses of its "
            "pools",
        )
        refused = VipIntent(vip, group[-1].generation, (), refusal)
        return _Share(group, specs, services, bindings, refused, ())
    intent: VipIntent | None = None
    first: c.VipOwner | None = None
    sharing: str | None = None
    holders: dict[tuple[Proto, int], c.VipOwner] = {}
    for a in group:
        kind, ns, name = owner_ref(a.owner)
        if (
            first is not None
            and first != a.owner
            and (a.sharing_key is None or sharing != a.sharing_key)
        ):
            problems.append(
                ObjectProblem(
                    kind,
                    ns,
                    name,
                    "AddressInUse",
                    "vip.addresses",
                    f"{vip} is already served for {'/'.join(first.key())} without a common "
                    "sharing key",
                )
            )
            continue
        if first is None:
            first, sharing = a.owner, a.sharing_key
        keys: list[VsKey] = list(intent.services) if intent is not None else []
        for port_spec in a.ports:
            slot = (port_spec.protocol, port_spec.port)
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
            backend: BackendKey | None
            if a.owner.kind == "domain":
                # The same Envoy pool stands behind every domain VIP (one spec for them all).
                in_pool = key.port in config.pool_ports
                backend = (
                    (config.pool_namespace, config.pool_service, key.port) if in_pool else None
                )
            else:
                assert a.owner.namespace is not None and a.owner.service is not None
                backend = (a.owner.namespace, a.owner.service, key.port)
            if backend is None:
                services[key] = VsSpec(config.scheduler, {})
            else:
                spec_key = bindings[key] = (backend, key.protocol, family)
                services[key] = specs[spec_key] = spec_of(spec_key)
            if key not in keys:
                keys.append(key)
        intent = VipIntent(
            vip,
            max(a.generation, intent.observed_generation if intent is not None else 0),
            tuple(sorted(keys)),
        )
    assert intent is not None  # the earliest assignment always takes the address
    return _Share(group, specs, services, bindings, intent, tuple(problems))


def _compute_spec(
    key: SpecKey,
    event: c.BackendEndpoints | None,
    config: DeriveConfig,
    all_vips: frozenset[str],
) -> _Spec:
    backend, protocol, family = key
    port = backend[2]
    reals: dict[Real, int] = {}
    problems: list[ObjectProblem] = []
    looked_at: set[str] = set()
    if event is not None and event.protocol == protocol:
        for i, ep in enumerate(event.endpoints):
            if not (ep.ready or (ep.serving and ep.terminating)):
                continue
            looked_at.add(ep.address)
            why = real_server_problem(ep, family, port, all_vips, config.tunnel)
            if why is not None:
                problems.append(
                    ObjectProblem(
                        "Service",
                        backend[0],
                        backend[1],
                        "InvalidRealServer",
                        f"endpoints[{i}]",
                        f"port {port}: {why}",
                    )
                )
                continue
            real = Real(ep.address, ep.port if not config.tunnel else port)
            # A terminating endpoint that still serves is drained: no new connections, old
            # ones live.
            weight = config.weight if ep.ready and not ep.terminating else 0
            reals[real] = max(reals.get(real, 0), weight)
    seen = frozenset(looked_at)
    return _Spec(event, seen, seen & all_vips, VsSpec(config.scheduler, reals), tuple(problems))

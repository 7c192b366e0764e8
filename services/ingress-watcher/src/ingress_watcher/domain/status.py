"""(our objects, the desired state we published, what the other services reported) -> the status
every Ingress and LoadBalancer Service of ours should show, and the Kubernetes Events to emit.

Pure: no I/O and no clock (``now`` is a parameter of :func:`status_patch`).

* ``.status.loadBalancer.ingress[].ip``: an Ingress gets the VIP(s) of every domain it contributes
  to (it is one of the domain's ``sources``); a LoadBalancer Service gets its own VIP(s).
* ``.status.conditions`` (metav1.Condition: type, status, reason, message, observedGeneration,
  lastTransitionTime), one per stage: ``Accepted`` (admission verdicts of every component),
  ``VipAssigned``, ``DnsPublished`` and ``L7Applied`` (Ingresses only), ``L4Programmed``,
  ``RouteAnnounced``, and ``Ready`` when every other one is True.
* Events (type Warning) for rejections: ``admission.rejected`` of any component, and
  ``vip.rejected`` / ``dns.rejected`` / ``l7.rejected`` of the object's domains or VIP.

Objects of another IngressClass (or Services of another loadBalancerClass) get nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ingress_events import catalogue as c
from ingress_events.catalogue import TOMBSTONES, Family

from .normalize import Policy, StateKey, ingress_class_of, is_our_lb_service, our_classes
from .objects import Obj, Objects, meta, name_of, namespace_of

Json = dict[str, Any]
MAX_MESSAGE = 1024
STAGES_INGRESS = (
    "Accepted",
    "VipAssigned",
    "DnsPublished",
    "L7Applied",
    "L4Programmed",
    "RouteAnnounced",
)
STAGES_SERVICE = ("Accepted", "VipAssigned", "L4Programmed", "RouteAnnounced")


@dataclass(frozen=True, order=True)
class Target:
    kind: str  # "Ingress" or "Service"
    namespace: str
    name: str


@dataclass(frozen=True)
class Warning:
    """A Kubernetes Event to emit once: ``key`` names the cause (the event it comes from and what
    it says), so a recomputation does not repeat it."""

    target: Target
    uid: str | None
    reason: str
    message: str
    key: tuple[str, ...]


@dataclass
class Computed:
    status: dict[Target, Json] = field(default_factory=dict)
    """The desired ``.status`` of each of our objects (conditions without lastTransitionTime)."""
    warnings: list[Warning] = field(default_factory=list)
    uids: dict[Target, str | None] = field(default_factory=dict)


def _cond(kind: str, ok: bool | None, reason: str, message: str, generation: int | None) -> Json:
    out: Json = {
        "type": kind,
        "status": "Unknown" if ok is None else ("True" if ok else "False"),
        "reason": reason,
        "message": message[:MAX_MESSAGE],
    }
    if generation is not None:
        out["observedGeneration"] = generation
    return out


Slot = tuple[Family, tuple[str, ...]]
Owner = tuple[str, ...]
"""A VIP owner's key: ``("domain", host)`` or ``("service", namespace, name)``."""


class StatusIndex:
    """The reported state and the published domains, by what status looks things up with.

    Kept up to date one event at a time: :meth:`report` and :meth:`domain` return the targets
    whose status the event may change (before and after it), so that a round recomputes those
    and not every object of the cluster (at 10,000 Ingresses a full round costs about a second,
    and reports arrive many times a second).
    """

    def __init__(self) -> None:
        self.vip: dict[Owner, c.Event] = {}
        self.dns: dict[str, c.Event] = {}
        self.l7: dict[str, c.Event] = {}
        self.l4: dict[str, dict[tuple[str, ...], c.Event]] = {}
        self.routes: dict[str, dict[tuple[str, ...], c.Event]] = {}
        self.admissions: dict[tuple[str, str, str], dict[tuple[str, ...], c.Event]] = {}
        self.domains: dict[str, c.DomainDesired] = {}
        self.hosts_of: dict[tuple[str, str], set[str]] = {}
        """(namespace, name) of an Ingress -> the hosts of the domains it contributes to."""
        self.owners_of: dict[str, set[Owner]] = {}
        """A VIP address -> who holds it (several owners when a sharing key joins them)."""
        self._reports: dict[Slot, c.Event] = {}

    @classmethod
    def of(cls, desired: Mapping[StateKey, object], observed: Iterable[c.Event]) -> StatusIndex:
        """``desired``: the published state (its domain events; other families may be kept
        as stamps)."""
        index = cls()
        for (family, _), event in desired.items():
            if family is Family.DOMAIN and isinstance(event, c.Event):
                index.domain(event)
        for event in observed:
            index.report(event)
        return index

    # ------------------------------------------------------------------ who an event concerns

    def _owner_targets(self, owner: Owner) -> set[Target]:
        if owner[0] == "service" and len(owner) == 3:
            return {Target("Service", owner[1], owner[2])}
        if owner[0] == "domain" and len(owner) == 2:
            return self._host_targets(owner[1])
        return set()

    def _host_targets(self, host: str) -> set[Target]:
        domain = self.domains.get(host)
        if domain is None:
            return set()
        return {Target("Ingress", s.namespace, s.name) for s in domain.sources}

    def _vip_targets(self, vip: str) -> set[Target]:
        return {t for owner in self.owners_of.get(vip, ()) for t in self._owner_targets(owner)}

    def _targets(self, event: c.Event) -> set[Target]:
        if isinstance(event, c.VipAssigned | c.VipRejected | c.VipReleased):
            return self._owner_targets(event.owner.key())
        if isinstance(event, c.DnsPublished | c.DnsRejected | c.DnsRemoved):
            return self._host_targets(event.fqdn)
        if isinstance(event, c.L7Applied | c.L7Rejected | c.L7Removed):
            return self._host_targets(event.host)
        if isinstance(
            event,
            c.L4Programmed | c.L4NotReady | c.L4Removed | c.RouteAnnounced | c.RouteWithdrawn,
        ):
            return self._vip_targets(event.vip)
        if isinstance(event, c.AdmissionAccepted | c.AdmissionRejected | c.AdmissionCleared):
            ref = event.object
            if ref.kind in ("Ingress", "Service"):
                return {Target(ref.kind, ref.namespace, ref.name)}
        return set()

    # ------------------------------------------------------------------ keeping it up to date

    def report(self, event: c.Event) -> set[Target]:
        """``event`` is now the latest of its key (a tombstone removes what the key held)."""
        slot = (event.family, event.key())
        touched: set[Target] = set()
        old = self._reports.pop(slot, None)
        if old is not None:
            touched |= self._targets(old)
            self._place(old, remove=True)
        if type(event) not in TOMBSTONES and self._place(event, remove=False):
            self._reports[slot] = event
            touched |= self._targets(event)
        return touched

    def _place(self, event: c.Event, *, remove: bool) -> bool:
        """Put ``event`` where compute looks for it (or take it away); False for an event status
        is not made of."""
        key = event.key()
        flat: dict[Any, c.Event] | None = None
        nested: tuple[dict[Any, dict[tuple[str, ...], c.Event]], Any] | None = None
        at: Any = None
        if isinstance(event, c.VipAssigned | c.VipRejected):
            flat, at = self.vip, event.owner.key()
            if isinstance(event, c.VipAssigned):
                for address in event.addresses:
                    owners = self.owners_of.setdefault(address, set())
                    if remove:
                        owners.discard(at)
                        if not owners:
                            del self.owners_of[address]
                    else:
                        owners.add(at)
        elif isinstance(event, c.DnsPublished | c.DnsRejected):
            flat, at = self.dns, event.fqdn
        elif isinstance(event, c.L7Applied | c.L7Rejected):
            flat, at = self.l7, event.host
        elif isinstance(event, c.L4Programmed | c.L4NotReady):
            nested = (self.l4, event.vip)
        elif isinstance(event, c.RouteAnnounced | c.RouteWithdrawn):
            nested = (self.routes, event.vip)
        elif isinstance(event, c.AdmissionAccepted | c.AdmissionRejected):
            ref = event.object
            nested = (self.admissions, (ref.kind, ref.namespace, ref.name))
        else:
            return False
        if flat is not None:
            if remove:
                flat.pop(at, None)
            else:
                flat[at] = event
        elif nested is not None:
            table, at = nested
            if remove:
                bucket = table.get(at, {})
                bucket.pop(key, None)
                if not bucket:
                    table.pop(at, None)
            else:
                table.setdefault(at, {})[key] = event
        return True

    def domain(self, event: c.Event) -> set[Target]:
        """A domain event as published (desired or deleted)."""
        if isinstance(event, c.DomainDesired):
            return self._set_domain(event.host, event)
        if isinstance(event, c.DomainDeleted):
            return self._set_domain(event.host, None)
        return set()

    def _set_domain(self, host: str, event: c.DomainDesired | None) -> set[Target]:
        touched = self._host_targets(host)
        old = self.domains.pop(host, None)
        for source in old.sources if old is not None else ():
            hosts = self.hosts_of.get((source.namespace, source.name))
            if hosts is not None:
                hosts.discard(host)
                if not hosts:
                    del self.hosts_of[(source.namespace, source.name)]
        if event is not None:
            self.domains[host] = event
            for source in event.sources:
                self.hosts_of.setdefault((source.namespace, source.name), set()).add(host)
            touched |= self._host_targets(host)
        return touched

    def reset_domains(self, desired: Mapping[StateKey, object]) -> set[Target]:
        """Install the domains of a complete published state; returns whom the difference
        concerns."""
        fresh = {
            event.host: event
            for (family, _), event in desired.items()
            if family is Family.DOMAIN and isinstance(event, c.DomainDesired)
        }
        touched: set[Target] = set()
        for host in [h for h in self.domains if h not in fresh]:
            touched |= self._set_domain(host, None)
        for host, event in fresh.items():
            known = self.domains.get(host)
            if known is not event and known != event:
                touched |= self._set_domain(host, event)
        return touched


def _generation(obj: Mapping[str, Any]) -> int | None:
    value = meta(obj).get("generation")
    return value if isinstance(value, int) and value >= 0 else None


def _accepted(verdicts: list[c.Event], generation: int | None) -> Json:
    rejected = sorted(
        (e for e in verdicts if isinstance(e, c.AdmissionRejected)), key=lambda e: e.component
    )
    if rejected:
        problems = [p for e in rejected for p in e.problems]
        message = "; ".join(
            f"{e.component}: {p.reason}: {p.message}" for e in rejected for p in e.problems
        )
        return _cond("Accepted", False, problems[0].reason, message, generation)
    if verdicts:
        return _cond(
            "Accepted",
            True,
            "Accepted",
            "accepted by "
            + ", ".join(
                sorted(e.component for e in verdicts if isinstance(e, c.AdmissionAccepted))
            ),
            generation,
        )
    return _cond("Accepted", None, "Pending", "no verdict yet", generation)


def _combine(kind: str, parts: list[tuple[bool | None, str, str]], gen: int | None) -> Json:
    """One condition from per-domain (or per-VIP) results: False wins, then Unknown."""
    if not parts:
        return _cond(kind, False, "NoDomain", "the object contributes to no domain", gen)
    for wanted in (False, None):
        bad = [p for p in parts if p[0] is wanted]
        if bad:
            return _cond(kind, wanted, bad[0][1], "; ".join(p[2] for p in bad), gen)
    return _cond(kind, True, parts[0][1], "; ".join(p[2] for p in parts), gen)


def _vip_part(event: c.Event | None, what: str) -> tuple[bool | None, str, str]:
    if isinstance(event, c.VipAssigned):
        return (True, "Assigned", f"{what}: {', '.join(event.addresses)} from pool {event.pool}")
    if isinstance(event, c.VipRejected):
        return (False, event.reason, f"{what}: {event.message}")
    return (None, "Pending", f"{what}: waiting for a VIP")


def _addresses(event: c.Event | None) -> list[str]:
    return list(event.addresses) if isinstance(event, c.VipAssigned) else []


def _reported(table: dict[str, dict[tuple[str, ...], c.Event]], vips: list[str]) -> list[c.Event]:
    """Every node's report on these VIPs, in key order (the message names the first)."""
    return [e for v in vips for _, e in sorted(table.get(v, {}).items())]


def _l4_part(index: StatusIndex, vips: list[str], what: str) -> tuple[bool | None, str, str]:
    if not vips:
        return (None, "Pending", f"{what}: no VIP yet")
    events = _reported(index.l4, vips)
    nodes = sorted({e.node for e in events if isinstance(e, c.L4Programmed)})
    if nodes:
        return (True, "Programmed", f"{what}: programmed on {len(nodes)} node(s)")
    not_ready = [e for e in events if isinstance(e, c.L4NotReady)]
    if not_ready:
        return (False, not_ready[0].reason, f"{what}: {not_ready[0].message}")
    return (None, "Pending", f"{what}: no L4 node reported yet")


def _route_part(index: StatusIndex, vips: list[str], what: str) -> tuple[bool | None, str, str]:
    if not vips:
        return (None, "Pending", f"{what}: no VIP yet")
    events = _reported(index.routes, vips)
    announced = [e for e in events if isinstance(e, c.RouteAnnounced)]
    nodes = sorted({e.node for e in announced if e.reaches_a_router()})
    if nodes:
        return (True, "Announced", f"{what}: announced by {len(nodes)} node(s)")
    if announced:
        # Announced, but no router has the route: nothing can reach the VIP yet.
        count = len({e.node for e in announced})
        return (
            None,
            "NoEstablishedPeer",
            f"{what}: announced by {count} node(s), none with an established BGP session",
        )
    withdrawn = [e for e in events if isinstance(e, c.RouteWithdrawn)]
    if withdrawn:
        return (False, withdrawn[0].reason, f"{what}: withdrawn on every node")
    return (None, "Pending", f"{what}: not announced yet")


def _ready(conditions: list[Json], gen: int | None) -> Json:
    bad = [x for x in conditions if x["status"] != "True"]
    if not bad:
        return _cond("Ready", True, "Ready", "every stage is done", gen)
    status = False if any(x["status"] == "False" for x in bad) else None
    first = next(x for x in bad if status is None or x["status"] == "False")
    return _cond(
        "Ready",
        status,
        f"{first['type']}{'Failed' if status is False else 'Pending'}",
        "; ".join(f"{x['type']}: {x['message']}" for x in bad),
        gen,
    )


def _lb(addresses: Iterable[str]) -> Json:
    return {"ingress": [{"ip": a} for a in sorted(set(addresses))]}


def compute(
    objects: Objects,
    policy: Policy,
    desired: Mapping[StateKey, c.Event],
    observed: Iterable[c.Event],
) -> Computed:
    """``desired``: the domain events as published (real generations); ``observed``: the latest
    event of every key of the vip, dns, l7, l4, route and admission families."""
    return compute_targets(objects, policy, StatusIndex.of(desired, observed))


def compute_targets(
    objects: Objects,
    policy: Policy,
    index: StatusIndex,
    targets: Iterable[Target] | None = None,
) -> Computed:
    """The status of ``targets`` (None: of every object); a target that is gone or not ours is
    absent from the result."""
    ours, default = our_classes(objects.get("IngressClass", {}).values(), policy)
    ingresses = objects.get("Ingress", {})
    services = objects.get("Service", {})
    if targets is None:
        chosen_ingresses: Iterable[Obj] = ingresses.values()
        chosen_services: Iterable[Obj] = services.values()
    else:
        wanted = list(targets)
        chosen_ingresses = [
            o
            for t in wanted
            if t.kind == "Ingress" and (o := ingresses.get((t.namespace, t.name))) is not None
        ]
        chosen_services = [
            o
            for t in wanted
            if t.kind == "Service" and (o := services.get((t.namespace, t.name))) is not None
        ]
    out = Computed()
    for obj in chosen_ingresses:
        if ingress_class_of(obj, ours, default) is not None:  # another class: never touched
            _ingress(out, index, obj)
    for obj in chosen_services:
        if is_our_lb_service(obj, policy):
            _service(out, index, obj)
    return out


def _verdicts(index: StatusIndex, target: Target) -> list[c.Event]:
    bucket = index.admissions.get((target.kind, target.namespace, target.name), {})
    return [bucket[k] for k in sorted(bucket)]


def _ingress(out: Computed, index: StatusIndex, obj: Obj) -> None:
    target = Target("Ingress", namespace_of(obj), name_of(obj))
    uid = meta(obj).get("uid")
    out.uids[target] = str(uid) if uid else None
    gen = _generation(obj)
    hosts = sorted(index.hosts_of.get((target.namespace, target.name), ()))
    domains = [index.domains[h] for h in hosts]
    verdicts = _verdicts(index, target)
    vips = {d.host: index.vip.get(("domain", d.host)) for d in domains}
    dns_parts: list[tuple[bool | None, str, str]] = []
    l7_parts: list[tuple[bool | None, str, str]] = []
    for d in domains:
        dns = index.dns.get(d.host)
        if isinstance(dns, c.DnsPublished):
            values = sorted({v for r in dns.records for v in r.values})
            dns_parts.append((True, "Published", f"{d.host}: {', '.join(values)}"))
        elif isinstance(dns, c.DnsRejected):
            dns_parts.append((False, dns.reason, f"{d.host}: {dns.message}"))
        else:
            dns_parts.append((None, "Pending", f"{d.host}: not published yet"))
        l7 = index.l7.get(d.host)
        if isinstance(l7, c.L7Rejected) and l7.observed_generation >= d.generation:
            l7_parts.append((False, l7.reason, f"{d.host}: {l7.message}"))
        elif isinstance(l7, c.L7Applied) and l7.observed_generation >= d.generation:
            l7_parts.append((True, "Applied", f"{d.host}: ACKed by {l7.envoys} Envoy(s)"))
        else:
            l7_parts.append((None, "Pending", f"{d.host}: not applied yet"))
    conditions = [
        _accepted(verdicts, gen),
        _combine("VipAssigned", [_vip_part(vips[d.host], d.host) for d in domains], gen),
        _combine("DnsPublished", dns_parts, gen),
        _combine("L7Applied", l7_parts, gen),
        _combine(
            "L4Programmed",
            [_l4_part(index, _addresses(vips[d.host]), d.host) for d in domains],
            gen,
        ),
        _combine(
            "RouteAnnounced",
            [_route_part(index, _addresses(vips[d.host]), d.host) for d in domains],
            gen,
        ),
    ]
    conditions.append(_ready(conditions, gen))
    out.status[target] = {
        "loadBalancer": _lb(a for v in vips.values() for a in _addresses(v)),
        "conditions": conditions,
    }
    causes: list[c.Event | None] = [*verdicts, *vips.values()]
    for d in domains:
        causes += [index.dns.get(d.host), index.l7.get(d.host)]
    _warn(out, target, causes)


def _service(out: Computed, index: StatusIndex, obj: Obj) -> None:
    target = Target("Service", namespace_of(obj), name_of(obj))
    uid = meta(obj).get("uid")
    out.uids[target] = str(uid) if uid else None
    gen = _generation(obj)
    verdicts = _verdicts(index, target)
    vip = index.vip.get(("service", target.namespace, target.name))
    what = f"Service {target.namespace}/{target.name}"
    conditions = [
        _accepted(verdicts, gen),
        _combine("VipAssigned", [_vip_part(vip, what)], gen),
        _combine("L4Programmed", [_l4_part(index, _addresses(vip), what)], gen),
        _combine("RouteAnnounced", [_route_part(index, _addresses(vip), what)], gen),
    ]
    conditions.append(_ready(conditions, gen))
    out.status[target] = {"loadBalancer": _lb(_addresses(vip)), "conditions": conditions}
    _warn(out, target, [*verdicts, vip])


def _warn(out: Computed, target: Target, causes: Iterable[c.Event | None]) -> None:
    for event in causes:
        if isinstance(event, c.AdmissionRejected):
            reason = event.problems[0].reason
            message = f"{event.component}: " + "; ".join(
                f"{p.reason}: {p.message}" for p in event.problems
            )
        elif isinstance(event, c.VipRejected | c.DnsRejected | c.L7Rejected):
            reason, message = event.reason, f"{event.family.value}: {event.message}"
        else:
            continue
        # The cause by its content, not its generation: the same verdict republished (a resync, a
        # second replica) is not news for the object's owner.
        key = (event.ce_type(), *event.key(), reason, message)
        out.warnings.append(
            Warning(target, out.uids.get(target), reason, message[:MAX_MESSAGE], key)
        )


def status_patch(desired: Json, current: Mapping[str, Any] | None, now: str) -> Json | None:
    """The ``.status`` to write, or None when ``current`` already shows ``desired``.

    A condition keeps its lastTransitionTime while its status stays the same, so a converged
    object compares equal and gets zero writes.
    """
    current = current or {}
    old = {x.get("type"): x for x in current.get("conditions") or [] if isinstance(x, Mapping)}
    conditions = []
    for cond in desired["conditions"]:
        before = old.get(cond["type"])
        since = (
            before.get("lastTransitionTime")
            if before is not None and before.get("status") == cond["status"]
            else None
        )
        conditions.append({**cond, "lastTransitionTime": since or now})
    status = {**desired, "conditions": conditions}
    have_lb = current.get("loadBalancer")
    have_ips = have_lb.get("ingress") if isinstance(have_lb, Mapping) else None
    if (have_ips or []) == desired["loadBalancer"]["ingress"] and list(
        current.get("conditions") or []
    ) == conditions:
        return None
    return status

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

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ingress_events import catalogue as c
from ingress_events.catalogue import TOMBSTONES, Family

from .normalize import Policy, StateKey, ingress_class_of, is_our_lb_service, our_classes
from .objects import Objects, meta, name_of, namespace_of

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


@dataclass
class _Index:
    """The reported state, by what status looks things up with."""

    vip: dict[tuple[str, ...], c.Event] = field(default_factory=dict)
    dns: dict[str, c.Event] = field(default_factory=dict)
    l7: dict[str, c.Event] = field(default_factory=dict)
    l4: dict[str, list[c.Event]] = field(default_factory=lambda: defaultdict(list))
    routes: dict[str, list[c.Event]] = field(default_factory=lambda: defaultdict(list))
    admissions: dict[tuple[str, str, str], list[c.Event]] = field(
        default_factory=lambda: defaultdict(list)
    )

    @classmethod
    def of(cls, observed: Iterable[c.Event]) -> _Index:
        index = cls()
        for event in observed:
            if type(event) in TOMBSTONES:
                continue
            if isinstance(event, c.VipAssigned | c.VipRejected):
                index.vip[event.owner.key()] = event
            elif isinstance(event, c.DnsPublished | c.DnsRejected):
                index.dns[event.fqdn] = event
            elif isinstance(event, c.L7Applied | c.L7Rejected):
                index.l7[event.host] = event
            elif isinstance(event, c.L4Programmed | c.L4NotReady):
                index.l4[event.vip].append(event)
            elif isinstance(event, c.RouteAnnounced | c.RouteWithdrawn):
                index.routes[event.vip].append(event)
            elif isinstance(event, c.AdmissionAccepted | c.AdmissionRejected):
                ref = event.object
                index.admissions[(ref.kind, ref.namespace, ref.name)].append(event)
        return index


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


def _l4_part(index: _Index, vips: list[str], what: str) -> tuple[bool | None, str, str]:
    if not vips:
        return (None, "Pending", f"{what}: no VIP yet")
    events = [e for v in vips for e in index.l4.get(v, [])]
    nodes = sorted({e.node for e in events if isinstance(e, c.L4Programmed)})
    if nodes:
        return (True, "Programmed", f"{what}: programmed on {len(nodes)} node(s)")
    not_ready = [e for e in events if isinstance(e, c.L4NotReady)]
    if not_ready:
        return (False, not_ready[0].reason, f"{what}: {not_ready[0].message}")
    return (None, "Pending", f"{what}: no L4 node reported yet")


def _route_part(index: _Index, vips: list[str], what: str) -> tuple[bool | None, str, str]:
    if not vips:
        return (None, "Pending", f"{what}: no VIP yet")
    events = [e for v in vips for e in index.routes.get(v, [])]
    nodes = sorted({e.node for e in events if isinstance(e, c.RouteAnnounced)})
    if nodes:
        return (True, "Announced", f"{what}: announced by {len(nodes)} node(s)")
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
    index = _Index.of(observed)
    out = Computed()
    domains_of: dict[tuple[str, str], list[c.DomainDesired]] = defaultdict(list)
    for (family, _), event in desired.items():
        if family is Family.DOMAIN and isinstance(event, c.DomainDesired):
            for source in event.sources:
                domains_of[(source.namespace, source.name)].append(event)

    ours, default = our_classes(objects.get("IngressClass", {}).values(), policy)
    for obj in objects.get("Ingress", {}).values():
        if ingress_class_of(obj, ours, default) is None:
            continue  # another class: never touched
        target = Target("Ingress", namespace_of(obj), name_of(obj))
        uid = meta(obj).get("uid")
        out.uids[target] = str(uid) if uid else None
        gen = _generation(obj)
        domains = sorted(domains_of.get((target.namespace, target.name), []), key=lambda d: d.host)
        verdicts = index.admissions.get(("Ingress", target.namespace, target.name), [])
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

    for obj in objects.get("Service", {}).values():
        if not is_our_lb_service(obj, policy):
            continue
        target = Target("Service", namespace_of(obj), name_of(obj))
        uid = meta(obj).get("uid")
        out.uids[target] = str(uid) if uid else None
        gen = _generation(obj)
        verdicts = index.admissions.get(("Service", target.namespace, target.name), [])
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
    return out


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

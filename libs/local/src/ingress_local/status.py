"""The live status table: one row per domain, built from the current state on the bus."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ingress_events import catalogue as c
from ingress_events.bus import Bus


@dataclass(frozen=True)
class Row:
    domain: str
    owner: str
    vip: str
    dns: str
    route: str
    l7: str
    condition: str


_READ = (c.Family.DOMAIN, c.Family.VIP, c.Family.DNS, c.Family.L7, c.Family.ROUTE)


async def collect(bus: Bus) -> list[Row]:
    # Only the families a row is made of: at 10,000 domains each replay decodes 10,000 events.
    return rows_of(
        {family: [e.event for e in (await bus.replay(family)).values()] for family in _READ}
    )


def rows_of(state: Mapping[c.Family, Sequence[c.Event]]) -> list[Row]:
    """The rows for the latest event of every key, by family (a family may be missing)."""
    state = {family: state.get(family, ()) for family in _READ}
    vips = {
        e.owner.host: e
        for e in state[c.Family.VIP]
        if isinstance(e, c.VipAssigned | c.VipRejected) and e.owner.kind == "domain"
    }
    dns = {e.key()[0]: e for e in state[c.Family.DNS]}
    l7 = {e.key()[0]: e for e in state[c.Family.L7]}
    routes: dict[str, list[c.Event]] = {}
    for event in state[c.Family.ROUTE]:
        routes.setdefault(event.key()[1], []).append(event)
    rows = []
    for event in state[c.Family.DOMAIN]:
        if not isinstance(event, c.DomainDesired):
            continue
        vip_event = vips.get(event.host)
        vip = ",".join(vip_event.addresses) if isinstance(vip_event, c.VipAssigned) else "-"
        problems = []
        if isinstance(vip_event, c.VipRejected):
            problems.append(f"VIP {vip_event.reason}")
        dns_event = dns.get(event.host)
        dns_text = (
            {c.DnsPublished: "published", c.DnsRejected: "rejected", c.DnsRemoved: "removed"}.get(
                type(dns_event), "-"
            )
            if dns_event
            else "-"
        )
        if isinstance(dns_event, c.DnsRejected):
            problems.append(f"DNS {dns_event.reason}")
        announced = [
            r
            for a in (vip_event.addresses if isinstance(vip_event, c.VipAssigned) else [])
            for r in routes.get(a, [])
            if isinstance(r, c.RouteAnnounced)
        ]
        # Announced to no established peer, the route is in no router yet: not Ready.
        routed = [r for r in announced if r.reaches_a_router()]
        route_text = "-"
        if routed:
            route_text = f"{len(routed)} node(s)"
        elif announced:
            route_text = "no peer"
        l7_event = l7.get(event.host)
        l7_text = "-"
        if isinstance(l7_event, c.L7Applied):
            l7_text = f"gen {l7_event.observed_generation}"
        elif isinstance(l7_event, c.L7Rejected):
            l7_text = "rejected"
            problems.append(f"L7 {l7_event.reason}")
        rows.append(
            Row(
                domain=event.host,
                owner=event.owner_namespace,
                vip=vip,
                dns=dns_text,
                route=route_text,
                l7=l7_text,
                condition="; ".join(problems)
                or (
                    "Ready"
                    if vip != "-"
                    and routed
                    and l7_text.startswith("gen")
                    and dns_text == "published"
                    else "Progressing"
                ),
            )
        )
    return sorted(rows, key=lambda r: r.domain)


def render(rows: list[Row]) -> str:
    header = Row("DOMAIN", "OWNER", "VIP", "DNS", "ROUTE", "L7", "CONDITION")
    table = [header, *rows]
    widths = [max(len(getattr(r, f)) for r in table) for f in Row.__dataclass_fields__]
    lines = [
        "  ".join(
            getattr(r, f).ljust(w) for f, w in zip(Row.__dataclass_fields__, widths, strict=True)
        )
        for r in table
    ]
    if not rows:
        lines.append("(no domains on the bus yet)")
    return "\n".join(lines)

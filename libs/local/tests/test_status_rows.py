"""The live status table's rows, from the latest events."""

from __future__ import annotations

import pytest
from ingress_events import catalogue as c
from ingress_events.examples import examples
from ingress_local.status import rows_of

pytestmark = pytest.mark.unit

KINDS = (c.DomainDesired, c.VipAssigned, c.DnsPublished, c.L7Applied)
DONE = [e for e in examples() if type(e) in KINDS]  # shop.example.com on 192.0.2.10, all done
VIP = "192.0.2.10"


def _state(*routes: c.Event) -> dict[c.Family, list[c.Event]]:
    state: dict[c.Family, list[c.Event]] = {c.Family.ROUTE: list(routes)}
    for event in DONE:
        state.setdefault(event.family, []).append(event)
    return state


def _route(node: str, peers: list[str]) -> c.RouteAnnounced:
    return c.RouteAnnounced(generation=1, node=node, vip=VIP, prefix=f"{VIP}/32", peers=peers)


def test_a_route_that_reaches_a_router_makes_the_row_ready() -> None:
    assert len(DONE) == len(KINDS)
    (row,) = rows_of(_state(_route("l4-a", ["tor-a"]), _route("l4-b", [])))
    assert (row.domain, row.vip, row.dns, row.l7) == ("shop.example.com", VIP, "published", "gen 1")
    assert (row.route, row.condition) == ("1 node(s)", "Ready")


def test_a_route_announced_to_no_established_peer_is_not_ready() -> None:
    (row,) = rows_of(_state(_route("l4-a", [])))
    assert (row.route, row.condition) == ("no peer", "Progressing")
    (row,) = rows_of(_state())
    assert (row.route, row.condition) == ("-", "Progressing")

"""The L7-node role's plan: assigned ingress-domain VIPs are bound, released ones unbound, and
nothing is unbound for lack of news."""

from __future__ import annotations

import pytest
from ingress_events import catalogue as c
from ingress_l4_programmer.domain.l7 import plan_l7
from l4p_factories import domain_vip, service_vip

pytestmark = pytest.mark.unit


def released(host: str, vip: str, gen: int = 20) -> c.VipReleased:
    return c.VipReleased(
        generation=gen, owner=c.VipOwner(kind="domain", host=host), addresses=[vip]
    )


def test_assigned_domain_vips_are_bound_and_service_vips_are_not() -> None:
    plan = plan_l7(
        [],
        [
            domain_vip("a.example.com", "198.51.100.1"),
            service_vip("ns", "db", "198.51.100.9", (5432,)),
        ],
        [],
    )
    assert plan.bind == ("198.51.100.1",) and plan.unbind == ()


def test_only_a_release_unbinds_and_an_unknown_address_stays() -> None:
    bound = ["198.51.100.1", "198.51.100.2", "10.9.9.9"]
    plan = plan_l7(
        bound,
        [domain_vip("a.example.com", "198.51.100.1")],
        [released("b.example.com", "198.51.100.2")],
    )
    assert plan.bind == () and plan.unbind == ("198.51.100.2",)
    # A fresh bus (no events at all) unbinds nothing.
    assert plan_l7(bound, [], []).empty


def test_a_shared_vip_released_by_one_domain_stays_for_the_other() -> None:
    plan = plan_l7(
        ["198.51.100.5"],
        [domain_vip("a.example.com", "198.51.100.5")],
        [released("b.example.com", "198.51.100.5")],
    )
    assert plan.empty

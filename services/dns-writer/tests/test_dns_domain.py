"""The planner's rules, checked over generated zone states (hypothesis) and named cases."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ingress_dns_writer.domain import (
    Desired,
    NameState,
    OwnerRecord,
    Rejection,
    apply_to_state,
    check_name,
    healthy_vips,
    next_withdrawn_since,
    plan_publish,
    plan_remove,
    withdrawn_everywhere,
    zone_for,
)

pytestmark = pytest.mark.unit

ME = "cluster-a"
PREFIX = "_ingress-owner"
ADDRS = [f"10.0.0.{i}" for i in range(1, 7)] + ["2001:db8::1", "2001:db8::2"]

addresses = st.frozensets(st.sampled_from(ADDRS), max_size=4)


@st.composite
def states(draw: st.DrawFn, foreign: bool = False) -> NameState:
    mine = draw(addresses)
    peer = draw(addresses) - mine
    present_mine = (
        draw(st.frozensets(st.sampled_from(sorted(mine)), max_size=len(mine)))
        if mine
        else frozenset()
    )
    extra = draw(addresses) - mine - peer if foreign else frozenset()
    owners = []
    if mine or draw(st.booleans()):
        owners.append(OwnerRecord(ME, "domain/app.example.test", mine))
    if peer:
        owners.append(OwnerRecord("cluster-b", "domain/app.example.test", peer))
    present = present_mine | peer | extra
    return NameState(
        addresses=present,
        ttl=draw(st.sampled_from([30, 60])) if present else None,
        owners=tuple(owners),
        registry_texts=frozenset(o.to_text() for o in owners) | {"v=spf1 -all"},
    )


def desired(assigned: frozenset[str], healthy: frozenset[str], ttl: int = 30) -> Desired:
    return Desired(
        "app.example.test",
        "example.test",
        "domain/app.example.test",
        assigned,
        healthy & assigned,
        ttl,
        7,
    )


@settings(max_examples=300)
@given(states(), addresses.filter(bool), addresses, st.sampled_from([30, 60]))
def test_publish_converges_in_one_step_and_touches_only_our_values(
    state: NameState, assigned: frozenset[str], healthy: frozenset[str], ttl: int
) -> None:
    want = desired(assigned, healthy, ttl)
    plan = plan_publish(want, state, ME, PREFIX)
    assert not isinstance(plan, Rejection)
    others = state.claimed_by_others(ME)
    deleted = {ch.value for ch in plan.changes if ch.op == "delete" and ch.rtype != "TXT"}
    assert not deleted & others
    mine = state.mine(ME)
    assert deleted <= (mine.values if mine else frozenset())
    after = apply_to_state(state, plan)
    # Converged: planning again against the result writes nothing.
    again = plan_publish(want, after, ME, PREFIX)
    assert not isinstance(again, Rejection) and again.empty
    # The name never ends up empty because of health alone.
    assert after.addresses
    # Other owners' values and unrelated TXT records survive.
    assert (others & state.addresses) <= after.addresses
    assert "v=spf1 -all" in after.registry_texts
    if want.healthy:
        assert after.mine(ME) is not None and after.mine(ME).values == want.healthy  # type: ignore[union-attr]


@given(states(foreign=True), addresses.filter(bool))
def test_foreign_values_reject_the_name(state: NameState, assigned: frozenset[str]) -> None:
    plan = plan_publish(desired(assigned, assigned), state, ME, PREFIX)
    if state.foreign():
        assert isinstance(plan, Rejection) and plan.reason == "NameHeldByForeignRecord"
    else:
        assert not isinstance(plan, Rejection)


@given(states(), st.booleans())
def test_remove_takes_only_ours_and_upsert_only_takes_nothing(
    state: NameState, upsert_only: bool
) -> None:
    plan = plan_remove(
        "app.example.test", "example.test", state, ME, PREFIX, upsert_only=upsert_only
    )
    after = apply_to_state(state, plan)
    if upsert_only:
        assert plan.empty
        return
    assert after.mine(ME) is None
    assert (state.claimed_by_others(ME) & state.addresses) <= after.addresses
    assert plan_remove(
        "app.example.test", "example.test", after, ME, PREFIX, upsert_only=False
    ).empty


def test_cname_rejects() -> None:
    plan = plan_publish(
        desired(frozenset({"10.0.0.1"}), frozenset({"10.0.0.1"})), NameState(cname=True), ME, PREFIX
    )
    assert isinstance(plan, Rejection) and plan.reason == "CnameAtName"


def test_withdrawn_steps_aside_when_a_peer_serves_and_stays_when_alone() -> None:
    peer = OwnerRecord("cluster-b", "domain/app.example.test", frozenset({"10.0.0.2"}))
    mine = OwnerRecord(ME, "domain/app.example.test", frozenset({"10.0.0.1"}))
    shared = NameState(
        frozenset({"10.0.0.1", "10.0.0.2"}),
        30,
        False,
        (mine, peer),
        frozenset({mine.to_text(), peer.to_text()}),
    )
    want = desired(frozenset({"10.0.0.1"}), frozenset())
    plan = plan_publish(want, shared, ME, PREFIX)
    assert not isinstance(plan, Rejection)
    assert apply_to_state(shared, plan).addresses == {"10.0.0.2"}
    alone = NameState(frozenset({"10.0.0.1"}), 30, False, (mine,), frozenset({mine.to_text()}))
    plan = plan_publish(want, alone, ME, PREFIX)
    assert not isinstance(plan, Rejection)
    # The value stays; only our registry record changes, to say it is kept but not ready.
    assert {(ch.op, ch.rtype) for ch in plan.changes} == {("delete", "TXT"), ("add", "TXT")}
    after = apply_to_state(alone, plan)
    assert after.addresses == {"10.0.0.1"}
    kept = after.mine(ME)
    assert kept is not None and not kept.ready
    again = plan_publish(want, after, ME, PREFIX)
    assert not isinstance(again, Rejection) and again.empty
    # Two owners both withdrawn keep their values: neither is a ready peer to step aside for.
    tired = OwnerRecord(
        "cluster-b", "domain/app.example.test", frozenset({"10.0.0.2"}), ready=False
    )
    both = NameState(
        frozenset({"10.0.0.1", "10.0.0.2"}),
        30,
        False,
        (kept, tired),
        frozenset({kept.to_text(), tired.to_text()}),
    )
    plan = plan_publish(want, both, ME, PREFIX)
    assert not isinstance(plan, Rejection) and plan.empty


def regional(
    region: str, healthy: bool = True, weight: int | None = None, value: str = "10.0.0.1"
) -> Desired:
    values = frozenset({value})
    return Desired(
        "app.example.test",
        "example.test",
        "domain/app.example.test",
        values,
        values if healthy else frozenset(),
        30,
        7,
        region=region,
        weight=weight,
    )


def holding(*records: OwnerRecord) -> NameState:
    present = frozenset(v for r in records for v in r.values)
    return NameState(
        present, 30 if present else None, False, records, frozenset(r.to_text() for r in records)
    )


def test_region_provider_prefers_its_region_and_falls_back() -> None:
    eu = OwnerRecord("cluster-eu", "domain/app.example.test", frozenset({"10.0.1.1"}), "eu")
    # At the eu provider, a us cluster stands by while the eu cluster serves the name...
    plan = plan_publish(regional("us"), holding(eu), ME, PREFIX, provider_region="eu")
    assert not isinstance(plan, Rejection) and plan.empty and not plan.published
    # ...publishes as a fallback when the eu cluster's values are kept but not ready...
    tired = OwnerRecord(eu.owner, eu.resource, eu.values, "eu", ready=False)
    plan = plan_publish(regional("us"), holding(tired), ME, PREFIX, provider_region="eu")
    assert not isinstance(plan, Rejection) and plan.published == {"10.0.0.1"}
    after = apply_to_state(holding(tired), plan)
    mine = after.mine(ME)
    assert mine is not None and mine.region == "us" and mine.ready
    # ...or when no eu cluster serves the name at all.
    plan = plan_publish(regional("us"), NameState(), ME, PREFIX, provider_region="eu")
    assert not isinstance(plan, Rejection) and plan.published == {"10.0.0.1"}
    # Its own region's provider and a provider without a region always carry its VIPs.
    for region in ("us", None):
        plan = plan_publish(regional("us"), holding(eu), ME, PREFIX, provider_region=region)
        assert not isinstance(plan, Rejection) and plan.published == {"10.0.0.1"}
    # Once the eu cluster is ready again, the fallback steps aside and removes its values.
    back = holding(eu, mine)
    plan = plan_publish(regional("us"), back, ME, PREFIX, provider_region="eu")
    assert not isinstance(plan, Rejection)
    assert apply_to_state(back, plan).addresses == {"10.0.1.1"}
    # The eu cluster, withdrawn and seeing a ready fallback, steps aside too (no dead VIPs).
    us = OwnerRecord("cluster-us", "domain/app.example.test", frozenset({"10.0.0.9"}), "us")
    mine_eu = OwnerRecord(ME, "domain/app.example.test", frozenset({"10.0.0.1"}), "eu", ready=False)
    state = holding(mine_eu, us)
    plan = plan_publish(regional("eu", healthy=False), state, ME, PREFIX, provider_region="eu")
    assert not isinstance(plan, Rejection)
    assert apply_to_state(state, plan).addresses == {"10.0.0.9"}


def test_weight_zero_drains_while_a_weighted_peer_serves() -> None:
    peer = OwnerRecord("cluster-b", "domain/app.example.test", frozenset({"10.0.0.2"}), weight=3)
    plan = plan_publish(regional("eu", weight=0), holding(peer), ME, PREFIX)
    assert not isinstance(plan, Rejection) and not plan.published
    # Alone, or beside drained peers only, a drained cluster still serves: never an empty name.
    drained = OwnerRecord(peer.owner, peer.resource, peer.values, weight=0)
    for state in (NameState(), holding(drained)):
        plan = plan_publish(regional("eu", weight=0), state, ME, PREFIX)
        assert not isinstance(plan, Rejection) and plan.published == {"10.0.0.1"}
    # The weight travels in the registry record (for providers with weighted routing).
    plan = plan_publish(regional("eu", weight=5), NameState(), ME, PREFIX)
    assert not isinstance(plan, Rejection)
    mine = apply_to_state(NameState(), plan).mine(ME)
    assert mine is not None and mine.weight == 5


def test_owner_record_round_trip_and_old_records() -> None:
    record = OwnerRecord("c", "domain/x", frozenset({"10.0.0.1"}), "eu", 0, ready=False)
    assert record.to_text() == (
        "heritage=ingress-domain,owner=c,resource=domain/x,region=eu,weight=0,ready=false,"
        "values=10.0.0.1"
    )
    assert OwnerRecord.parse(record.to_text()) == record
    old = OwnerRecord.parse("heritage=ingress-domain,owner=c,resource=domain/x,values=10.0.0.1")
    assert old == OwnerRecord("c", "domain/x", frozenset({"10.0.0.1"}))
    assert old is not None and old.ready and old.region is None and old.weight is None


def test_first_write_requires_the_name_still_empty() -> None:
    plan = plan_publish(
        desired(frozenset({"10.0.0.1", "2001:db8::1"}), frozenset({"10.0.0.1", "2001:db8::1"})),
        NameState(),
        ME,
        PREFIX,
    )
    assert not isinstance(plan, Rejection)
    assert plan.absent == ("CNAME", "A", "AAAA")


def test_names_and_zones() -> None:
    zones = ["example.test", "sub.example.test"]
    assert zone_for("a.sub.example.test", zones) == "sub.example.test"
    assert zone_for("example.test", zones) == "example.test"
    assert zone_for("example.org", zones) is None
    assert check_name("app.example.org", zones, PREFIX)[1].reason == "OutsideManagedZones"  # type: ignore[union-attr]
    assert check_name("bücher.example.test", zones, PREFIX)[1].reason == "InvalidName"  # type: ignore[union-attr]
    # Valid as a host (246 characters) but its registry name would pass DNS's 253.
    long_name = ".".join(["a" * 60, "b" * 60, "c" * 60, "d" * 50, "example.test"])
    rejection = check_name(long_name, zones, PREFIX)[1]
    assert rejection is not None and rejection.reason == "NameTooLong"
    assert check_name("*.apps.example.test", zones, PREFIX) == ("example.test", None)


def test_registry_text_round_trip_and_foreign_txt_ignored() -> None:
    record = OwnerRecord(ME, "domain/x.example.test", frozenset({"10.0.0.1", "2001:db8::1"}))
    assert OwnerRecord.parse(record.to_text()) == record
    assert OwnerRecord.parse("heritage=external-dns,external-dns/owner=x") is None
    assert OwnerRecord.parse("v=spf1 -all") is None


@given(st.lists(st.booleans(), max_size=4), st.integers(0, 100), st.integers(0, 100))
def test_hold_down(routes: list[bool], since_offset: int, hold: int) -> None:
    withdrawn = withdrawn_everywhere(routes)
    assert withdrawn == (bool(routes) and not any(routes))
    since = next_withdrawn_since(None, withdrawn, 1000.0)
    assert (since is None) == (not withdrawn)
    assert next_withdrawn_since(5.0, True, 1000.0) == 5.0
    marks = {"10.0.0.1": 1000.0 - since_offset}
    healthy, wake = healthy_vips(["10.0.0.1", "10.0.0.2"], marks, 1000.0, hold)
    assert "10.0.0.2" in healthy
    assert ("10.0.0.1" in healthy) == (since_offset < hold)
    assert (wake is not None) == (since_offset < hold)


def test_a_vip_waits_for_its_first_route_event_or_the_wait() -> None:
    from ingress_dns_writer.domain import pending_vips

    at = {"10.0.0.1": 100.0, "10.0.0.2": 100.0, "10.0.0.3": 95.0}
    pending, wake = pending_vips(
        ["10.0.0.1", "10.0.0.2", "10.0.0.3"], {"10.0.0.2"}, at, now=103.0, wait=5.0
    )
    # .2 has a route event; .3 waited its 5 s; .1 waits until 105.
    assert pending == {"10.0.0.1"} and wake == 105.0
    assert pending_vips(["10.0.0.1"], set(), at, now=103.0, wait=0.0) == (frozenset(), None)

"""The pure planning code: validation, announce-after-ready with hold-down, apply planning."""

from __future__ import annotations

import hashlib

import pytest
from helpers import not_ready, peer, pool, programmed
from hypothesis import given, settings
from hypothesis import strategies as st
from ingress_bgp_speaker.domain import announce as a
from ingress_bgp_speaker.domain.model import PeerConfig, PoolConfig
from ingress_bgp_speaker.domain.plan import BirdCurrent, BirdTarget, plan_apply
from ingress_bgp_speaker.domain.validate import (
    Secret,
    peer_applies_to,
    validate_peer,
    validate_pool,
)
from ingress_events import catalogue as c

pytestmark = pytest.mark.unit


def _reasons(result: object) -> list[str]:
    assert isinstance(result, list)
    return [p.reason for p in result]


@pytest.mark.parametrize("asn", [23456, 65535, 65552, 100000, 131071, 4294967295])
def test_reserved_asns_are_refused(asn: int) -> None:
    assert _reasons(validate_peer(peer("p", "10.0.0.1", peer_asn=asn), None)) == ["AsnOutOfRange"]
    assert _reasons(validate_peer(peer("p", "10.0.0.1", local_asn=asn), None)) == ["AsnOutOfRange"]


@pytest.mark.parametrize(
    "address",
    ["0.0.0.0", "127.0.0.1", "224.0.0.5", "169.254.1.1", "::1", "fe80::1", "255.255.255.255"],
)
def test_addresses_no_neighbour_can_have_are_refused(address: str) -> None:
    assert _reasons(validate_peer(peer("p", address), None)) == ["InvalidPeerAddress"]


def test_timers_are_checked() -> None:
    assert _reasons(validate_peer(peer("p", "10.0.0.1", hold_time_seconds=2), None)) == [
        "InvalidTimers"
    ]
    bad_keepalive = peer("p", "10.0.0.1", hold_time_seconds=9, keepalive_seconds=9)
    assert _reasons(validate_peer(bad_keepalive, None)) == ["InvalidTimers"]
    assert isinstance(validate_peer(peer("p", "10.0.0.1", hold_time_seconds=0), None), PeerConfig)


def test_password_from_the_secret_is_checked_against_its_hash() -> None:
    event = peer("p", "10.0.0.1", password="right")
    ok = validate_peer(event, Secret("right"))
    assert isinstance(ok, PeerConfig) and ok.password == "right"
    assert _reasons(validate_peer(event, Secret(None, "gone"))) == ["PasswordSecretMissing"]
    assert _reasons(validate_peer(event, None)) == ["PasswordSecretMissing"]
    assert _reasons(validate_peer(event, Secret("stale"))) == ["PasswordSecretStale"]
    quoted = peer("p", "10.0.0.1", password='a"b')
    assert _reasons(validate_peer(quoted, Secret('a"b'))) == ["InvalidPassword"]


def test_every_problem_is_reported_at_once() -> None:
    event = peer("p", "127.0.0.1", peer_asn=23456, hold_time_seconds=1)
    assert sorted(_reasons(validate_peer(event, None))) == [
        "AsnOutOfRange",
        "InvalidPeerAddress",
        "InvalidTimers",
    ]


def test_node_globs() -> None:
    assert peer_applies_to(peer("p", "10.0.0.1"), "anything")
    assert peer_applies_to(peer("p", "10.0.0.1", nodes=["l4-*"]), "l4-rack1-3")
    assert not peer_applies_to(peer("p", "10.0.0.1", nodes=["l4-*"]), "worker-1")


def test_pool_communities_and_ranges() -> None:
    ok = validate_pool(
        pool(
            cidrs=("10.1.0.0/24",),
            ranges=[c.AddressRange(first="10.2.0.1", last="10.2.0.6")],
            announce=c.PoolAnnouncement(
                communities=["65000:100"],
                large_communities=["4200000000:1:2"],
                local_preference=200,
            ),
        )
    )
    assert isinstance(ok, PoolConfig)
    assert ok.communities == ((65000, 100),) and ok.large_communities == ((4200000000, 1, 2),)
    assert ok.contains("10.2.0.6") and not ok.contains("10.2.0.7") and ok.contains("10.1.0.9")
    bad = validate_pool(
        pool(
            ranges=[c.AddressRange(first="10.2.0.9", last="10.2.0.1")],
            announce=c.PoolAnnouncement(
                communities=["70000:1", "no-export"], large_communities=["1:2"]
            ),
        )
    )
    assert _reasons(bad) == [
        "InvalidRange",
        "InvalidCommunity",
        "InvalidCommunity",
        "InvalidLargeCommunity",
    ]


POOLS = [PoolConfig("public", (__import__("ipaddress").ip_network("10.100.0.0/24"),))]


def test_readiness_reasons() -> None:
    l4: dict[str, c.L4Programmed | c.L4NotReady | c.L4Removed] = {
        "10.100.0.1": programmed("n", "10.100.0.1"),
        "10.100.0.2": programmed("n", "10.100.0.2", ready=0),
        "10.100.0.3": not_ready("n", "10.100.0.3"),
        "10.100.0.4": c.L4Removed(generation=5, node="n", vip="10.100.0.4"),
        "10.100.0.9": programmed("n", "10.100.0.9"),
        "192.0.2.1": programmed("n", "192.0.2.1"),
    }
    assigned = ["10.100.0.1", "10.100.0.2", "10.100.0.3", "10.100.0.4", "10.100.0.5", "192.0.2.1"]
    got = a.vip_readiness(assigned, l4, POOLS)
    assert {v: r.reason for v, r in got.items()} == {
        "10.100.0.1": None,
        "10.100.0.2": a.NO_READY_BACKENDS,
        "10.100.0.3": a.L4_NOT_READY,
        "10.100.0.4": a.L4_REMOVED,
        "10.100.0.5": a.NOT_PROGRAMMED,
        "10.100.0.9": a.RELEASED,
        "192.0.2.1": a.OUTSIDE_POOLS,
    }


VIPS = st.sampled_from(["10.100.0.1", "10.100.0.2", "10.100.0.3"])
STEP = st.tuples(st.frozensets(VIPS), st.floats(min_value=0.0, max_value=5.0))


@settings(max_examples=300, deadline=None)
@given(steps=st.lists(STEP, min_size=1, max_size=25), hold_down=st.floats(0.0, 10.0))
def test_announce_only_ready_and_never_inside_hold_down(
    steps: list[tuple[frozenset[str], float]], hold_down: float
) -> None:
    state: dict[str, a.RouteState] = {}
    now = 0.0
    last_withdrawal: dict[str, float] = {}
    ready_since: dict[str, float] = {}
    for ready, dt in steps:
        now += dt
        readiness = {
            v: a.Readiness(v in ready, None if v in ready else a.L4_NOT_READY)
            for v in ["10.100.0.1", "10.100.0.2", "10.100.0.3"]
        }
        plan = a.plan_announcements(readiness, state, now, hold_down)
        for vip in plan.announced:
            assert vip in ready  # announce after ready, never otherwise
            if vip not in {v for v, s in state.items() if s.announced} and vip in last_withdrawal:
                assert now >= last_withdrawal[vip] + hold_down  # hold-down respected
        for vip, before in state.items():
            if before.announced and vip not in plan.announced:
                last_withdrawal[vip] = now
        for vip in ready:
            ready_since.setdefault(vip, now)
        for vip in set(ready_since) - ready:
            del ready_since[vip]
        for vip, since in ready_since.items():
            # Ready through a whole hold-down since the last withdrawal: announced.
            if now >= last_withdrawal.get(vip, -1e9) + hold_down and now >= since:
                assert vip in plan.announced or plan.wake_at is not None
        # Planning again with nothing changed changes nothing (level-triggered, idempotent).
        again = a.plan_announcements(readiness, plan.state, now, hold_down)
        assert again.state == plan.state
        state = plan.state


def test_hold_down_wakes_the_loop_when_it_ends() -> None:
    ready = {"10.100.0.1": a.Readiness(True, None)}
    unready = {"10.100.0.1": a.Readiness(False, a.L4_NOT_READY)}
    first = a.plan_announcements(ready, {}, 0.0, 10.0)
    assert first.announced == {"10.100.0.1"}  # the first announcement does not wait
    down = a.plan_announcements(unready, first.state, 1.0, 10.0)
    assert down.announced == frozenset() and down.reasons["10.100.0.1"] == a.L4_NOT_READY
    back = a.plan_announcements(ready, down.state, 2.0, 10.0)
    assert back.announced == frozenset() and back.wake_at == 11.0
    assert back.reasons["10.100.0.1"] == a.HOLD_DOWN
    assert a.plan_announcements(ready, back.state, 11.0, 10.0).announced == {"10.100.0.1"}


@given(
    routes=st.frozensets(st.sampled_from(["10.0.0.1/32", "10.0.0.2/32", "2001:db8::1/128"])),
    live=st.frozensets(st.sampled_from(["10.0.0.1/32", "10.0.0.2/32", "2001:db8::1/128"])),
    same_text=st.booleans(),
)
def test_plan_apply_writes_exactly_when_bird_differs(
    routes: frozenset[str], live: frozenset[str], same_text: bool
) -> None:
    target = BirdTarget("cfg", routes, frozenset({"peer_a"}))
    current = BirdCurrent("cfg" if same_text else "old", live, frozenset({"peer_a"}))
    assert plan_apply(target, current).write == (not same_text or routes != live)


def test_password_hash_helper_matches_catalogue_format() -> None:
    event = peer("p", "10.0.0.1", password="x")
    assert event.password_hash == hashlib.sha256(b"x").hexdigest()


READINESS_CHOICES = st.sampled_from(
    [None, a.READY, a.Readiness(False, a.L4_NOT_READY), a.Readiness(False, a.NO_READY_BACKENDS)]
)
CHANGE = st.tuples(
    st.dictionaries(
        st.sampled_from(["10.100.0.1", "10.100.0.2", "10.100.0.3", "10.100.0.4"]),
        READINESS_CHOICES,
        max_size=4,
    ),
    st.floats(min_value=0.0, max_value=4.0),
    st.booleans(),
)


@settings(max_examples=400, deadline=None)
@given(steps=st.lists(CHANGE, min_size=1, max_size=30), hold_down=st.floats(0.0, 6.0))
def test_replanning_what_changed_is_planning_everything(
    steps: list[tuple[dict[str, a.Readiness | None], float, bool]], hold_down: float
) -> None:
    """Readiness changes (None: the VIP is gone), time passes, and a pass commits its plan or
    fails (BIRD refused it: the next pass plans from the last committed plan, and must look
    again at everything that changed since). After every step the plan made from the VIPs that
    changed equals the plan made from all of them."""
    readiness: dict[str, a.Readiness] = {}
    committed = a.plan_announcements({}, {}, 0.0, hold_down)
    changed_since_commit: set[str] = set()
    now = 0.0
    for change, dt, commits in steps:
        now += dt
        for vip, value in change.items():
            if value is None:
                readiness.pop(vip, None)
            else:
                readiness[vip] = value
            changed_since_commit.add(vip)
        full = a.plan_announcements(readiness, committed.state, now, hold_down)
        partial = a.replan_announcements(readiness, committed, changed_since_commit, now, hold_down)
        assert (partial.state, partial.reasons, partial.wake_at) == (
            full.state,
            full.reasons,
            full.wake_at,
        )
        if commits:
            committed, changed_since_commit = partial, set()


def test_readiness_of_one_vip_is_the_readiness_of_all() -> None:
    l4: dict[str, c.L4Programmed | c.L4NotReady | c.L4Removed] = {
        "10.100.0.1": programmed("n", "10.100.0.1"),
        "10.100.0.2": programmed("n", "10.100.0.2", ready=0),
        "10.100.0.9": programmed("n", "10.100.0.9"),
    }
    assigned = {"10.100.0.1", "10.100.0.2", "10.100.0.5", "192.0.2.1"}
    membership = a.PoolMembership(POOLS)
    one_by_one = {
        vip: r
        for vip in [*assigned, *l4, "10.100.0.7"]
        if (r := a.readiness_of(vip, vip in assigned, l4.get(vip), membership)) is not None
    }
    assert one_by_one == a.vip_readiness(assigned, l4, POOLS)
    assert "10.100.0.7" not in one_by_one  # neither assigned nor programmed: unknown

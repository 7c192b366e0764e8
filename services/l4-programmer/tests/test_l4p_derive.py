"""Events -> desired state: pools, owners, real servers, and every refusal with its reason;
plus the golden plans of one scenario for both dataplanes (UPDATE_GOLDEN=1 rewrites them)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ingress_events import catalogue as c
from ingress_l4_programmer.domain.desired import DeriveConfig, Derived, Deriver, derive
from ingress_l4_programmer.domain.model import EMPTY_KERNEL, Real, VsKey, apply_ops, describe
from ingress_l4_programmer.domain.nft import render_changes, render_table
from ingress_l4_programmer.domain.plan import plan
from l4p_factories import domain_vip, endpoints, envoy_pool, pool, service_vip

pytestmark = pytest.mark.unit

GOLDEN = Path(__file__).parent / "golden"
IPVS = DeriveConfig("ingress-domain", "envoy", frozenset({80, 443}), "mh", weight=100, tunnel=True)
NFT = DeriveConfig(
    "ingress-domain", "envoy", frozenset({80, 443}), "numgen", weight=1, tunnel=False
)


def _backends(*events: c.BackendEndpoints) -> dict[tuple[str, str, int], c.BackendEndpoints]:
    return {(e.namespace, e.service, e.port): e for e in events}


def scenario() -> dict[str, object]:
    return {
        "assigned": [
            domain_vip("shop.example.com", "198.51.100.10", gen=10),
            domain_vip("blog.example.com", "198.51.100.11", gen=11),
            service_vip("team-a", "db", "198.51.100.20", (5432,), gen=12),
            domain_vip("stray.example.com", "203.0.113.9", gen=13),  # outside every pool
            service_vip("team-b", "cache", "198.51.100.20", (6379,), gen=14),  # no sharing key
        ],
        "released": [
            c.VipReleased(
                generation=20,
                owner=c.VipOwner(kind="domain", host="old.example.com"),
                addresses=["198.51.100.30"],
            )
        ],
        "endpoints": _backends(
            *envoy_pool(["10.0.1.1", "10.0.1.2", "10.0.1.3"]),
            endpoints(
                "team-a",
                "db",
                5432,
                ["10.0.2.1", "127.0.0.1", "10.0.2.2"],
                terminating=("10.0.2.2",),
            ),
        ),
        "pools": [pool()],
    }


def test_scenario_refusals_are_local_and_explained() -> None:
    d = derive(config=IPVS, **scenario())  # type: ignore[arg-type]
    assert d.vips["203.0.113.9"].problem is not None
    assert d.vips["203.0.113.9"].problem.reason == "VipOutsidePool"
    assert "203.0.113.9" not in d.desired.addresses
    reasons = {(p.kind, p.namespace, p.name, p.reason) for p in d.problems}
    assert reasons == {
        ("Service", "team-b", "cache", "AddressInUse"),
        ("Service", "team-a", "db", "InvalidRealServer"),
    }
    assert d.desired.addresses == {"198.51.100.10", "198.51.100.11", "198.51.100.20"}
    db = d.desired.services[VsKey("198.51.100.20", "TCP", 5432)]
    # The loopback endpoint is refused; the terminating one is kept, drained (weight 0).
    assert db.reals == {Real("10.0.2.1", 5432): 100, Real("10.0.2.2", 5432): 0}
    assert d.desired.released == {"198.51.100.30"}


def test_shared_vip_with_a_common_key_but_a_clashing_port() -> None:
    d = derive(
        assigned=[
            service_vip("a", "web", "198.51.100.5", (80, 8080), gen=1, sharing_key="k"),
            service_vip("b", "web", "198.51.100.5", (8080, 9090), gen=2, sharing_key="k"),
        ],
        released=[],
        endpoints={},
        pools=[pool()],
        config=IPVS,
    )
    assert sorted(k.port for k in d.desired.services) == [80, 8080, 9090]
    [problem] = d.problems
    assert (problem.name, problem.reason) == ("web", "PortClash") and problem.namespace == "b"


def test_tunnel_mode_refuses_a_rewritten_port_and_nat_mode_accepts_it() -> None:
    eps = _backends(
        *[
            endpoints("ingress-domain", "envoy", p, ["10.0.1.1"], target_port=8080 + p)
            for p in (80, 443)
        ]
    )
    args = {
        "assigned": [domain_vip("a.example.com", "198.51.100.10")],
        "released": [],
        "endpoints": eps,
        "pools": [pool()],
    }
    ipvs = derive(config=IPVS, **args)  # type: ignore[arg-type]
    assert {p.reason for p in ipvs.problems} == {"InvalidRealServer"}
    assert all(not s.reals for s in ipvs.desired.services.values())
    nft = derive(config=NFT, **args)  # type: ignore[arg-type]
    assert nft.problems == []
    assert nft.desired.services[VsKey("198.51.100.10", "TCP", 80)].reals == {
        Real("10.0.1.1", 8160): 1
    }


def test_a_vip_in_a_range_but_excluded_is_outside() -> None:
    p = c.PoolDesired(
        generation=1,
        pool="r",
        ranges=[c.AddressRange(first="198.51.100.10", last="198.51.100.20")],
        exclude=["198.51.100.15"],
    )
    for vip, inside in (
        ("198.51.100.12", True),
        ("198.51.100.15", False),
        ("198.51.100.21", False),
    ):
        d = derive([domain_vip("a.example.com", vip)], [], {}, [p], IPVS)
        assert (d.vips[vip].problem is None) is inside


def test_every_domain_vip_shares_one_checked_envoy_pool() -> None:
    # The pool's spec is computed once per pass and shared by every domain VIP: each VIP still
    # gets exactly the valid Envoys, and a bad endpoint is one problem per port, not per VIP.
    d = derive(
        assigned=[domain_vip(f"d{i}.example.com", f"198.51.100.{i}", gen=i) for i in (1, 2, 3)],
        released=[],
        endpoints=_backends(*envoy_pool(["10.0.1.1", "2001:db8:1::1", "198.51.100.2"])),
        pools=[pool()],
        config=IPVS,
    )
    for i in (1, 2, 3):
        for port in (80, 443):
            spec = d.desired.services[VsKey(f"198.51.100.{i}", "TCP", port)]
            assert spec.reals == {Real("10.0.1.1", port): 100}
    refused = sorted((p.field, p.message) for p in d.problems if p.reason == "InvalidRealServer")
    assert refused == [
        ("endpoints[1]", "port 443: IPv6 endpoint behind an IPv4 VIP"),
        ("endpoints[1]", "port 80: IPv6 endpoint behind an IPv4 VIP"),
        ("endpoints[2]", "port 443: 198.51.100.2 is a VIP; a real server behind itself would loop"),
        ("endpoints[2]", "port 80: 198.51.100.2 is a VIP; a real server behind itself would loop"),
    ]


octets = st.integers(1, 254)


@settings(max_examples=150, deadline=None)
@given(
    good=st.lists(octets, min_size=1, max_size=6, unique=True),
    bad=st.lists(octets, min_size=1, max_size=4, unique=True),
)
def test_a_bad_vip_never_changes_the_good_ones(good: list[int], bad: list[int]) -> None:
    good_vips = [domain_vip(f"g{i}.example.com", f"198.51.100.{i}", gen=i) for i in good]
    bad_vips = [domain_vip(f"b{i}.example.com", f"203.0.113.{i}", gen=300 + i) for i in bad]
    eps = _backends(*envoy_pool(["10.0.1.1"]))
    alone = derive(good_vips, [], eps, [pool()], IPVS)
    mixed = derive(good_vips + bad_vips, [], eps, [pool()], IPVS)
    assert mixed.desired == alone.desired
    assert all(mixed.vips[f"203.0.113.{i}"].problem is not None for i in bad)


_OWNERS = [
    c.VipOwner(kind="domain", host="a.example.com"),
    c.VipOwner(kind="domain", host="b.example.com"),
    c.VipOwner(kind="service", namespace="team-a", service="web"),
    c.VipOwner(kind="service", namespace="team-b", service="web"),
]
_ADDRESSES = ["198.51.100.1", "198.51.100.2", "198.51.100.3", "203.0.113.5", "2001:db8::1"]
_assignment = st.builds(
    lambda owner, addresses, ports, key, gen: c.VipAssigned(
        generation=gen,
        owner=owner,
        addresses=addresses,
        pool="public",
        ports=[c.PortSpec(port=p) for p in ports],
        sharing_key=key,
        observed_generation=gen,
    ),
    st.sampled_from(_OWNERS),
    st.lists(st.sampled_from(_ADDRESSES), min_size=1, max_size=2),
    st.lists(st.sampled_from([80, 443, 8080]), min_size=1, max_size=3, unique=True),
    st.sampled_from([None, "k"]),
    st.integers(1, 6),
)
# Endpoints that are fine, of the other family, a VIP themselves, or drained.
_backend = st.builds(
    lambda ns, svc, port, addresses, terminating: endpoints(
        ns, svc, port, addresses, terminating=terminating
    ),
    st.sampled_from(["ingress-domain", "team-a"]),
    st.sampled_from(["envoy", "web"]),
    st.sampled_from([80, 443, 8080]),
    st.lists(
        st.sampled_from(["10.0.1.1", "10.0.1.2", "198.51.100.2", "2001:db8:1::1"]),
        max_size=3,
        unique=True,
    ),
    st.sampled_from([(), ("10.0.1.2",)]),
)
_pools = st.sampled_from(
    [
        [pool()],
        [pool(cidrs=("198.51.100.0/30",))],
        [pool(), c.PoolDesired(generation=2, pool="other", cidrs=["203.0.113.0/24"])],
    ]
)


def _parts(d: Derived, vip: str) -> tuple[object, ...]:
    """Everything of ``d`` that concerns the address ``vip``."""
    return (
        {k: v for k, v in d.desired.services.items() if k.vip == vip},
        vip in d.desired.addresses,
        vip in d.desired.released,
        d.vips.get(vip),
    )


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_an_incremental_derive_equals_one_from_scratch(data: st.DataObject) -> None:
    # Each step replaces or drops a few owners' assignments, and may change the endpoints, the
    # releases and the pools. The steps pick from one set of event objects (so that most are
    # reused, recognized by identity) and add new ones, some of equal content.
    assignments = data.draw(st.lists(_assignment, min_size=1, max_size=8))
    backends = data.draw(st.lists(_backend, min_size=1, max_size=6))
    deriver = Deriver()
    live: dict[tuple[str, ...], c.VipAssigned] = {}
    eps = _backends(*backends[:2])
    pools = [pool()]
    last: Derived | None = None
    for _ in range(data.draw(st.integers(1, 8))):
        assignments.extend(data.draw(st.lists(_assignment, max_size=2)))
        backends.extend(data.draw(st.lists(_backend, max_size=2)))
        changed: set[tuple[str, ...]] = set()
        for a in data.draw(st.lists(st.sampled_from(assignments), max_size=3)):
            live[a.key()] = a
            changed.add(a.key())
        for owner in data.draw(st.lists(st.sampled_from(_OWNERS), max_size=1)):
            live.pop(owner.key(), None)
            changed.add(owner.key())
        if data.draw(st.booleans()):
            eps = _backends(*data.draw(st.lists(st.sampled_from(backends), max_size=4)))
        released = [
            c.VipReleased(generation=9, owner=_OWNERS[0], addresses=[a])
            for a in data.draw(st.lists(st.sampled_from(_ADDRESSES), max_size=2))
        ]
        if data.draw(st.integers(0, 4)) == 0:
            pools = data.draw(_pools)
        told = None if data.draw(st.integers(0, 5)) == 0 else changed
        got = deriver.update(live, released, eps, pools, IPVS, changed=told)
        assert got == derive(list(live.values()), released, eps, pools, IPVS)
        if last is not None and got.changed is not None:
            # What the service plans and publishes for: every address whose part moved.
            for vip in _ADDRESSES:
                if _parts(got, vip) != _parts(last, vip):
                    assert vip in got.changed, vip
        last = got


def test_a_new_vip_derives_its_address_alone() -> None:
    deriver = Deriver()
    eps = _backends(*envoy_pool(["10.0.1.1"]))
    live = {
        v.key(): v
        for v in (domain_vip(f"d{i}.example.com", f"198.51.100.{i}", gen=i) for i in range(1, 50))
    }
    deriver.update(live, [], eps, [pool()], IPVS)
    assert deriver.recomputed == 49
    new = domain_vip("new.example.com", "198.51.100.60", gen=60)
    live[new.key()] = new
    derived = deriver.update(live, [], eps, [pool()], IPVS, changed=[new.key()])
    assert deriver.recomputed == 1
    assert derived.changed == {"198.51.100.60"}
    assert derived == derive(list(live.values()), [], eps, [pool()], IPVS)


def test_an_endpoint_that_becomes_a_vip_is_refused_behind_every_vip() -> None:
    # Nothing about the Envoy pool's event changed, yet one of its addresses is now a VIP.
    deriver = Deriver()
    eps = _backends(*envoy_pool(["10.0.1.1", "198.51.100.2"]))
    first = domain_vip("a.example.com", "198.51.100.1", gen=1)
    live = {first.key(): first}
    before = deriver.update(live, [], eps, [pool()], IPVS)
    assert (
        Real("198.51.100.2", 80) in before.desired.services[VsKey("198.51.100.1", "TCP", 80)].reals
    )
    db = service_vip("team-a", "db", "198.51.100.2", (5432,), gen=2)
    live[db.key()] = db
    after = deriver.update(live, [], eps, [pool()], IPVS, changed=[db.key()])
    assert after.desired.services[VsKey("198.51.100.1", "TCP", 80)].reals == {
        Real("10.0.1.1", 80): 100
    }
    assert after.changed is not None and "198.51.100.1" in after.changed
    assert after == derive(list(live.values()), [], eps, [pool()], IPVS)


def _golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert path.read_text() == text, (
        f"{name} differs from the golden file (UPDATE_GOLDEN=1 rewrites)"
    )


def test_golden_ipvs_plan() -> None:
    d = derive(config=IPVS, **scenario())  # type: ignore[arg-type]
    p = plan(d.desired, EMPTY_KERNEL, forward="tunnel", now=0.0)
    _golden("ipvs-plan.txt", "".join(describe(op) + "\n" for op in p.ops))
    assert plan(d.desired, apply_ops(EMPTY_KERNEL, p.ops), forward="tunnel", now=1.0).ops == []


def test_golden_nftables_ruleset() -> None:
    d = derive(config=NFT, **scenario())  # type: ignore[arg-type]
    p = plan(d.desired, EMPTY_KERNEL, forward="nat", now=0.0)
    _golden("nftables.nft", render_table("ingress_l4", apply_ops(EMPTY_KERNEL, p.ops).services))


def test_golden_nftables_change() -> None:
    """One endpoint leaves the Envoy pool: a drain of each domain service, elements only."""
    d = derive(config=NFT, **scenario())  # type: ignore[arg-type]
    p = plan(d.desired, EMPTY_KERNEL, forward="nat", now=0.0)
    before = apply_ops(EMPTY_KERNEL, p.ops)
    inputs = scenario()
    eps = dict(inputs["endpoints"])  # type: ignore[call-overload]
    eps.update(_backends(*envoy_pool(["10.0.1.1", "10.0.1.2"])))
    fewer = derive(config=NFT, **{**inputs, "endpoints": eps})  # type: ignore[arg-type]
    q = plan(fewer.desired, before, forward="nat", now=1.0)
    after = apply_ops(before, q.ops)
    script = render_changes("ingress_l4", before.services, after.services)
    _golden("nftables-change.nft", script)
    assert "5432" not in script  # the database Service did not change
    assert render_changes("ingress_l4", after.services, after.services) == ""

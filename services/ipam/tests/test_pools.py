"""VipPool validation, overlap resolution and selectors (pure)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ingress_events.catalogue import AddressRange, PoolDesired
from ingress_ipam.domain.pools import Pool, parse_pool, resolve_pools

pytestmark = pytest.mark.unit


def pool(name: str, gen: int = 1, **kw: object) -> PoolDesired:
    return PoolDesired(generation=gen, pool=name, **kw)  # type: ignore[arg-type]


def reasons(result: object) -> list[str]:
    assert not isinstance(result, Pool)
    return [p.reason for p in result]  # type: ignore[attr-defined]


def test_a_valid_pool_counts_its_addresses_minus_excludes() -> None:
    p = parse_pool(
        pool(
            "a",
            cidrs=["10.0.0.0/30"],
            ranges=[AddressRange(first="10.0.1.5", last="10.0.1.6")],
            exclude=["10.0.0.1"],
        )
    )
    assert isinstance(p, Pool)
    assert p.size() == 5 and p.size("IPv6") == 0
    assert p.contains("10.0.1.6") and not p.contains("10.0.0.1")


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({}, ["EmptyPool"]),
        ({"ranges": [AddressRange(first="10.0.0.9", last="10.0.0.1")]}, ["InvalidRange"]),
        ({"ranges": [AddressRange(first="10.0.0.1", last="fd00::1")]}, ["InvalidRange"]),
        ({"cidrs": ["10.0.0.0/24", "10.0.0.128/25"]}, ["InvalidRange"]),
        ({"cidrs": ["10.0.0.0/30"], "exclude": ["10.9.9.9"]}, ["ExcludeOutsidePool"]),
        ({"cidrs": ["fd00::/48"]}, ["PoolTooLarge"]),
        ({"cidrs": ["10.0.0.0/32"], "exclude": ["10.0.0.0"]}, ["EmptyPool"]),
        ({"cidrs": ["10.0.0.0/30"], "namespaces": ["Bad_NS"]}, ["InvalidNamespaceSelector"]),
    ],
)
def test_invalid_pools_name_the_reason(kw: dict[str, object], expected: list[str]) -> None:
    assert reasons(parse_pool(pool("p", **kw))) == expected


def test_overlap_keeps_the_pool_accepted_first_even_after_it_is_edited() -> None:
    a = pool("a", gen=5, cidrs=["10.0.0.0/24"])
    b = pool("b", gen=3, cidrs=["10.0.0.128/25"])
    fresh = resolve_pools([a, b])
    assert set(fresh.accepted) == {"b"} and fresh.rejected["a"][0].reason == "PoolOverlap"
    edited_b = pool("b", gen=9, cidrs=["10.0.0.0/25"])
    later = resolve_pools([a, edited_b], previously_accepted=frozenset({"b"}))
    assert set(later.accepted) == {"b"}
    assert "VipPool 'b'" in later.rejected["a"][0].message


def test_selectors() -> None:
    p = parse_pool(pool("z", cidrs=["10.0.0.0/30"], namespaces=["team-*"], zones=["example.com"]))
    assert isinstance(p, Pool)
    assert p.allows("team-a", "www.example.com")
    assert not p.allows("other", "www.example.com")
    assert not p.allows("team-a", "www.example.org")
    assert not p.allows("team-a", None), "a zone-limited pool never serves a Service"
    d = parse_pool(pool("d", cidrs=["10.0.1.0/30"], domains=["*.apps.example.com"]))
    assert isinstance(d, Pool)
    assert d.allows("any", "x.apps.example.com") and not d.allows("any", "a.b.apps.example.com")


nets = st.builds(
    lambda base, plen: ipaddress.ip_network((base << 8 & 0xFEFFFFFF, plen), strict=False),
    st.integers(0, 2**24 - 1),
    st.integers(24, 32),
)


@given(nets, st.integers(1, 40), st.integers(0, 10_000))
def test_scan_visits_every_usable_address_once(
    net: ipaddress.IPv4Network, gap: int, start: int
) -> None:
    # Two blocks with a gap between them and one excluded address: the scan wraps across both.
    after = int(net.broadcast_address) + gap
    extra = AddressRange(
        first=str(ipaddress.IPv4Address(after)), last=str(ipaddress.IPv4Address(after + 3))
    )
    desired = pool("s", cidrs=[str(net)], ranges=[extra], exclude=[str(net.network_address)])
    p = parse_pool(desired)
    assert isinstance(p, Pool)
    seen = list(p.scan("IPv4", start))
    assert len(seen) == len(set(seen)) == p.size("IPv4")
    assert all(p.contains(a) for a in seen)


@given(st.lists(nets, min_size=2, max_size=6))
def test_accepted_pools_never_overlap(cidrs: list[ipaddress.IPv4Network]) -> None:
    defs = [pool(f"p{i}", gen=i + 1, cidrs=[str(n)]) for i, n in enumerate(cidrs)]
    verdict = resolve_pools(defs)
    accepted = [n for i, n in enumerate(cidrs) if f"p{i}" in verdict.accepted]
    for i, x in enumerate(accepted):
        for y in accepted[i + 1 :]:
            assert not x.overlaps(y)
    assert set(verdict.accepted) | set(verdict.rejected) == {d.pool for d in defs}

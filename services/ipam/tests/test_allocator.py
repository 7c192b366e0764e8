"""The pure allocator, and replicas with stale views interleaved over one compare-and-set store."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ingress_events.catalogue import PoolDesired
from ingress_ipam.adapters.store import InMemoryAllocationStore, Snapshot
from ingress_ipam.domain.allocator import compatible, plan
from ingress_ipam.domain.model import (
    DOMAIN_PORTS,
    AddressRecord,
    Assign,
    Reject,
    Request,
    family_of,
)
from ingress_ipam.domain.pools import Pool, parse_pool
from ingress_ipam.engine import Allocator, Held

pytestmark = pytest.mark.unit


def mkpool(name: str = "p", cidrs: tuple[str, ...] = ("10.0.0.0/29",), **kw: object) -> Pool:
    p = parse_pool(PoolDesired(generation=1, pool=name, cidrs=list(cidrs), **kw))  # type: ignore[arg-type]
    assert isinstance(p, Pool)
    return p


def req(name: str, **kw: object) -> Request:
    base: dict[str, object] = {
        "owner": ("domain", f"{name}.example.com"),
        "namespace": "ns",
        "host": f"{name}.example.com",
        "families": ("IPv4",),
        "require_all_families": True,
        "ports": DOMAIN_PORTS,
    }
    base.update(kw)
    return Request(**base)  # type: ignore[arg-type]


def held(r: Request, address: str, pool: str = "p") -> AddressRecord:
    return AddressRecord(address, pool, (r.holder(),))


def test_a_held_address_is_kept_even_when_its_pool_shrank_away() -> None:
    r = req("a")
    rec = held(r, "10.9.9.9")
    d = plan(r, {"p": mkpool()}, {rec.address: rec}, [rec], now=0)
    assert isinstance(d, Assign) and d.addresses == ("10.9.9.9",) and not d.writes


def test_cooling_address_is_skipped_until_reusable() -> None:
    p = mkpool(cidrs=("10.0.0.0/32",))
    cooling = AddressRecord("10.0.0.0", "p", (), reusable_after=100.0)
    records = {cooling.address: cooling}
    early = plan(req("a"), {"p": p}, records, [], now=99.0)
    assert isinstance(early, Reject) and early.reason == "PoolExhausted"
    assert "1 cooling down" in early.message
    late = plan(req("a"), {"p": p}, records, [], now=100.0)
    assert isinstance(late, Assign) and late.picks[0].mode == "reclaim"


def test_requested_address_rules() -> None:
    pools = {"p": mkpool(), "q": mkpool("q", ("10.0.1.0/30",), auto_assign=False)}
    other = req("b")
    taken = held(other, "10.0.0.3")
    records = {taken.address: taken}
    in_use = plan(req("a", addresses=("10.0.0.3",)), pools, records, [], now=0)
    assert isinstance(in_use, Reject) and in_use.reason == "AddressInUse"
    outside = plan(req("a", addresses=("192.0.2.1",)), pools, records, [], now=0)
    assert isinstance(outside, Reject) and outside.reason == "AddressNotInPool"
    # A pool without auto-assign still honours an explicit address.
    explicit = plan(req("a", addresses=("10.0.1.2",)), pools, records, [], now=0)
    assert isinstance(explicit, Assign) and explicit.pool == "q"


def test_sharing_needs_the_same_key_the_same_namespace_and_free_ports() -> None:
    svc = Request(
        owner=("service", "ns", "dns-tcp"),
        namespace="ns",
        host=None,
        families=("IPv4",),
        require_all_families=True,
        ports=frozenset({(53, "TCP")}),
        sharing_key="dns",
    )
    rec = held(svc, "10.0.0.5")
    udp = Request(
        **{**svc.__dict__, "owner": ("service", "ns", "dns-udp"), "ports": frozenset({(53, "UDP")})}
    )
    d = plan(udp, {"p": mkpool()}, {rec.address: rec}, [], [rec], now=0)
    assert isinstance(d, Assign) and d.picks[0].address == "10.0.0.5" and d.picks[0].mode == "share"
    clash = Request(**{**udp.__dict__, "ports": frozenset({(53, "TCP")})})
    assert not compatible(rec, clash.holder())
    foreign = Request(**{**udp.__dict__, "namespace": "other"})
    assert not compatible(rec, foreign.holder())


def test_prefer_dual_stack_falls_back_to_one_family() -> None:
    r = req("a", families=("IPv4", "IPv6"), require_all_families=False)
    d = plan(r, {"p": mkpool()}, {}, [], now=0)
    assert isinstance(d, Assign) and len(d.addresses) == 1
    strict = req("a", families=("IPv4", "IPv6"), require_all_families=True)
    rejected = plan(strict, {"p": mkpool()}, {}, [], now=0)
    assert isinstance(rejected, Reject) and rejected.reason == "FamilyUnavailable"


@given(st.lists(st.integers(0, 30), min_size=1, max_size=40), st.integers(0, 3))
def test_sequential_plans_never_give_one_address_to_two_owners(
    owners: list[int], size_bits: int
) -> None:
    pools = {"p": mkpool(cidrs=(f"10.0.0.0/{32 - size_bits}",))}
    records: dict[str, AddressRecord] = {}
    holders: dict[str, str] = {}
    for n in owners:
        r = req(f"o{n}")
        mine = [x for x in records.values() if x.held_by(r.owner)]
        d = plan(r, pools, records, mine, now=0)
        if isinstance(d, Reject):
            assert d.reason == "PoolExhausted" and len(records) == 2**size_bits
            continue
        for pick in d.picks:
            assert holders.setdefault(pick.address, r.owner[1]) == r.owner[1]
            records[pick.address] = held(r, pick.address)
        assert len(d.addresses) == 1


class YieldingStore(InMemoryAllocationStore):
    """Every store call yields to the event loop a random number of times first, so concurrent
    replicas interleave between reading their view, planning and each compare-and-set."""

    def __init__(self, rng: random.Random) -> None:
        super().__init__()
        self._rng = rng

    async def _pause(self) -> None:
        for _ in range(self._rng.randint(0, 3)):
            await asyncio.sleep(0)

    def __getattribute__(self, name: str):  # type: ignore[no-untyped-def]
        attr = super().__getattribute__(name)
        if name.startswith(("create_", "update_", "delete_", "get_")):

            async def wrapped(*a: object) -> object:
                await self._pause()
                return await attr(*a)

            return wrapped
        return attr


ops = st.lists(
    st.tuples(
        st.sampled_from(["ensure", "release", "sweep"]), st.integers(0, 2), st.integers(0, 9)
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=150, deadline=None)
@given(ops, st.randoms(use_true_random=False), st.sampled_from([0.0, 5.0]))
def test_interleaved_replicas_never_assign_one_vip_twice(
    steps: list[tuple[str, int, int]], rng: random.Random, cooldown: float
) -> None:
    async def run() -> None:
        store = YieldingStore(rng)
        now = [0.0]
        replicas = [Allocator(store, lambda: now[0], cooldown) for _ in range(3)]
        pools = {"p": mkpool(cidrs=("10.0.0.0/29",))}

        async def step(kind: str, replica: int, n: int) -> None:
            alloc = replicas[replica]
            owner = req(f"o{n}")
            if kind == "ensure":
                await alloc.ensure(owner, pools, 1)
            elif kind == "release":
                await alloc.release(owner.owner)
            else:
                now[0] += 3.0
                await alloc.sweep()

        # Each replica works through its share of the steps; replicas run concurrently.
        queues: dict[int, list[tuple[str, int, int]]] = defaultdict(list)
        for s in steps:
            queues[s[1]].append(s)

        async def worker(items: list[tuple[str, int, int]]) -> None:
            for s in items:
                await step(*s)

        await asyncio.gather(*(worker(q) for q in queues.values()))
        snapshot: Snapshot = await store.load()
        for record, _ in snapshot.addresses.values():
            assert len({h.owner for h in record.holders}) == len(record.holders) <= 1
        # Owner index and address records agree, one address per family per owner...
        for owner, (orec, _) in snapshot.owners.items():
            for a in orec.addresses:
                assert snapshot.addresses[a][0].held_by(owner)
        # ...and a fresh replica converges every owner to exactly one address, without a write.
        fresh = Allocator(store, lambda: now[0], cooldown)
        await fresh.load()
        results: dict[str, tuple[str, ...]] = {}
        for owner in list(snapshot.owners):
            r = req(owner[1].split(".")[0])
            out = await fresh.ensure(r, pools, 1)
            assert isinstance(out, Held)
            results[owner[1]] = out.addresses
        flat = [a for addrs in results.values() for a in addrs]
        assert len(flat) == len(set(flat))
        assert all(len({family_of(a) for a in v}) == len(v) == 1 for v in results.values())

    asyncio.run(run())


class GatedStore:
    """One replica's handle on a shared store: the methods named in ``gates`` announce that they
    were reached and then wait for their gate, so a test can place one replica's writes exactly
    between another's."""

    def __init__(self, inner: InMemoryAllocationStore, gates: dict[str, asyncio.Event]) -> None:
        self._inner = inner
        self._gates = gates
        self.reached = {name: asyncio.Event() for name in gates}

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        attr = getattr(self._inner, name)
        if name not in self._gates:
            return attr

        async def gated(*a: object) -> object:
            self.reached[name].set()
            await self._gates[name].wait()
            return await attr(*a)

        return gated


def test_release_racing_an_allocation_of_the_same_owner_leaves_no_stale_index() -> None:
    """Replica B learned of A's fresh address before A indexed it, reads the (still absent)
    index, and releases the address only after A wrote the index and re-read the address. The
    release must still find and remove that index: no index may name an address its owner
    lacks. (Fails when release does not read the index after releasing the addresses.)"""

    async def run() -> None:
        inner = InMemoryAllocationStore()
        a_may_index, b_may_release = asyncio.Event(), asyncio.Event()
        a_store = GatedStore(inner, {"create_owner": a_may_index})
        b_store = GatedStore(inner, {"update_address": b_may_release})
        a = Allocator(a_store, lambda: 100.0, 30.0)
        b = Allocator(b_store, lambda: 100.0, 30.0)
        pools = {"p": mkpool()}
        r = req("o", addresses=("10.0.0.1",))
        ensuring = asyncio.create_task(a.ensure(r, pools, 1))
        await a_store.reached["create_owner"].wait()  # A holds the address, no index yet
        await b.load()  # B's view: the address, held by o
        releasing = asyncio.create_task(b.release(r.owner))
        await b_store.reached["update_address"].wait()  # B read the absent index
        a_may_index.set()
        assert isinstance(await ensuring, Held)  # A indexed and re-read: nothing changed yet
        b_may_release.set()
        released = await releasing
        assert released.addresses == ("10.0.0.1",) and released.reusable_after == 130.0
        snapshot = await inner.load()
        for owner, (orec, _) in snapshot.owners.items():
            for address in orec.addresses:
                assert snapshot.addresses[address][0].held_by(owner), (owner, address)
        assert r.owner not in snapshot.owners
        assert snapshot.addresses["10.0.0.1"][0].cooling

    asyncio.run(run())

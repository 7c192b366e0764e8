"""The allocator against a real nats-server: several replicas, each with its own connection and
its own view, racing for the same addresses through JetStream KV compare-and-set."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from ingress_events.bus import Bus, BusSettings, KeyExists
from ingress_events.catalogue import PoolDesired
from ingress_ipam import cli
from ingress_ipam.adapters.store import NatsAllocationStore
from ingress_ipam.domain.model import DOMAIN_PORTS, AddressRecord, Request
from ingress_ipam.domain.pools import Pool, parse_pool
from ingress_ipam.engine import Allocator, Held

pytestmark = pytest.mark.integration

GOLDEN = Path(__file__).parent / "golden"


def req(n: int, **kw: object) -> Request:
    host = f"o{n}.example.com"
    return Request(
        owner=("domain", host),
        namespace="ns",
        host=host,
        families=("IPv4",),
        require_all_families=True,
        ports=DOMAIN_PORTS,
        **kw,  # type: ignore[arg-type]
    )


def pools(cidr: str) -> dict[str, Pool]:
    p = parse_pool(PoolDesired(generation=1, pool="p", cidrs=[cidr]))
    assert isinstance(p, Pool)
    return {"p": p}


async def replicas(settings: BusSettings, n: int, clock: list[float], cooldown: float = 0.0):  # type: ignore[no-untyped-def]
    buses = [await Bus.connect(settings) for _ in range(n)]
    allocs = []
    for bus in buses:
        store = NatsAllocationStore(await bus.kv("ipam-it"))
        alloc = Allocator(store, lambda: clock[0], cooldown)
        await alloc.load()
        allocs.append(alloc)
    return buses, allocs


async def test_three_replicas_racing_on_a_small_pool_never_share_an_address(
    bus_settings: BusSettings,
) -> None:
    clock = [1000.0]
    buses, allocs = await replicas(bus_settings, 3, clock)
    try:
        space = pools("10.1.0.0/26")  # 64 addresses for 60 owners: heavy contention

        # Every replica is told about every owner, concurrently: the worst case.
        async def work(i: int) -> list[Held]:
            out = []
            for n in range(60):
                res = await allocs[i].ensure(req((n * 7 + i * 13) % 60), space, 1)
                assert isinstance(res, Held)
                out.append(res)
            return out

        await asyncio.gather(*(work(i) for i in range(3)))
        snap = await NatsAllocationStore(await buses[0].kv("ipam-it")).load()
        owners = [h.owner for rec, _ in snap.addresses.values() for h in rec.holders]
        assert len(owners) == len(set(owners)) == 60, "each owner holds exactly one record"
        assert sum(a.conflicts for a in allocs) > 0, "the replicas really raced"
        for owner, (orec, _) in snap.owners.items():
            assert snap.addresses[orec.addresses[0]][0].held_by(owner)
    finally:
        for b in buses:
            await b.close()


async def test_create_after_delete_race_has_exactly_one_winner(bus_settings: BusSettings) -> None:
    clock = [1000.0]
    buses, allocs = await replicas(bus_settings, 4, clock, cooldown=30.0)
    try:
        space = pools("10.2.0.0/30")
        first = await allocs[0].ensure(req(0, addresses=("10.2.0.1",)), space, 1)
        assert isinstance(first, Held)
        released = await allocs[0].release(("domain", "o0.example.com"))
        assert released.reusable_after == 1030.0
        clock[0] = 1031.0
        assert await allocs[0].sweep() == 1  # the key is now a JetStream delete marker
        # Raw level: five connections create the deleted key at once; exactly one wins.
        stores = [NatsAllocationStore(await b.kv("ipam-it")) for b in buses]
        stores.append(NatsAllocationStore(await buses[0].kv("ipam-it")))
        record = AddressRecord("10.2.0.1", "p")
        results = await asyncio.gather(
            *(s.create_address(record) for s in stores), return_exceptions=True
        )
        assert sum(isinstance(r, int) for r in results) == 1
        assert sum(isinstance(r, KeyExists) for r in results) == len(stores) - 1
        # Engine level: the address is released and swept again, then three replicas whose
        # views all still show it free ask for it for three different owners.
        winner = await stores[0].get_address("10.2.0.1")
        assert winner is not None
        await stores[0].delete_address("10.2.0.1", winner[1])
        for a in allocs[1:]:
            await a.load()
            a.records.pop("10.2.0.1", None)
        outcomes = await asyncio.gather(
            *(
                a.ensure(req(10 + i, addresses=("10.2.0.1",)), space, 1)
                for i, a in enumerate(allocs[1:])
            )
        )
        won = [o for o in outcomes if isinstance(o, Held)]
        assert len(won) == 1
        assert {o.reason for o in outcomes if not isinstance(o, Held)} == {"AddressInUse"}
    finally:
        for b in buses:
            await b.close()


async def test_allocations_cli_matches_golden(
    bus_settings: BusSettings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clock = [1_800_000_000.0]
    buses, [alloc] = await replicas(bus_settings, 1, clock, cooldown=600.0)
    try:
        space = pools("10.3.0.0/29")
        for n, addr in ((1, "10.3.0.2"), (2, "10.3.0.5"), (3, "10.3.0.3")):
            assert isinstance(await alloc.ensure(req(n, addresses=(addr,)), space, 1), Held)
        await alloc.release(("domain", "o3.example.com"))
    finally:
        for b in buses:
            await b.close()
    monkeypatch.setenv("IPAM_NATS_URL", bus_settings.servers[0])
    monkeypatch.setenv("IPAM_SUBJECT_ROOT", bus_settings.subjects.root)
    monkeypatch.setenv("IPAM_KV_BUCKET", "ipam-it")
    monkeypatch.setattr(cli.time, "time", lambda: clock[0])
    assert await asyncio.to_thread(cli.main, []) == 0  # the CLI runs its own event loop
    out = capsys.readouterr().out
    golden = GOLDEN / "allocations.txt"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(out)
    assert out == golden.read_text()

"""bench/ipam: 10,000 VIP allocations from a /16 by 3 concurrent allocators through a real
nats-server, then the state rebuilt from JetStream KV after the server and the allocator restart.

Each allocator is a replica as in production: its own NATS connection, its own cached view, every
address taken by a KV create (compare-and-set on absence) and recorded in the owner index. Each
runs ``--concurrency`` owners at once (different owners, as the service's consumers do).

    .venv/bin/python bench/ipam/run.py [--allocations 10000] [--replicas 3] [--concurrency 16]

Prints the figures and writes bench/ipam/report.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import time
from pathlib import Path

from ingress_events.bus import Bus, BusSettings
from ingress_events.catalogue import PoolDesired
from ingress_ipam.adapters.store import NatsAllocationStore
from ingress_ipam.domain.model import DOMAIN_PORTS, Request
from ingress_ipam.domain.pools import Pool, parse_pool
from ingress_ipam.engine import Allocator, Held
from ingress_testkit.nats_server import NatsServer, find_nats_server

REPORT = Path(__file__).with_name("report.md")
BUCKET = "bench-ipam"


def request(i: int) -> Request:
    host = f"d{i}.bench.example.com"
    return Request(
        owner=("domain", host),
        namespace="bench",
        host=host,
        families=("IPv4",),
        require_all_families=True,
        ports=DOMAIN_PORTS,
    )


async def allocate(url: str, n: int, replicas: int, concurrency: int) -> tuple[float, int]:
    pool = parse_pool(PoolDesired(generation=1, pool="bench", cidrs=["10.64.0.0/16"]))
    assert isinstance(pool, Pool)
    pools = {"bench": pool}
    buses = [await Bus.connect(BusSettings(servers=[url])) for _ in range(replicas)]
    allocators = []
    for bus in buses:
        alloc = Allocator(NatsAllocationStore(await bus.kv(BUCKET)), time.time, 600.0)
        await alloc.load()
        allocators.append(alloc)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)

    async def worker(alloc: Allocator) -> None:
        while not queue.empty():
            i = queue.get_nowait()
            out = await alloc.ensure(request(i), pools, 1)
            assert isinstance(out, Held), out

    start = time.perf_counter()
    await asyncio.gather(*(worker(a) for a in allocators for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    conflicts = sum(a.conflicts for a in allocators)
    for bus in buses:
        await bus.close()
    return elapsed, conflicts


async def rebuild(url: str) -> tuple[float, int, int]:
    start = time.perf_counter()
    bus = await Bus.connect(BusSettings(servers=[url]))
    alloc = Allocator(NatsAllocationStore(await bus.kv(BUCKET)), time.time, 600.0)
    await alloc.load()
    elapsed = time.perf_counter() - start
    await bus.close()
    return elapsed, len(alloc.records), len(alloc.owners)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--allocations", type=int, default=10_000)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    binary = find_nats_server()
    assert binary, "nats-server is not installed (scripts/setup)"
    server = NatsServer(binary).start()
    try:
        elapsed, conflicts = await allocate(
            server.url, args.allocations, args.replicas, args.concurrency
        )
        rate = args.allocations / elapsed
        server.restart()
        rebuild_s, records, owners = await rebuild(server.url)
        # Uniqueness, checked on what the store holds, not on what the allocators believed.
        bus = await Bus.connect(BusSettings(servers=[server.url]))
        snap = await NatsAllocationStore(await bus.kv(BUCKET)).load()
        await bus.close()
        holders = [h.owner for rec, _ in snap.addresses.values() for h in rec.holders]
        index = [rec.addresses[0] for rec, _ in snap.owners.values()]
        unique = (
            len(holders) == len(set(holders)) == args.allocations
            and len(index) == len(set(index)) == args.allocations
            and all(
                snap.addresses[a][0].held_by(o) for o, a in zip(snap.owners, index, strict=True)
            )
        )
    finally:
        server.cleanup()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    lines = [
        f"machine load average (1, 5, 15 min) at the end: {load} on {os.cpu_count()} cores",
        f"allocations: {args.allocations} from 10.64.0.0/16 by {args.replicas} allocators "
        f"x {args.concurrency} in flight",
        f"allocations/s: {rate:,.0f} (target >= 2,000) in {elapsed:.2f} s, "
        f"{conflicts} compare-and-set conflicts retried",
        f"all unique (address records and owner index): {unique}",
        f"rebuild after nats-server restart: {rebuild_s:.2f} s for {records} address records + "
        f"{owners} owner records (target <= 2 s)",
    ]
    print("\n".join(lines))
    REPORT.write_text(
        "# bench/ipam\n\n"
        "`.venv/bin/python bench/ipam/run.py` on "
        f"{platform.node() and 'this machine'} ({platform.machine()}, Python "
        f"{platform.python_version()}), one local nats-server (file storage).\n\n"
        + "\n".join(f"- {line}" for line in lines)
        + "\n\nEach allocation is one KV create of the address key (compare-and-set on absence)"
        " plus one KV create of the owner index key, acknowledged by JetStream, then one read"
        " of the address back (a release by another replica in between is noticed) before the"
        " allocation counts. The rebuild reads the whole bucket (watch of all keys) into a fresh"
        " allocator after the server restarted from its store.\n"
    )
    if not unique:
        raise SystemExit("an address was handed out twice")


if __name__ == "__main__":
    asyncio.run(main())

"""bench/ipam: 10,000 VIP allocations from a /16 by 3 concurrent allocators through a real
nats-server, then the state rebuilt from JetStream KV after the server and the allocator restart.

Each allocator is a replica as in production: its own process (``--in-process``: all in this
one), its own NATS connection, its own cached view, every address taken by a KV create
(compare-and-set on absence) and recorded in the owner index. Each runs ``--concurrency`` owners
at once (different owners, as the service's consumers do).

The machine is shared, so each phase has a baseline measured on the same nats-server in the same
run, and the figures are also given as a ratio to it:

* allocations: raw ``KvStore.create`` of as many fresh keys by as many connections with as many
  in flight (an allocation is at least two such creates and one read);
* rebuild: the bare bucket read (``KvStore.entries()``, no decoding) of the same bucket.

    .venv/bin/python bench/ipam/run.py [--allocations 10000] [--replicas 3] [--concurrency 16]
                                       [--in-process] [--direct-get] [--no-report]

``--direct-get`` creates the bucket with ``allow_direct`` before the allocators open it (what
``Bus.kv`` would do if it passed ``direct=True``): reads then use JetStream's direct get.

Prints the figures and writes bench/ipam/report.md (the figures section; the rest of the report
is kept).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import platform
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ingress_events.bus import Bus, BusSettings
from ingress_events.catalogue import PoolDesired
from ingress_ipam.adapters.store import NatsAllocationStore, encode_address
from ingress_ipam.domain.model import DOMAIN_PORTS, AddressRecord, Request
from ingress_ipam.domain.pools import Pool, parse_pool
from ingress_ipam.engine import Allocator, Held
from ingress_testkit.nats_server import NatsServer, find_nats_server

REPORT = Path(__file__).with_name("report.md")
BUCKET = "bench-ipam"
FIGURES_START = "<!-- figures: written by bench/ipam/run.py -->"
FIGURES_END = "<!-- end of figures -->"


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


def load_average() -> str:
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


@dataclass(frozen=True)
class Phase:
    kind: str  # "creates" (the baseline) or "allocations"
    url: str
    bucket: str
    n: int
    replicas: int
    concurrency: int


@dataclass(frozen=True)
class Share:
    """What one replica did: wall-clock bounds (time.time, comparable across processes), its
    compare-and-set conflicts and the CPU time of its process."""

    start: float
    end: float
    conflicts: int
    cpu: float


async def replica(phase: Phase, index: int, ready: Callable[[], Awaitable[None]]) -> Share:
    """One replica's share of the phase: items index, index + replicas, ... with ``concurrency``
    in flight. ``ready`` returns when every replica has connected and loaded its view."""
    bus = await Bus.connect(BusSettings(servers=[phase.url]))
    try:
        items = iter(range(index, phase.n, phase.replicas))
        if phase.kind == "creates":
            kv = await bus.kv(phase.bucket)
            holder = request(0).holder()

            async def work() -> None:
                for k in items:
                    address = f"10.{64 + k // 65536}.{k // 256 % 256}.{k % 256}"
                    value = encode_address(AddressRecord(address, "bench", (holder,)))
                    await kv.create(f"addr.{address}", value)

        else:
            pool = parse_pool(PoolDesired(generation=1, pool="bench", cidrs=["10.64.0.0/16"]))
            assert isinstance(pool, Pool)
            pools = {"bench": pool}
            alloc = Allocator(NatsAllocationStore(await bus.kv(phase.bucket)), time.time, 600.0)
            await alloc.load()

            async def work() -> None:
                for i in items:
                    out = await alloc.ensure(request(i), pools, 1)
                    assert isinstance(out, Held), out

        await ready()
        cpu, start = time.process_time(), time.time()
        await asyncio.gather(*(work() for _ in range(phase.concurrency)))
        end = time.time()
        conflicts = alloc.conflicts if phase.kind == "allocations" else 0
        return Share(start, end, conflicts, time.process_time() - cpu)
    finally:
        await bus.close()


def _process_main(phase: Phase, index: int, barrier: Any, results: Any) -> None:
    async def ready() -> None:
        await asyncio.to_thread(barrier.wait)

    results.put(asyncio.run(replica(phase, index, ready)))


async def run_phase(phase: Phase, processes: bool) -> list[Share]:
    """Every replica in its own process (as in production), or all in this one."""
    if not processes:
        gate = asyncio.Barrier(phase.replicas)

        async def ready() -> None:
            await gate.wait()

        shares = await asyncio.gather(*(replica(phase, i, ready) for i in range(phase.replicas)))
        # Each replica measured the CPU of the whole process over the same interval.
        return [replace(s, cpu=s.cpu / phase.replicas) for s in shares]
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(phase.replicas), ctx.Queue()
    procs = [
        ctx.Process(target=_process_main, args=(phase, i, barrier, results))
        for i in range(phase.replicas)
    ]
    for proc in procs:
        proc.start()
    try:
        shares = [await asyncio.to_thread(results.get, True, 600) for _ in procs]
    finally:
        for proc in procs:
            proc.join(30)
    return shares


def rate_of(n: int, shares: list[Share]) -> tuple[float, float]:
    elapsed = max(s.end for s in shares) - min(s.start for s in shares)
    return n / elapsed, elapsed


async def rebuild(url: str) -> tuple[float, int, int]:
    start = time.perf_counter()
    bus = await Bus.connect(BusSettings(servers=[url]))
    alloc = Allocator(NatsAllocationStore(await bus.kv(BUCKET)), time.time, 600.0)
    await alloc.load()
    elapsed = time.perf_counter() - start
    await bus.close()
    return elapsed, len(alloc.records), len(alloc.owners)


async def bare_read(url: str) -> tuple[float, int]:
    start = time.perf_counter()
    bus = await Bus.connect(BusSettings(servers=[url]))
    entries = await (await bus.kv(BUCKET)).entries()
    elapsed = time.perf_counter() - start
    await bus.close()
    return elapsed, len(entries)


async def unique_in_store(url: str, n: int) -> bool:
    """Uniqueness, checked on what the store holds, not on what the allocators believed."""
    bus = await Bus.connect(BusSettings(servers=[url]))
    snap = await NatsAllocationStore(await bus.kv(BUCKET)).load()
    await bus.close()
    holders = [h.owner for rec, _ in snap.addresses.values() for h in rec.holders]
    index = [rec.addresses[0] for rec, _ in snap.owners.values()]
    return (
        len(holders) == len(set(holders)) == n
        and len(index) == len(set(index)) == n
        and all(snap.addresses[a][0].held_by(o) for o, a in zip(snap.owners, index, strict=True))
    )


async def create_direct_bucket(url: str) -> None:
    bus = await Bus.connect(BusSettings(servers=[url]))
    await bus.nats.jetstream().create_key_value(bucket=BUCKET, history=1, direct=True)
    await bus.close()


@dataclass
class Figures:
    load_start: str
    load_end: str
    baseline_rates: tuple[float, float]
    baseline_cpu: float
    elapsed: float
    conflicts: int
    alloc_cpu: float
    rebuild_s: float
    records: int
    owners: int
    bare_s: float
    bare_entries: int
    unique: bool

    @property
    def baseline_rate(self) -> float:
        return sum(self.baseline_rates) / 2


async def measure(args: argparse.Namespace) -> Figures:
    binary = find_nats_server()
    assert binary, "nats-server is not installed (scripts/setup)"
    n, replicas, concurrency = args.allocations, args.replicas, args.concurrency
    load_start = load_average()
    server = NatsServer(binary).start()
    try:
        if args.direct_get:
            await create_direct_bucket(server.url)
        # The baseline before and after the allocations: the load may change in between.
        before = await run_phase(
            Phase("creates", server.url, "bench-baseline-1", n // 2, replicas, concurrency),
            args.processes,
        )
        shares = await run_phase(
            Phase("allocations", server.url, BUCKET, n, replicas, concurrency), args.processes
        )
        after = await run_phase(
            Phase("creates", server.url, "bench-baseline-2", n // 2, replicas, concurrency),
            args.processes,
        )
        server.restart()
        rebuild_s, records, owners = await rebuild(server.url)
        bare_s, bare_entries = await bare_read(server.url)
        unique = await unique_in_store(server.url, n)
    finally:
        server.cleanup()
    _, elapsed = rate_of(n, shares)
    return Figures(
        load_start=load_start,
        load_end=load_average(),
        baseline_rates=(rate_of(n // 2, before)[0], rate_of(n // 2, after)[0]),
        baseline_cpu=sum(s.cpu for s in before + after) / (2 * (n // 2)),
        elapsed=elapsed,
        conflicts=sum(s.conflicts for s in shares),
        alloc_cpu=sum(s.cpu for s in shares) / n,
        rebuild_s=rebuild_s,
        records=records,
        owners=owners,
        bare_s=bare_s,
        bare_entries=bare_entries,
        unique=unique,
    )


def lines_for(args: argparse.Namespace, f: Figures) -> list[str]:
    rate = args.allocations / f.elapsed
    reads = "direct get" if args.direct_get else "STREAM.MSG.GET (Bus.kv today)"
    where = "each in its own process" if args.processes else "all in one process"
    b1, b2 = f.baseline_rates
    return [
        f"date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; load average (1, 5, 15 min) "
        f"before: {f.load_start}, after: {f.load_end} on {os.cpu_count()} cores",
        f"allocations: {args.allocations} from 10.64.0.0/16 by {args.replicas} allocators "
        f"({where}) x {args.concurrency} in flight, reads by {reads}",
        f"baseline, raw KV creates on the same server and connections: {b1:,.0f}/s before, "
        f"{b2:,.0f}/s after the allocations; client CPU {1000 * f.baseline_cpu:.3f} ms per create",
        f"allocations/s: {rate:,.0f} (target >= 2,000: "
        f"{'met' if rate >= 2000 else 'not met'}) in {f.elapsed:.2f} s, "
        f"{f.conflicts} compare-and-set conflicts retried; ratio to raw creates: "
        f"{rate / f.baseline_rate:.2f}; client CPU {1000 * f.alloc_cpu:.3f} ms per allocation "
        f"({f.alloc_cpu / f.baseline_cpu:.1f} creates' worth)",
        f"all unique (address records and owner index): {f.unique}",
        f"rebuild after nats-server restart: {f.rebuild_s:.2f} s for {f.records} address records"
        f" + {f.owners} owner records (target <= 2 s: "
        f"{'met' if f.rebuild_s <= 2 else 'not met'}); bare bucket read of the same "
        f"{f.bare_entries} keys: {f.bare_s:.2f} s; ratio: {f.rebuild_s / f.bare_s:.2f}",
    ]


def write_report(command: str, lines: list[str]) -> None:
    figures = (
        f"{FIGURES_START}\n`{command}` on this machine ({platform.machine()}, Python "
        f"{platform.python_version()}), one local nats-server (file storage):\n\n"
        + "\n".join(f"- {line}" for line in lines)
        + f"\n{FIGURES_END}"
    )
    text = REPORT.read_text() if REPORT.exists() else "# bench/ipam\n\n"
    if FIGURES_START in text and FIGURES_END in text:
        head, rest = text.split(FIGURES_START, 1)
        tail = rest.split(FIGURES_END, 1)[1]
        text = head + figures + tail
    else:
        text = text.rstrip("\n") + "\n\n" + figures + "\n"
    REPORT.write_text(text)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--allocations", type=int, default=10_000)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--direct-get", action="store_true")
    parser.add_argument(
        "--in-process", dest="processes", action="store_false", help="all replicas in one process"
    )
    parser.add_argument("--no-report", action="store_true")
    args = parser.parse_args()
    figures = await measure(args)
    lines = lines_for(args, figures)
    print("\n".join(lines))
    if not args.no_report:
        flags = " --direct-get" if args.direct_get else ""
        flags += "" if args.processes else " --in-process"
        if (args.allocations, args.replicas, args.concurrency) != (10_000, 3, 16):
            flags += (
                f" --allocations {args.allocations} --replicas {args.replicas}"
                f" --concurrency {args.concurrency}"
            )
        write_report(f".venv/bin/python bench/ipam/run.py{flags}", lines)
    if not figures.unique:
        raise SystemExit("an address was handed out twice")


if __name__ == "__main__":
    asyncio.run(main())

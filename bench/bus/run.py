"""bench/bus: publish -> consume through a real nats-server on loopback.

Measures, in one run against one server:
  * baseline: one-at-a-time ``js.publish`` (nats-py, awaiting each ack), events/s;
  * the bus's batched path: ``Bus.publish_many`` -> a durable ``Bus.consume`` consumer, end to end
    (first publish to last event handled and acked), events/s, and its ratio to the baseline;
  * the latency of a single event at idle: ``Bus.publish`` -> handler entered, p50 / p99;
  * replacing a key's event (streams keep one message per subject) after the server sat idle,
    against replacing the same keys again at once: ``Bus.publish`` -> ack. nats-server's file
    store drops a message block's cache after a few seconds idle (5 s in 2.9), and removing a
    key's previous message then loads its block first.

    .venv/bin/python bench/bus/run.py [--events 50000] [--baseline 5000] [--samples 1000]

Prints the figures and writes bench/bus/report.md.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import subprocess
import time
from pathlib import Path

from ingress_events import catalogue as c
from ingress_events.bus import Bus, BusSettings, ConsumerSpec
from ingress_events.envelope import Envelope, encode
from ingress_testkit.nats_server import NatsServer, find_nats_server

REPORT = Path(__file__).with_name("report.md")


def _event(i: int) -> c.Event:
    return c.BackendEndpoints(
        generation=1,
        namespace="bench",
        service=f"svc-{i}",
        port=80,
        endpoints=[
            c.Endpoint(address=f"10.{i % 250}.{(i // 250) % 250}.{k + 1}", port=8080, ready=True)
            for k in range(3)
        ],
    )


def _server_version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    return out.stdout.strip().rpartition(" ")[2] or "?"


async def baseline(bus: Bus, n: int) -> float:
    js = bus.nats.jetstream()
    events = [_event(i) for i in range(n)]
    encoded = [
        (bus.subjects.for_event(e), *encode(e, nats_subject="x", source="//bench")) for e in events
    ]
    start = time.perf_counter()
    for subject, headers, body in encoded:
        await js.publish(subject, body, headers={**headers, "Nats-Msg-Id": f"base-{subject}"})
    return n / (time.perf_counter() - start)


async def end_to_end(bus: Bus, n: int) -> tuple[float, float]:
    events = [_event(i) for i in range(n)]
    done = asyncio.Event()
    count = 0

    async def handle(env: Envelope[c.Event]) -> None:
        nonlocal count
        count += 1
        if count == n:
            done.set()

    consumer = await bus.consume(
        ConsumerSpec(
            "bench-e2e", c.Family.BACKEND, deliver_from="new", batch=1000, fetch_timeout_seconds=0.5
        ),
        handle,
    )
    start = time.perf_counter()
    for i in range(0, n, 5000):
        await bus.publish_many(events[i : i + 5000])
    published = time.perf_counter()
    await asyncio.wait_for(done.wait(), timeout=300)
    total = time.perf_counter() - start
    await consumer.stop()
    return n / (published - start), n / total


async def latency(bus: Bus, samples: int) -> tuple[float, float]:
    received: asyncio.Queue[float] = asyncio.Queue()

    async def handle(env: Envelope[c.Event]) -> None:
        received.put_nowait(time.perf_counter())

    consumer = await bus.consume(
        ConsumerSpec(
            "bench-latency", c.Family.L7, deliver_from="new", batch=10, fetch_timeout_seconds=5
        ),
        handle,
    )
    await asyncio.sleep(0.2)
    out = []
    for i in range(samples):
        sent = time.perf_counter()
        await bus.publish(c.L7Removed(generation=i + 1, host="bench.example.com"))
        arrived = await asyncio.wait_for(received.get(), timeout=10)
        out.append((arrived - sent) * 1000)
        await asyncio.sleep(0.002)  # idle between events
    await consumer.stop()
    out.sort()
    return statistics.median(out), out[int(len(out) * 0.99) - 1]


async def replacing(
    bus: Bus, stored: int, keys: int, idle: float
) -> tuple[list[float], list[float]]:
    """Publish -> ack of new events for ``keys`` existing keys (of the ``stored`` the end-to-end
    run left), first after ``idle`` seconds of quiet, then for the same keys again at once."""
    picked = [(k * 7919) % stored for k in range(keys)]

    async def one_round(generation: int) -> list[float]:
        out = []
        for i in picked:
            event = _event(i).model_copy(update={"generation": generation})
            sent = time.perf_counter()
            await bus.publish(event)
            out.append((time.perf_counter() - sent) * 1000)
            await asyncio.sleep(0.02)
        return out

    await asyncio.sleep(idle)
    return await one_round(2), await one_round(3)


def _summary(values: list[float]) -> str:
    ordered = sorted(values)
    slow = sum(v > 5 for v in values)
    return f"p50 {statistics.median(ordered):.2f} ms, max {ordered[-1]:.2f} ms, {slow} over 5 ms"


async def main(events: int, base_n: int, samples: int) -> None:
    binary = find_nats_server()
    assert binary, "nats-server not installed: run scripts/setup"
    server = NatsServer(binary).start()
    try:
        bus = await Bus.connect(BusSettings(servers=[server.url]))
        await bus.ensure_streams()
        base = await baseline(bus, base_n)
        publish_rate, e2e_rate = await end_to_end(bus, events)
        p50, p99 = await latency(bus, samples)
        cold, warm = await replacing(bus, events, 40, idle=6.0)
        await bus.close()
    finally:
        server.cleanup()
    lines = [
        "# bench/bus",
        "",
        f"Command: `.venv/bin/python bench/bus/run.py --events {events} --baseline {base_n} "
        f"--samples {samples}`",
        f"Machine: {platform.machine()}, {platform.python_implementation()} "
        f"{platform.python_version()}, nats-server {_server_version(binary)} on loopback with "
        "file storage, one run.",
        "",
        "| measure | result | target |",
        "|---|---|---|",
        f"| baseline: one-at-a-time `js.publish` | {base:,.0f} events/s | |",
        f"| `Bus.publish_many` (pipelined, every ack awaited) | {publish_rate:,.0f} events/s "
        f"({publish_rate / base:.1f}x baseline) | |",
        f"| end to end: publish_many -> durable consumer, handled and acked | "
        f"{e2e_rate:,.0f} events/s ({e2e_rate / base:.1f}x baseline) | >= 20,000 events/s |",
        f"| single event at idle, publish -> handler, p50 | {p50:.2f} ms | |",
        f"| single event at idle, publish -> handler, p99 | {p99:.2f} ms | < 5 ms |",
        f"| 40 keys' events replaced after 6 s idle, publish -> ack | {_summary(cold)} | |",
        f"| the same 40 keys replaced again at once | {_summary(warm)} | |",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    REPORT.write_text(text)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--baseline", type=int, default=5_000)
    parser.add_argument("--samples", type=int, default=1_000)
    args = parser.parse_args()
    asyncio.run(main(args.events, args.baseline, args.samples))

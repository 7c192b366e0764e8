"""The bus against a real nats-server (one per test, from ingress_testkit)."""

from __future__ import annotations

import asyncio

import pytest
from ingress_events import catalogue as c
from ingress_events.bus import (
    Bus,
    BusSettings,
    ConsumerSpec,
    KeyExists,
    PermanentError,
    ReplayIncomplete,
    RevisionMismatch,
    StreamSettings,
)
from ingress_events.envelope import Envelope, encode
from ingress_events.examples import examples
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY

pytestmark = pytest.mark.integration

_EXPORTER = InMemorySpanExporter()
_PROVIDER = TracerProvider()
_PROVIDER.add_span_processor(SimpleSpanProcessor(_EXPORTER))
trace.set_tracer_provider(_PROVIDER)


def domain(generation: int, host: str = "shop.example.com") -> c.DomainDesired:
    return c.DomainDesired(
        generation=generation,
        host=host,
        owner_namespace="shop",
        ingress_class="ingress-domain",
        sources=[c.ObjectRef(kind="Ingress", namespace="shop", name="storefront")],
    )


async def test_streams_are_declared_idempotently_and_updated(bus_settings: BusSettings) -> None:
    bus = await Bus.connect(bus_settings)
    await bus.ensure_streams()
    await bus.ensure_streams()
    info = await bus.nats.jetstream().stream_info(bus.subjects.stream(c.Family.DOMAIN))
    assert info.config.max_msgs_per_subject == 1
    assert info.config.duplicate_window == 120.0
    wider = BusSettings(
        servers=bus_settings.servers,
        subjects=bus_settings.subjects,
        streams=StreamSettings(duplicate_window_seconds=30),
    )
    other = await Bus.connect(wider)
    await other.ensure_streams()
    info = await bus.nats.jetstream().stream_info(bus.subjects.stream(c.Family.DOMAIN))
    assert info.config.duplicate_window == 30.0
    await other.close()
    await bus.close()


async def test_the_stream_keeps_the_current_state_of_every_key(bus: Bus) -> None:
    await bus.publish(domain(1))
    await bus.publish(domain(2))
    await bus.publish(domain(1, "other.example.com"))
    await bus.publish(c.DomainDeleted(generation=2, host="other.example.com"))
    state = await bus.replay(c.Family.DOMAIN)
    by_host = {env.event.key()[0]: env.event for env in state.values()}
    assert by_host["shop.example.com"] == domain(2)
    assert isinstance(by_host["other.example.com"], c.DomainDeleted)
    assert await bus.replay(c.Family.L7) == {}


async def test_a_retried_publish_is_deduplicated(bus: Bus) -> None:
    first = await bus.publish(domain(7))
    again = await bus.publish(domain(7))
    assert again.duplicate and again.seq == first.seq


async def test_every_example_event_travels_and_replays(bus: Bus) -> None:
    events = examples(generation=3)
    acks = await bus.publish_many(events)
    assert len(acks) == len(events)
    replayed: dict[str, c.Event] = {}
    for family in c.Family:
        replayed.update({s: e.event for s, e in (await bus.replay(family)).items()})
    # Several examples share a key (desired then deleted): the last one per subject remains.
    expected = {bus.subjects.for_event(e): e for e in events}
    assert replayed == expected


def _slow_fetches(monkeypatch: pytest.MonkeyPatch, failures: int | None) -> list[int]:
    """Make the first ``failures`` replay fetches (None: every one) time out, as on a server too
    busy to answer in time; returns the count of fetches made."""
    import nats.errors
    from nats.js.client import JetStreamContext

    real = JetStreamContext.PullSubscription.fetch
    calls = [0]

    async def fetch(self: object, *args: object, **kwargs: object) -> object:
        calls[0] += 1
        if failures is None or calls[0] <= failures:
            raise nats.errors.TimeoutError
        return await real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(JetStreamContext.PullSubscription, "fetch", fetch)
    return calls


async def test_a_replay_retries_a_slow_fetch_and_returns_the_whole_state(
    bus: Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    await bus.publish_many([domain(1, f"h{i}.example.com") for i in range(50)])
    calls = _slow_fetches(monkeypatch, failures=2)
    assert len(await bus.replay(c.Family.DOMAIN)) == 50
    assert calls[0] >= 3


async def test_a_replay_never_returns_part_of_the_state(
    bus: Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    await bus.publish_many([domain(1, f"h{i}.example.com") for i in range(50)])
    _slow_fetches(monkeypatch, failures=None)
    with pytest.raises(ReplayIncomplete, match="50 message"):
        await bus.replay(c.Family.DOMAIN, timeout=0.5)


async def test_a_replay_in_batches_is_the_replay_a_fetch_at_a_time(bus: Bus) -> None:
    await bus.publish_many([domain(1, f"h{i}.example.com") for i in range(50)])
    await bus.publish(domain(2, "h7.example.com"))  # only the last event of a subject comes
    parts = [part async for part in bus.replay_batches(c.Family.DOMAIN, batch=16)]
    assert [len(p) for p in parts] == [16, 16, 16, 2]
    merged = {subject: envelope for part in parts for subject, envelope in part}
    assert merged == await bus.replay(c.Family.DOMAIN)
    assert merged[bus.subjects.for_event(domain(2, "h7.example.com"))].event.generation == 2


async def test_latest_is_the_current_event_of_exactly_one_key(bus: Bus) -> None:
    await bus.publish(domain(1, "shop.example.com"))
    await bus.publish(domain(2, "shop.example.com"))
    await bus.publish(domain(1, "www.shop.example.com"))
    found = await bus.latest(c.Family.DOMAIN, ("shop.example.com",))
    assert found is not None and found.event.generation == 2
    assert found.event == domain(2, "shop.example.com")
    assert await bus.latest(c.Family.DOMAIN, ("nobody.example.com",)) is None
    # Exact: the key of another family or a longer key is not this one.
    assert await bus.latest(c.Family.L7, ("shop.example.com",)) is None


async def test_publish_many_stores_thousands(bus: Bus) -> None:
    events = [domain(1, f"h{i}.example.com") for i in range(5000)]
    acks = await bus.publish_many(events)
    assert len({a.seq for a in acks}) == 5000
    assert len(await bus.replay(c.Family.DOMAIN)) == 5000


async def _collect(
    bus: Bus, spec: ConsumerSpec, handler: object = None
) -> tuple[list[Envelope[c.Event]], object]:
    seen: list[Envelope[c.Event]] = []

    async def record(env: Envelope[c.Event]) -> None:
        seen.append(env)

    consumer = await bus.consume(spec, handler or record)  # type: ignore[arg-type]
    return seen, consumer


async def wait_until(predicate: object, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():  # type: ignore[operator]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


async def test_a_durable_consumer_replays_current_state_then_follows_live(bus: Bus) -> None:
    await bus.publish(domain(1))
    await bus.publish(domain(2))
    seen, consumer = await _collect(
        bus, ConsumerSpec("ipam", c.Family.DOMAIN, fetch_timeout_seconds=0.2)
    )
    await wait_until(lambda: len(seen) == 1)
    assert seen[0].event.generation == 2  # only the current state, not history
    await bus.publish(domain(3))
    await wait_until(lambda: len(seen) == 2)
    await consumer.stop()  # type: ignore[attr-defined]
    # A restart resumes after the last ack: nothing is delivered twice, nothing is lost.
    await bus.publish(domain(4))
    seen2, consumer2 = await _collect(
        bus, ConsumerSpec("ipam", c.Family.DOMAIN, fetch_timeout_seconds=0.2)
    )
    await wait_until(lambda: len(seen2) == 1)
    assert seen2[0].event.generation == 4
    await consumer2.stop()  # type: ignore[attr-defined]


async def _dead_letters(bus: Bus, count: int) -> list[object]:
    js = bus.nats.jetstream()
    sub = await js.pull_subscribe(bus.subjects.dlq_wildcard, stream=bus.subjects.dlq_stream)
    msgs: list[object] = []
    while len(msgs) < count:
        msgs.extend(await sub.fetch(count - len(msgs), timeout=5))
    return msgs


async def test_a_transient_failure_is_retried_with_backoff(bus: Bus) -> None:
    attempts: list[int] = []

    async def flaky(env: Envelope[c.Event]) -> None:
        attempts.append(env.event.generation)
        if len(attempts) < 3:
            raise ConnectionError("DNS server down")

    spec = ConsumerSpec(
        "dns-writer", c.Family.DOMAIN, backoff_seconds=(0.05,), fetch_timeout_seconds=0.2
    )
    consumer = await bus.consume(spec, flaky)
    await bus.publish(domain(1))
    await wait_until(lambda: len(attempts) == 3)
    await asyncio.sleep(0.3)
    assert len(attempts) == 3  # acked after the success: no further delivery
    await consumer.stop()


async def test_after_bounded_deliveries_the_message_goes_to_the_dead_letter_subject(
    bus: Bus,
) -> None:
    attempts: list[int] = []

    async def broken(env: Envelope[c.Event]) -> None:
        attempts.append(1)
        raise RuntimeError("bug")

    spec = ConsumerSpec(
        "l7-config",
        c.Family.DOMAIN,
        max_deliveries=3,
        backoff_seconds=(0.02,),
        fetch_timeout_seconds=0.2,
    )
    consumer = await bus.consume(spec, broken)
    await bus.publish(domain(1))
    [letter] = await _dead_letters(bus, 1)
    assert len(attempts) == 3
    assert letter.headers["dlq-reason"] == "HandlerFailed"  # type: ignore[attr-defined]
    assert "RuntimeError: bug" in letter.headers["dlq-detail"]  # type: ignore[attr-defined]
    assert letter.subject == f"{bus.subjects.root}.dlq.l7-config.v1.domain.shop_example_com"  # type: ignore[attr-defined]
    await consumer.stop()


async def test_invalid_messages_are_dead_lettered_and_the_consumer_goes_on(bus: Bus) -> None:
    seen, consumer = await _collect(
        bus, ConsumerSpec("watcher", c.Family.DOMAIN, fetch_timeout_seconds=0.2)
    )
    js = bus.nats.jetstream()
    good_headers, good_body = encode(domain(1), nats_subject="x", source="//t")
    subject = bus.subjects.for_event(domain(1))
    await js.publish(bus.subjects.for_key(c.Family.DOMAIN, ("a.example.com",)), b"{}", headers={})
    await js.publish(
        bus.subjects.for_key(c.Family.DOMAIN, ("b.example.com",)),
        b"{broken",
        headers={**good_headers, "Nats-Msg-Id": "b"},
    )
    await js.publish(
        bus.subjects.for_key(c.Family.DOMAIN, ("c.example.com",)),
        good_body,
        headers={
            **good_headers,
            "Nats-Msg-Id": "c",
            "ce-type": "io.ingress-domain.domain.desired.v9",
        },
    )
    await js.publish(
        bus.subjects.for_key(c.Family.DOMAIN, ("d.example.com",)),
        good_body,
        headers={**good_headers, "Nats-Msg-Id": "d"},
    )  # body for another key
    await bus.publish(domain(2))
    letters = await _dead_letters(bus, 4)
    reasons = sorted(m.headers["dlq-reason"] for m in letters)  # type: ignore[attr-defined]
    assert reasons == ["MalformedBody", "MissingHeaders", "SubjectMismatch", "UnsupportedVersion"]
    for reason in reasons:
        counted = REGISTRY.get_sample_value(
            "ingress_bus_dead_letters_total", {"consumer": "watcher", "reason": reason}
        )
        assert counted == 1.0, reason
    await wait_until(lambda: len(seen) == 1)
    assert seen[0].nats_subject == subject
    await consumer.stop()  # type: ignore[attr-defined]


async def test_a_failure_outside_the_handler_never_ends_the_consumer(
    bus: Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Once, a dns-writer's route consumer ended on something raised outside its handler and
    # the service went on without route events (nothing logged). Now the consumer goes on and
    # the message comes back after ack_wait.
    decode = bus._decode
    failures: list[str] = []

    def fails_once(msg):  # type: ignore[no-untyped-def]
        if not failures:
            failures.append(msg.subject)
            raise RuntimeError("not the handler's fault")
        return decode(msg)

    monkeypatch.setattr(bus, "_decode", fails_once)
    seen, consumer = await _collect(
        bus,
        ConsumerSpec("dns", c.Family.DOMAIN, fetch_timeout_seconds=0.2, ack_wait_seconds=1.0),
    )
    await bus.publish(domain(1, "a.example.com"))
    await bus.publish(domain(1, "b.example.com"))
    await wait_until(lambda: {e.event.host for e in seen} == {"a.example.com", "b.example.com"})  # type: ignore[attr-defined]
    assert failures and not consumer.failed  # type: ignore[attr-defined]
    await bus.publish(domain(2, "c.example.com"))
    await wait_until(lambda: any(e.event.host == "c.example.com" for e in seen))  # type: ignore[attr-defined]
    await consumer.stop()  # type: ignore[attr-defined]


async def test_a_permanent_error_is_dead_lettered_at_once(bus: Bus) -> None:
    async def refuse(env: Envelope[c.Event]) -> None:
        raise PermanentError("OutsideManagedZones", "shop.example.com is in no managed zone")

    consumer = await bus.consume(
        ConsumerSpec("dns", c.Family.DOMAIN, fetch_timeout_seconds=0.2), refuse
    )
    await bus.publish(domain(1))
    [letter] = await _dead_letters(bus, 1)
    assert letter.headers["dlq-reason"] == "OutsideManagedZones"  # type: ignore[attr-defined]
    assert letter.headers["dlq-deliveries"] == "1"  # type: ignore[attr-defined]
    await consumer.stop()


async def test_stop_finishes_messages_in_flight(bus: Bus) -> None:
    await bus.publish_many([domain(1, f"h{i}.example.com") for i in range(50)])
    done: list[str] = []
    started = asyncio.Event()

    async def slow(env: Envelope[c.Event]) -> None:
        started.set()
        await asyncio.sleep(0.01)
        done.append(env.subject)

    consumer = await bus.consume(ConsumerSpec("slow", c.Family.DOMAIN, batch=50), slow)
    await started.wait()
    await consumer.stop()
    assert done  # it was stopped mid-stream, after taking some
    js = bus.nats.jetstream()
    stream = bus.subjects.stream(c.Family.DOMAIN)
    # The server applies acks asynchronously; an ack that was never sent would stay pending for
    # the whole ack_wait (30 s), so a short bounded wait still fails on a lost ack.
    for _ in range(100):
        info = await js.consumer_info(stream, "slow")
        if info.num_ack_pending == 0:
            break
        await asyncio.sleep(0.02)
    # Everything it took was handled and acked; the rest waits on the server, none lost.
    assert info.num_ack_pending == 0 and info.num_pending == 50 - len(done)


async def test_one_trace_crosses_the_bus(bus: Bus) -> None:
    _EXPORTER.clear()
    tracer = trace.get_tracer("test")
    got: list[Envelope[c.Event]] = []

    async def forward(env: Envelope[c.Event]) -> None:
        got.append(env)
        await bus.publish(c.L7Removed(generation=1, host="shop.example.com"))

    consumer = await bus.consume(
        ConsumerSpec("fwd", c.Family.DOMAIN, fetch_timeout_seconds=0.2), forward
    )
    with tracer.start_as_current_span("ingress change") as root:
        await bus.publish(domain(1))
    trace_id = root.get_span_context().trace_id
    await wait_until(lambda: len(got) == 1)
    await consumer.stop()
    assert got[0].traceparent is not None and f"{trace_id:032x}" in got[0].traceparent
    names = {s.name for s in _EXPORTER.get_finished_spans() if s.context.trace_id == trace_id}
    assert {"publish domain.desired", "process domain.desired", "publish l7.removed"} <= names


async def test_kv_compare_and_set(bus: Bus) -> None:
    kv = await bus.kv("vips")
    rev = await kv.create("10_0_0_1", b"shop.example.com")
    with pytest.raises(KeyExists):
        await kv.create("10_0_0_1", b"other.example.com")
    rev2 = await kv.update("10_0_0_1", b"shop.example.com#2", rev)
    with pytest.raises(RevisionMismatch):
        await kv.update("10_0_0_1", b"stale writer", rev)
    with pytest.raises(RevisionMismatch):
        await kv.delete("10_0_0_1", revision=rev)
    await kv.delete("10_0_0_1", revision=rev2)
    assert await kv.get("10_0_0_1") is None
    # Create after delete: the key is free again, exactly once.
    results = await asyncio.gather(
        kv.create("10_0_0_1", b"a"), kv.create("10_0_0_1", b"b"), return_exceptions=True
    )
    assert sorted(type(r).__name__ for r in results) == ["KeyExists", "int"]
    assert [e.key for e in await kv.entries()] == ["10_0_0_1"]
    assert (await bus.kv("vips")) is not None  # opening again is idempotent


async def test_nothing_is_lost_across_a_server_restart(nats_server: object) -> None:
    from ingress_testkit import NatsServer

    assert isinstance(nats_server, NatsServer)
    settings = BusSettings(servers=[nats_server.url])
    bus = await Bus.connect(settings)
    await bus.ensure_streams()
    await bus.publish_many([domain(1, f"h{i}.example.com") for i in range(100)])
    await bus.close()
    nats_server.restart()
    bus = await Bus.connect(settings)
    await bus.ensure_streams()
    assert len(await bus.replay(c.Family.DOMAIN)) == 100
    await bus.close()


async def test_a_concurrent_consumer_handles_a_backlog_several_keys_at_once(bus: Bus) -> None:
    # Each key's messages would be handled in order too, but the stream keeps one message per
    # key, so a backlog holds each key once: what shows here is the bound on keys at once.
    release = asyncio.Event()
    running: set[str] = set()
    widest = 0
    handled: dict[str, int] = {}

    async def handle(env: Envelope[c.Event]) -> None:
        nonlocal widest
        host = env.event.host  # type: ignore[attr-defined]
        running.add(host)
        widest = max(widest, len(running))
        await release.wait()  # the first message holds the consumer while a backlog builds
        await asyncio.sleep(0.02)
        handled[host] = env.event.generation
        running.discard(host)

    consumer = await bus.consume(
        ConsumerSpec("ipam", c.Family.DOMAIN, deliver_from="new", concurrency=4), handle
    )
    await bus.publish(domain(1, "first.example.com"))
    await wait_until(lambda: bool(running))
    hosts = [f"h{i}.example.com" for i in range(12)]
    for host in hosts:
        await bus.publish(domain(2, host))
    release.set()
    await wait_until(lambda: all(handled.get(h) == 2 for h in hosts))
    assert widest == 4
    await consumer.stop()

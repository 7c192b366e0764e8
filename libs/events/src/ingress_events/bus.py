"""The JetStream bus: streams, publishing, replay, durable consumers with dead letters, and KV.

A thin layer over nats-py (see docs/decisions/0001-bus-library.md for why not FastStream).

* :meth:`Bus.ensure_streams` declares one stream per event family that keeps the last message per
  subject (the current state of every key), idempotently, with configurable replicas and limits.
* :meth:`Bus.publish` waits for JetStream's ack; :meth:`Bus.publish_many` pipelines many publishes
  (``publish_async``) and then waits for every ack, which is what makes bulk sync fast.
* :meth:`Bus.replay` reads the current state of a family (the last message of every subject).
* :meth:`Bus.consume` runs a durable pull consumer: explicit ack, nak with backoff on a transient
  failure, and after a bounded number of deliveries (or at once for a message that is not a valid
  event) a copy goes to the dead-letter subject with the reason and the original is terminated.
* :meth:`Bus.kv` gives a JetStream KV bucket with compare-and-set on the revision.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from nats.js.kv import KeyValue
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from . import metrics
from .catalogue import Event, Family
from .envelope import Envelope, EnvelopeError, decode, encode
from .subjects import Subjects
from .tracing import TRACER, context_from_headers, current_trace_headers

log = logging.getLogger("ingress_events.bus")

_WRONG_LAST_SEQUENCE = 10071

Handler = Callable[[Envelope[Event]], Awaitable[None]]


class PermanentError(Exception):
    """Raised by a handler for a message that will never succeed: dead-lettered at once."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.detail = message


class PublishError(Exception):
    def __init__(self, failures: list[tuple[str, BaseException]]) -> None:
        first = failures[0]
        super().__init__(
            f"{len(failures)} publish(es) not acknowledged; first {first[0]}: {first[1]!r}"
        )
        self.failures = failures


class CasConflict(Exception):
    """A compare-and-set on a KV key lost: somebody else wrote first."""


class ReplayIncomplete(Exception):
    """A replay could not read the whole state in time (the server is slow or away). Raised
    rather than returning part of the state as if it were all of it."""


class KeyExists(CasConflict):
    pass


class RevisionMismatch(CasConflict):
    pass


@dataclass(frozen=True)
class StreamSettings:
    replicas: int = 1
    storage: Literal["file", "memory"] = "file"
    duplicate_window_seconds: float = 120.0
    max_bytes: int = -1
    max_msg_size: int = 1024 * 1024
    dlq_max_age_seconds: float = 7 * 24 * 3600


@dataclass(frozen=True)
class BusSettings:
    servers: Sequence[str] = ("nats://127.0.0.1:4222",)
    source: str = "//ingress-domain/local/unknown"
    """The CloudEvents ``source`` of what this process publishes."""
    subjects: Subjects = field(default_factory=Subjects)
    streams: StreamSettings = field(default_factory=StreamSettings)
    credentials_file: str | None = None
    connect_name: str | None = None
    publish_window: int = 2048
    """How many asynchronous publishes may await their ack at once in :meth:`Bus.publish_many`."""


@dataclass(frozen=True)
class ConsumerSpec:
    """A durable pull consumer over one family (optionally narrowed by a key prefix)."""

    durable: str
    family: Family
    key_prefix: tuple[str, ...] = ()
    max_deliveries: int = 5
    backoff_seconds: Sequence[float] = (0.5, 2.0, 5.0, 15.0, 30.0)
    ack_wait_seconds: float = 30.0
    batch: int = 256
    fetch_timeout_seconds: float = 1.0
    """How long an idle consumer long-polls for the next message (it returns on arrival)."""
    drain_window_seconds: float = 0.01
    """How long a batch fetch may wait for more while draining a backlog."""
    deliver_from: Literal["last_per_subject", "new"] = "last_per_subject"
    concurrency: int = 1
    """How many keys of one fetched batch are handled at once. The messages of one key (one
    subject) are always handled one after another, in order; a handler that waits on I/O per
    key (ipam's compare-and-set, then its publish) sets more than 1."""

    def __post_init__(self) -> None:
        if self.max_deliveries < 1:
            raise ValueError("max_deliveries must be at least 1")
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if not self.durable.replace("-", "").replace("_", "").isalnum():
            raise ValueError(
                f"durable name {self.durable!r} may hold only letters, digits, - and _"
            )

    def backoff_for(self, delivered: int) -> float:
        index = min(max(delivered - 1, 0), len(self.backoff_seconds) - 1)
        return self.backoff_seconds[index]


# Where each family stands in the pipeline (watcher -> ipam -> l4 / l7 / dns -> bgp -> reports):
# an event continues only the trace of a consumed event that stands before it.
_STAGE: dict[Family, int] = {
    Family.DOMAIN: 0,
    Family.BACKEND: 0,
    Family.LBSERVICE: 0,
    Family.POOL: 0,
    Family.PEER: 0,
    Family.VIP: 1,
    Family.L4: 2,
    Family.L7: 2,
    Family.DNS: 2,
    Family.ROUTE: 3,
    Family.ADMISSION: 4,
    Family.SESSION: 4,
}


def _about(event: Event) -> list[str]:
    """What an event is about, in terms every stage shares: host names and VIP addresses."""
    found: list[str] = []
    for name in ("host", "fqdn"):
        value = getattr(event, name, None)
        if isinstance(value, str):
            found.append(f"host:{value}")
    owner = getattr(event, "owner", None)
    if isinstance(getattr(owner, "host", None), str):
        found.append(f"host:{owner.host}")  # type: ignore[union-attr]
    vip = getattr(event, "vip", None)
    if isinstance(vip, str):
        found.append(f"vip:{vip}")
    if event.family is Family.VIP:
        found += [f"vip:{a}" for a in getattr(event, "addresses", None) or []]
    return found


class TraceCauses:
    """The trace context of the events this process handled, by host and VIP.

    Services publish most events from reconcile loops, outside the span of the handler that
    received their cause. When an event is published with no active span, it continues the
    trace of the newest consumed event about the same host or VIP from an earlier pipeline
    stage (seen within ``ttl`` seconds), so that one Ingress change is one trace across
    every service. A watcher's event (the first stage) always starts a new trace.
    """

    def __init__(self, size: int = 100_000, ttl: float = 300.0) -> None:
        self.size = size
        self.ttl = ttl
        self._by_token: OrderedDict[str, tuple[float, int, otel_context.Context]] = OrderedDict()

    def record(self, event: Event, context: otel_context.Context) -> None:
        entry = (time.monotonic(), _STAGE.get(event.family, 0), context)
        for token in _about(event):
            self._by_token[token] = entry
            self._by_token.move_to_end(token)
        while len(self._by_token) > self.size:
            self._by_token.popitem(last=False)

    def context_for(self, event: Event) -> otel_context.Context | None:
        stage = _STAGE.get(event.family, 0)
        if stage == 0:
            return None  # nothing stands before the first stage: a new trace
        oldest = time.monotonic() - self.ttl
        best: tuple[float, int, otel_context.Context] | None = None
        for token in _about(event):
            entry = self._by_token.get(token)
            if entry is None or entry[0] < oldest or entry[1] >= stage:
                continue
            if best is None or entry[0] > best[0]:
                best = entry
        return best[2] if best is not None else None


_PROPAGATOR = TraceContextTextMapPropagator()


def _in_span() -> bool:
    return trace.get_current_span().get_span_context().is_valid


class Bus:
    def __init__(self, nc: NatsClient, settings: BusSettings) -> None:
        self._nc = nc
        self._js: JetStreamContext = nc.jetstream(publish_async_max_pending=settings.publish_window)
        self.settings = settings
        self.subjects = settings.subjects
        self.causes = TraceCauses()

    @classmethod
    async def connect(cls, settings: BusSettings, **options: Any) -> Bus:
        nc = await nats.connect(
            servers=list(settings.servers),
            name=settings.connect_name,
            user_credentials=settings.credentials_file,
            max_reconnect_attempts=-1,
            **options,
        )
        return cls(nc, settings)

    @property
    def connected(self) -> bool:
        return bool(self._nc.is_connected)

    @property
    def nats(self) -> NatsClient:
        return self._nc

    async def close(self) -> None:
        """Flush and drain: in-flight publishes complete, subscriptions end, then disconnect."""
        if self._nc.is_closed:
            return
        with contextlib.suppress(nats.errors.ConnectionClosedError, nats.errors.FlushTimeoutError):
            await self._nc.drain()

    # ------------------------------------------------------------------ streams

    def _state_stream_config(self, family: Family) -> api.StreamConfig:
        s = self.settings.streams
        return api.StreamConfig(
            name=self.subjects.stream(family),
            description=f"Ingress Domain {family.value} events: the last message of every key",
            subjects=[self.subjects.family_wildcard(family)],
            retention=api.RetentionPolicy.LIMITS,
            max_msgs_per_subject=1,
            discard=api.DiscardPolicy.OLD,
            storage=api.StorageType.FILE if s.storage == "file" else api.StorageType.MEMORY,
            num_replicas=s.replicas,
            duplicate_window=s.duplicate_window_seconds,
            max_bytes=s.max_bytes,
            max_msg_size=s.max_msg_size,
        )

    def _dlq_stream_config(self) -> api.StreamConfig:
        s = self.settings.streams
        return api.StreamConfig(
            name=self.subjects.dlq_stream,
            description="Ingress Domain dead letters: messages a consumer gave up on, with why",
            subjects=[self.subjects.dlq_wildcard],
            retention=api.RetentionPolicy.LIMITS,
            max_age=s.dlq_max_age_seconds,
            storage=api.StorageType.FILE if s.storage == "file" else api.StorageType.MEMORY,
            num_replicas=s.replicas,
            duplicate_window=s.duplicate_window_seconds,
        )

    async def ensure_streams(self, families: Iterable[Family] | None = None) -> None:
        """Create or update the state streams and the dead-letter stream; safe to call from every
        replica at every start-up."""
        configs = [self._state_stream_config(f) for f in (families or list(Family))]
        configs.append(self._dlq_stream_config())
        for config in configs:
            await self._ensure_stream(config)

    async def _ensure_stream(self, config: api.StreamConfig) -> None:
        assert config.name is not None
        try:
            info = await self._js.stream_info(config.name)
        except nats.js.errors.NotFoundError:
            try:
                await self._js.add_stream(config)
                log.info("stream created", extra={"stream": config.name})
            except nats.js.errors.BadRequestError:
                # Another replica created it between our lookup and our create.
                await self._js.stream_info(config.name)
            return
        current = info.config
        wanted = (
            config.subjects,
            config.max_msgs_per_subject,
            config.num_replicas,
            config.duplicate_window,
            config.max_bytes,
            config.max_age,
        )
        have = (
            current.subjects,
            current.max_msgs_per_subject,
            current.num_replicas,
            current.duplicate_window,
            current.max_bytes,
            current.max_age,
        )
        if wanted != have:
            await self._js.update_stream(config)
            log.info("stream updated", extra={"stream": config.name})

    # ------------------------------------------------------------------ publishing

    def _encode(self, event: Event) -> tuple[str, dict[str, str], bytes]:
        subject = self.subjects.for_event(event)
        headers, body = encode(
            event,
            nats_subject=subject,
            source=self.settings.source,
            trace_headers=current_trace_headers(),
        )
        return subject, headers, body

    def _publish_attributes(self, event: Event) -> dict[str, str]:
        return {
            "messaging.system": "nats",
            "ingress.key": "/".join(event.key()),
            "ingress.source": self.settings.source,
        }

    async def publish(self, event: Event, *, timeout: float = 5.0) -> api.PubAck:
        with TRACER.start_as_current_span(
            f"publish {event.event_type()}",
            context=None if _in_span() else self.causes.context_for(event),
            kind=trace.SpanKind.PRODUCER,
            attributes=self._publish_attributes(event),
        ):
            subject, headers, body = self._encode(event)
            try:
                ack = await self._js.publish(
                    subject,
                    body,
                    timeout=timeout,
                    stream=self.subjects.stream(event.family),
                    headers=headers,
                )
            except Exception:
                metrics.PUBLISH_FAILURES.labels(event.event_type()).inc()
                raise
        metrics.PUBLISHED.labels(event.event_type()).inc()
        return ack

    async def publish_many(
        self, events: Sequence[Event], *, timeout: float = 10.0
    ) -> list[api.PubAck]:
        """Publish many events pipelined, then wait for every ack. Raises :class:`PublishError`
        naming each event that was not acknowledged (the others are stored).

        Events go out in windows of ``publish_window``: a window is sent without waiting, then its
        acks are awaited under one timeout. (nats-py's own stall guard wraps every publish in an
        ``asyncio.wait_for``, which costs a task per message; the window makes it unnecessary.)
        """
        # Inside a span every event continues it; outside, each event gets a producer span of
        # its own, in the trace of its cause when there is one (see TraceCauses).
        in_span = _in_span()
        trace_headers = current_trace_headers()
        spans: list[trace.Span] = []
        acks: list[api.PubAck] = []
        failures: list[tuple[str, BaseException]] = []
        window = self.settings.publish_window
        try:
            for offset in range(0, len(events), window):
                chunk = events[offset : offset + window]
                futures: list[asyncio.Future[api.PubAck]] = []
                for event in chunk:
                    subject = self.subjects.for_event(event)
                    if not in_span:
                        span = TRACER.start_span(
                            f"publish {event.event_type()}",
                            context=self.causes.context_for(event),
                            kind=trace.SpanKind.PRODUCER,
                            attributes=self._publish_attributes(event),
                        )
                        spans.append(span)
                        trace_headers = {}
                        _PROPAGATOR.inject(trace_headers, context=trace.set_span_in_context(span))
                    headers, body = encode(
                        event,
                        nats_subject=subject,
                        source=self.settings.source,
                        trace_headers=trace_headers,
                    )
                    futures.append(
                        await self._js.publish_async(
                            subject,
                            body,
                            wait_stall=None,
                            stream=self.subjects.stream(event.family),
                            headers=headers,
                        )
                    )
                try:
                    results = await asyncio.wait_for(
                        asyncio.gather(*futures, return_exceptions=True), timeout=timeout
                    )
                except TimeoutError as exc:
                    results = [
                        f.result() if f.done() and not f.exception() else exc for f in futures
                    ]
                stored: Counter[str] = Counter()
                for event, result in zip(chunk, results, strict=True):
                    if isinstance(result, BaseException):
                        metrics.PUBLISH_FAILURES.labels(event.event_type()).inc()
                        failures.append(("/".join(event.key()), result))
                    else:
                        acks.append(result)
                        stored[event.event_type()] += 1
                for event_type, count in stored.items():
                    metrics.PUBLISHED.labels(event_type).inc(count)
        finally:
            for span in spans:
                span.end()
        if failures:
            raise PublishError(failures)
        return acks

    # ------------------------------------------------------------------ replay

    def _filter(self, family: Family, key_prefix: tuple[str, ...]) -> str:
        if not key_prefix:
            return self.subjects.family_wildcard(family)
        return self.subjects.for_key(family, key_prefix) + ".>"

    async def replay(
        self,
        family: Family,
        key_prefix: tuple[str, ...] = (),
        *,
        batch: int = 1024,
        timeout: float = 60.0,
    ) -> dict[str, Envelope[Event]]:
        """The current state of a family: the last valid event of every subject, by NATS subject.
        Messages that are not valid events are logged and skipped here (consumers dead-letter them).
        A fetch that times out while messages are pending is retried until ``timeout``; then
        :class:`ReplayIncomplete` is raised: a slow server never yields a partial state.
        """
        state: dict[str, Envelope[Event]] = {}
        async for part in self.replay_batches(family, key_prefix, batch=batch, timeout=timeout):
            for subject, envelope in part:
                state[subject] = envelope
        return state

    async def replay_batches(
        self,
        family: Family,
        key_prefix: tuple[str, ...] = (),
        *,
        batch: int = 1024,
        timeout: float = 60.0,
    ) -> AsyncIterator[list[tuple[str, Envelope[Event]]]]:
        """:meth:`replay` one fetch at a time, for a caller that keeps less than the events (at
        10,000 Services the backends' events alone are ~170 MB of models). A subject published
        to during the replay comes again, later: the later one is the newer. The state is
        complete only once the iteration ends; :class:`ReplayIncomplete` as in :meth:`replay`.
        """
        deadline = time.monotonic() + timeout
        stream = self.subjects.stream(family)
        config = api.ConsumerConfig(
            deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT,
            ack_policy=api.AckPolicy.NONE,
            filter_subject=self._filter(family, key_prefix),
            inactive_threshold=30.0,
            mem_storage=True,
        )
        psub = await self._js.pull_subscribe(
            config.filter_subject or "", stream=stream, config=config
        )
        try:
            info = await psub.consumer_info()
            pending = info.num_pending or 0
            while pending > 0:
                try:
                    msgs = await psub.fetch(min(batch, pending), timeout=2.0)
                except nats.errors.TimeoutError:
                    # The count from the last message may be stale (a subject's message
                    # superseded since): ask the server what is really left.
                    pending = (await psub.consumer_info()).num_pending or 0
                    if pending and time.monotonic() >= deadline:
                        raise ReplayIncomplete(
                            f"{family.value}: {pending} message(s) still pending after "
                            f"{timeout:.0f} s"
                        ) from None
                    continue
                part: list[tuple[str, Envelope[Event]]] = []
                for msg in msgs:
                    pending = msg.metadata.num_pending
                    metrics.REPLAYED.labels(family.value).inc()
                    try:
                        part.append((msg.subject, self._decode(msg)))
                    except EnvelopeError as exc:
                        log.warning(
                            "replay skipped an invalid message",
                            extra={"subject": msg.subject, "reason": exc.reason},
                        )
                yield part
        finally:
            with contextlib.suppress(Exception):
                await psub.unsubscribe()

    async def latest(self, family: Family, key: tuple[str, ...]) -> Envelope[Event] | None:
        """The current event of one key (its subject's last message), or None when the key has
        none; a message that is not a valid event raises :class:`EnvelopeError`. For a key
        prefix (all keys below it) use :meth:`replay`."""
        subject = self.subjects.for_key(family, key)
        try:
            raw = await self._js.get_last_msg(self.subjects.stream(family), subject)
        except nats.js.errors.NotFoundError:
            return None
        envelope = decode(raw.headers, raw.data or b"", nats_subject=subject)
        expected = self.subjects.for_event(envelope.event)
        if expected != subject:
            raise EnvelopeError(
                "SubjectMismatch", f"body is for {expected!r} but arrived on {subject!r}"
            )
        return envelope

    def _decode(self, msg: Msg) -> Envelope[Event]:
        envelope = decode(msg.headers, msg.data, nats_subject=msg.subject)
        expected = self.subjects.for_event(envelope.event)
        if expected != msg.subject:
            raise EnvelopeError(
                "SubjectMismatch", f"body is for {expected!r} but arrived on {msg.subject!r}"
            )
        return envelope

    # ------------------------------------------------------------------ consuming

    async def consume(self, spec: ConsumerSpec, handler: Handler) -> Consumer:
        stream = self.subjects.stream(spec.family)
        config = api.ConsumerConfig(
            durable_name=spec.durable,
            deliver_policy=(
                api.DeliverPolicy.LAST_PER_SUBJECT
                if spec.deliver_from == "last_per_subject"
                else api.DeliverPolicy.NEW
            ),
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=spec.ack_wait_seconds,
            # One more than ours so that the handler still sees the last delivery and dead-letters
            # it instead of the server silently dropping it.
            max_deliver=spec.max_deliveries + 1,
            filter_subject=self._filter(spec.family, spec.key_prefix),
            max_ack_pending=max(spec.batch * 4, 1024),
        )
        # add_consumer creates the durable or updates its mutable settings; pull_subscribe alone
        # would silently keep an existing durable's old configuration.
        await self._js.add_consumer(stream, config)
        psub = await self._js.pull_subscribe_bind(durable=spec.durable, stream=stream)
        consumer = Consumer(self, spec, psub, handler)
        consumer.start()
        return consumer

    async def dead_letter(self, msg: Msg, consumer: str, reason: str, detail: str) -> None:
        original = dict(msg.headers or {})
        sequence = msg.metadata.sequence.stream if msg.reply else None
        headers = {
            **{k: v for k, v in original.items() if k != "Nats-Msg-Id"},
            "dlq-reason": reason,
            "dlq-detail": detail[:2000],
            "dlq-consumer": consumer,
            "dlq-original-subject": msg.subject,
            "dlq-stream-sequence": str(sequence),
            "dlq-deliveries": str(msg.metadata.num_delivered if msg.reply else 0),
            "Nats-Msg-Id": f"dlq:{consumer}:{msg.subject}:{sequence}",
        }
        await self._js.publish(
            self.subjects.dlq(consumer, msg.subject),
            msg.data,
            headers=headers,
            stream=self.subjects.dlq_stream,
        )
        metrics.DEAD_LETTERS.labels(consumer, reason).inc()

    # ------------------------------------------------------------------ key-value

    async def kv(self, bucket: str, *, history: int = 1, replicas: int | None = None) -> KvStore:
        """Open or create a KV bucket (idempotent)."""
        try:
            store = await self._js.key_value(bucket)
        except nats.js.errors.BucketNotFoundError:
            try:
                store = await self._js.create_key_value(
                    bucket=bucket,
                    history=history,
                    replicas=replicas or self.settings.streams.replicas,
                )
            except nats.js.errors.BadRequestError:
                store = await self._js.key_value(bucket)
        return KvStore(store)


class Consumer:
    """A running durable pull consumer. :meth:`stop` finishes the messages already fetched."""

    def __init__(
        self,
        bus: Bus,
        spec: ConsumerSpec,
        psub: JetStreamContext.PullSubscription,
        handler: Handler,
    ) -> None:
        self._bus = bus
        self._spec = spec
        self._psub = psub
        self._handler = handler
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._handle_seconds = metrics.HANDLE_SECONDS.labels(spec.durable)
        self._outcomes: dict[tuple[str, str], Any] = {}
        self.idle = asyncio.Event()
        """Set whenever a fetch finds nothing pending: the consumer has caught up."""
        self.failed = False
        """Set when the consumer ended without being stopped (logged as an error)."""

    @property
    def name(self) -> str:
        return self._spec.durable

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"consumer:{self._spec.durable}")
        self._task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        # A consumer that ends while nobody stopped it leaves its service deaf to one family:
        # never silently (an unretrieved task exception is only reported if the task is
        # garbage-collected, and this object keeps it).
        nc = self._bus.nats
        if task.cancelled() or self._stopping.is_set() or nc.is_closed or nc.is_draining:
            return  # stopped, or the whole connection is closing (the service is exiting)
        self.failed = True
        error = task.exception()
        log.error(
            "consumer ended while running; this service no longer receives these events",
            extra={"consumer": self._spec.durable, "error": repr(error)},
            exc_info=error,
        )

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            # A consumer that already ended on an error was reported then (``_ended``); its
            # exception must not stop the rest of the service from stopping.
            with contextlib.suppress(Exception):
                await self._task
        # A pull request may have delivered more than the last fetch returned; those messages are
        # ours (the server counts them as delivered), so handle them too rather than leave them
        # to be redelivered only after ack_wait.
        queue = self._psub._sub._pending_queue  # nats-py keeps delivered messages here
        while not queue.empty():
            msg = queue.get_nowait()
            if msg.data or msg.headers is None or "Status" not in msg.headers:
                await self._handle(msg)
        # Acks are buffered writes: flush so that every ack of the finished batch is on the wire
        # before the caller drains or exits.
        with contextlib.suppress(Exception):
            await self._bus.nats.flush(timeout=5)
        with contextlib.suppress(Exception):
            await self._psub.unsubscribe()

    async def _run(self) -> None:
        spec = self._spec
        caught_up = False  # start by draining: a (re)started consumer usually has a backlog
        while not self._stopping.is_set():
            # nats-py's batch fetch, once it long-polls, returns only when the batch is full or
            # the request expires, so a lone event would wait out the whole fetch timeout. When
            # caught up we long-poll for one message (returned on arrival); behind, we drain with
            # batch fetches on a short window (a no-wait request answers at once while the
            # backlog lasts).
            batch, timeout = (
                (1, spec.fetch_timeout_seconds)
                if caught_up
                else (spec.batch, spec.drain_window_seconds)
            )
            try:
                msgs = await self._psub.fetch(batch, timeout=timeout)
            except (nats.errors.TimeoutError, TimeoutError):
                # An empty fetch: nats-py raises its own TimeoutError for one message and the
                # built-in one for a batch. Nothing is wrong; the consumer has caught up.
                caught_up = True
                self.idle.set()
                continue
            except (nats.errors.ConnectionClosedError, nats.errors.ConnectionDrainingError):
                return  # the connection is gone for good (reported by _ended unless stopping)
            except Exception:
                log.exception("fetch failed; retrying", extra={"consumer": spec.durable})
                await asyncio.sleep(1.0)
                continue
            self.idle.clear()
            caught_up = False
            # Messages already fetched are handled even when a stop arrives meanwhile: none lost.
            if spec.concurrency == 1:
                for msg in msgs:
                    await self._handle_guarded(msg)
            else:
                await self._handle_by_key(msgs)
            try:
                pending = msgs[-1].metadata.num_pending
            except Exception:  # not a JetStream message: nothing to say about the backlog
                continue
            metrics.CONSUMER_PENDING.labels(spec.durable).set(pending)
            if pending == 0:
                caught_up = True
                self.idle.set()

    async def _handle_by_key(self, msgs: list[Msg]) -> None:
        """The batch's keys side by side (at most ``concurrency`` at once), each key's messages
        in their order; returns when all are handled."""
        by_subject: dict[str, list[Msg]] = {}
        for msg in msgs:
            by_subject.setdefault(msg.subject, []).append(msg)
        gate = asyncio.Semaphore(self._spec.concurrency)

        async def one_key(group: list[Msg]) -> None:
            async with gate:
                for msg in group:
                    await self._handle_guarded(msg)

        await asyncio.gather(*(one_key(group) for group in by_subject.values()))

    async def _handle_guarded(self, msg: Msg) -> None:
        try:
            await self._handle(msg)
        except Exception:
            # Whatever went wrong outside the handler (an ack that could not be sent, a message
            # that is not a JetStream one), the consumer goes on: an unacked message comes back
            # after ack_wait, and handlers are level-triggered.
            log.exception(
                "message not handled; it is redelivered after ack_wait",
                extra={"consumer": self._spec.durable, "subject": msg.subject},
            )

    async def _handle(self, msg: Msg) -> None:
        spec = self._spec
        delivered = msg.metadata.num_delivered
        try:
            envelope = self._bus._decode(msg)
        except EnvelopeError as exc:
            log.warning(
                "invalid message dead-lettered",
                extra={"consumer": spec.durable, "subject": msg.subject, "reason": exc.reason},
            )
            await self._give_up(msg, exc.reason, exc.detail, "invalid")
            return
        event_type = envelope.event.event_type()
        if delivered > spec.max_deliveries:
            await self._give_up(
                msg,
                "MaxDeliveriesExceeded",
                f"delivered {delivered} times without an ack",
                event_type,
            )
            return
        parent = context_from_headers(msg.headers)
        started = time.perf_counter()
        with TRACER.start_as_current_span(
            f"process {event_type}",
            context=parent,
            kind=trace.SpanKind.CONSUMER,
            attributes={"messaging.consumer": spec.durable, "messaging.delivery": delivered},
        ) as span:
            if span.get_span_context().is_valid:
                self._bus.causes.record(envelope.event, trace.set_span_in_context(span))
            try:
                await self._handler(envelope)
            except PermanentError as exc:
                span.record_exception(exc)
                await self._give_up(msg, exc.reason, exc.detail, event_type)
                return
            except Exception as exc:
                span.record_exception(exc)
                if delivered >= spec.max_deliveries:
                    log.error(
                        "handler failed for the last time; dead-lettered",
                        extra={"consumer": spec.durable, "subject": msg.subject},
                    )
                    await self._give_up(
                        msg, "HandlerFailed", f"{type(exc).__name__}: {exc}", event_type
                    )
                else:
                    delay = spec.backoff_for(delivered)
                    log.warning(
                        "handler failed; will retry",
                        extra={
                            "consumer": spec.durable,
                            "subject": msg.subject,
                            "delivery": delivered,
                            "retry_in_s": delay,
                            "error": f"{type(exc).__name__}: {exc}",
                        },
                    )
                    await msg.nak(delay=delay)
                    self._count(event_type, "nak")
                return
            finally:
                self._handle_seconds.observe(time.perf_counter() - started)
        await msg.ack()
        self._count(event_type, "ack")

    def _count(self, event_type: str, outcome: str) -> None:
        # Label children are cached: a .labels() lookup per message costs more than the count.
        child = self._outcomes.get((event_type, outcome))
        if child is None:
            child = self._outcomes[(event_type, outcome)] = metrics.CONSUMED.labels(
                self._spec.durable, event_type, outcome
            )
        child.inc()

    async def _give_up(self, msg: Msg, reason: str, detail: str, event_type: str) -> None:
        await self._bus.dead_letter(msg, self._spec.durable, reason, detail)
        await msg.term()
        self._count(event_type, "dead_letter")


@dataclass(frozen=True)
class KvEntry:
    key: str
    value: bytes
    revision: int


class KvStore:
    """JetStream KV with compare-and-set. Keys should be built with keys.encode_key."""

    def __init__(self, store: KeyValue) -> None:
        self._kv = store

    async def get(self, key: str) -> KvEntry | None:
        try:
            entry = await self._kv.get(key)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            return None
        return KvEntry(key, entry.value or b"", entry.revision or 0)

    async def create(self, key: str, value: bytes) -> int:
        """Write ``key`` only if it does not exist (a deleted key counts as absent)."""
        try:
            return await self._kv.create(key, value)
        except nats.js.errors.KeyWrongLastSequenceError as exc:
            raise KeyExists(key) from exc

    async def update(self, key: str, value: bytes, revision: int) -> int:
        """Write ``key`` only if its current revision is ``revision``."""
        try:
            return await self._kv.update(key, value, last=revision)
        except nats.js.errors.KeyWrongLastSequenceError as exc:
            raise RevisionMismatch(key) from exc

    async def delete(self, key: str, revision: int | None = None) -> None:
        """Delete ``key``; with ``revision``, only if nobody wrote it since."""
        try:
            await self._kv.delete(key, last=revision)
        except nats.js.errors.BadRequestError as exc:
            # nats-py's delete does not translate the server's "wrong last sequence" (10071).
            if exc.err_code == _WRONG_LAST_SEQUENCE:
                raise RevisionMismatch(key) from exc
            raise

    async def entries(self) -> list[KvEntry]:
        """Every live key with its value and revision: a snapshot to rebuild state from."""
        out: list[KvEntry] = []
        watcher = await self._kv.watchall(ignore_deletes=True)
        try:
            async for entry in watcher:
                if entry is None:  # end of the initial values
                    break
                out.append(KvEntry(entry.key, entry.value or b"", entry.revision or 0))
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]  # untyped in nats-py
        return out

"""The ADS server over gRPC, state of the world and delta, and an in-memory fake of the same
contract.

The server holds the current :class:`Snapshot`; each connected Envoy is one :class:`EnvoyStream`
with its own view of what it ACKed. ``domain.push`` decides what each Envoy gets next; this module
only moves bytes and reports ACKs, NACKs and connections to an :class:`XdsObserver`.

An Envoy chooses the variant in its bootstrap (``ads_config.api_type``: ``GRPC`` or
``DELTA_GRPC``); both RPCs of the AggregatedDiscoveryService are served. Over delta a resource's
version is its digest, so an Envoy that reconnects (to this process or after a restart) says in
``initial_resource_versions`` what it holds, and only what differs is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc  # type: ignore[import-untyped, unused-ignore]
from envoy.service.discovery.v3 import (  # type: ignore[import-untyped, unused-ignore]
    ads_pb2_grpc,
    discovery_pb2,
)
from google.protobuf import any_pb2  # type: ignore[import-untyped, unused-ignore]

from ..domain.push import (
    WILDCARD_TYPES,
    Push,
    TypeState,
    after_ack,
    after_nack,
    next_push,
    resubscribe,
)
from ..domain.resources import ENDPOINT, SHORT, TYPES, Snapshot

log = logging.getLogger("ingress_l7_config.xds")


@dataclass
class EnvoyStream:
    """One connected Envoy (one ADS stream)."""

    node: str
    delta: bool = False
    """Delta xDS (DeltaAggregatedResources), else state of the world."""
    states: dict[str, TypeState] = field(default_factory=lambda: {t: TypeState() for t in TYPES})
    in_flight: dict[str, tuple[Push, str, int]] = field(default_factory=dict)
    """Per type, the response awaiting an ACK or NACK: (push, nonce, snapshot sequence)."""
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    sent: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    """Every response: (LDS|RDS|CDS|EDS|SDS, resource names), for metrics and tests."""
    pinned: tuple[Snapshot, int] | None = None
    """The snapshot (and its sequence) this Envoy is being brought to (see domain.push)."""

    def __post_init__(self) -> None:
        for state in self.states.values():
            state.incremental = self.delta


class XdsObserver(Protocol):
    def on_ack(self, stream: EnvoyStream, push: Push, sequence: int) -> None: ...

    def on_nack(
        self, stream: EnvoyStream, push: Push, sequence: int, changed: list[str], message: str
    ) -> None: ...

    def on_streams_changed(self) -> None: ...


class XdsServer(Protocol):
    """What the app needs from an xDS server."""

    @property
    def streams(self) -> list[EnvoyStream]: ...

    def publish(self, snapshot: Snapshot, sequence: int) -> None: ...

    async def start(self) -> int: ...

    async def stop(self) -> None: ...


class _Core:
    """Stream bookkeeping shared by the real server and the fake."""

    def __init__(self, observer: XdsObserver) -> None:
        self._observer = observer
        self._streams: list[EnvoyStream] = []
        self._snapshot: Snapshot | None = None
        self._sequence = 0
        self._nonces = itertools.count(1)

    @property
    def streams(self) -> list[EnvoyStream]:
        return list(self._streams)

    @property
    def snapshot(self) -> tuple[Snapshot | None, int]:
        return self._snapshot, self._sequence

    def publish(self, snapshot: Snapshot, sequence: int) -> None:
        self._snapshot, self._sequence = snapshot, sequence
        for stream in self._streams:
            stream.wake.set()

    def handle_request(self, stream: EnvoyStream, request: discovery_pb2.DiscoveryRequest) -> None:
        """A state-of-the-world request: an ACK or NACK and the whole subscription."""
        state = self._requested(stream, request.type_url)
        if state is None:
            return
        error = request.error_detail.message if request.HasField("error_detail") else None
        self._answered(
            stream, request.type_url, request.response_nonce, request.version_info, error
        )
        if request.type_url not in WILDCARD_TYPES:
            resubscribe(state, set(request.resource_names))
        stream.wake.set()

    def handle_delta_request(
        self, stream: EnvoyStream, request: discovery_pb2.DeltaDiscoveryRequest
    ) -> None:
        """A delta request: an ACK or NACK, and changes to the subscription."""
        state = self._requested(stream, request.type_url)
        if state is None:
            return
        if request.initial_resource_versions and not state.acked:
            # A reconnecting Envoy says what it holds; the versions it names are our digests.
            for name, version in request.initial_resource_versions.items():
                state.acked[name] = (version, 0)
            state.settled = None
        error = request.error_detail.message if request.HasField("error_detail") else None
        self._answered(stream, request.type_url, request.response_nonce, "", error)
        if request.type_url not in WILDCARD_TYPES and (
            request.resource_names_subscribe or request.resource_names_unsubscribe
        ):
            names = set(state.subscribed)
            names.update(request.resource_names_subscribe)
            names.difference_update(request.resource_names_unsubscribe)
            resubscribe(state, names)
        stream.wake.set()

    def _requested(self, stream: EnvoyStream, type_url: str) -> TypeState | None:
        state = stream.states.get(type_url)
        if state is None:
            log.warning("unsupported type requested", extra={"node": stream.node, "type": type_url})
            return None
        state.requested = True
        return state

    def _answered(
        self, stream: EnvoyStream, type_url: str, nonce: str, version: str, error: str | None
    ) -> None:
        """The request's ACK or NACK of the response in flight (a stale nonce is neither)."""
        pending = stream.in_flight.get(type_url)
        if pending is None or nonce != pending[1]:
            return
        push, _, sequence = pending
        del stream.in_flight[type_url]
        if error is not None:
            changed = after_nack(stream.states, push)
            log.warning(
                "NACK", extra={"node": stream.node, "type": SHORT[type_url], "error": error}
            )
            self._observer.on_nack(stream, push, sequence, changed, error)
            # The rest of the refused snapshot is not delivered: the next response comes from
            # the newest one, which on_nack has just rebuilt without the refused change (else a
            # route of the refused generation could follow its NACKed secret).
            stream.pinned = None
        else:
            after_ack(stream.states, push, sequence, version or str(sequence))
            self._observer.on_ack(stream, push, sequence)

    def next_push(self, stream: EnvoyStream) -> tuple[Push, str, int] | None:
        """The next response's content for ``stream`` (now in flight): push, nonce, sequence."""
        latest = self._snapshot
        if latest is None:
            return None
        if stream.pinned is None:
            stream.pinned = (latest, self._sequence)
        pinned, sequence = stream.pinned
        push = next_push(pinned, stream.states, stream.in_flight.keys(), latest)
        if push is None and not stream.in_flight and pinned is not latest:
            # The pinned snapshot is delivered and acknowledged: on to the newest.
            stream.pinned = (latest, self._sequence)
            pinned, sequence = stream.pinned
            push = next_push(pinned, stream.states, (), latest)
        if push is None:
            return None
        if push.type_url == ENDPOINT:
            sequence = self._sequence
        nonce = str(next(self._nonces))
        stream.in_flight[push.type_url] = (push, nonce, sequence)
        stream.sent.append((SHORT[push.type_url], tuple(r.name for r in push.resources)))
        return push, nonce, sequence

    def next_response(self, stream: EnvoyStream) -> discovery_pb2.DiscoveryResponse | None:
        """The next state-of-the-world response for ``stream``."""
        step = self.next_push(stream)
        if step is None:
            return None
        push, nonce, sequence = step
        # The stored wire form: nothing is serialized again per Envoy.
        resources = [any_pb2.Any(type_url=push.type_url, value=r.payload) for r in push.resources]
        return discovery_pb2.DiscoveryResponse(
            version_info=str(sequence),
            resources=resources,
            type_url=push.type_url,
            nonce=nonce,
        )

    def next_delta_response(
        self, stream: EnvoyStream
    ) -> discovery_pb2.DeltaDiscoveryResponse | None:
        """The next delta response for ``stream``."""
        step = self.next_push(stream)
        if step is None:
            return None
        push, nonce, sequence = step
        resources = [
            discovery_pb2.Resource(
                name=r.name,
                version=r.digest,
                resource=any_pb2.Any(type_url=push.type_url, value=r.payload),
            )
            for r in push.resources
        ]
        return discovery_pb2.DeltaDiscoveryResponse(
            system_version_info=str(sequence),
            resources=resources,
            removed_resources=list(push.removed),
            type_url=push.type_url,
            nonce=nonce,
        )

    def add(self, stream: EnvoyStream) -> None:
        self._streams.append(stream)
        self._observer.on_streams_changed()

    def remove(self, stream: EnvoyStream) -> None:
        with contextlib.suppress(ValueError):
            self._streams.remove(stream)
        self._observer.on_streams_changed()


class _Servicer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]
    def __init__(self, core: _Core) -> None:
        self._core = core

    # Async generators themselves: grpc.aio tells a streaming handler by its function type.
    async def StreamAggregatedResources(
        self,
        request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[discovery_pb2.DiscoveryResponse]:
        async for response in self._serve(request_iterator, context, delta=False):
            yield response

    async def DeltaAggregatedResources(
        self,
        request_iterator: AsyncIterator[discovery_pb2.DeltaDiscoveryRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[discovery_pb2.DeltaDiscoveryResponse]:
        async for response in self._serve(request_iterator, context, delta=True):
            yield response

    async def _serve(
        self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext, delta: bool
    ) -> AsyncIterator[Any]:
        stream: EnvoyStream | None = None
        first = asyncio.Event()
        closed = asyncio.Event()
        holder: list[EnvoyStream] = []
        handle = self._core.handle_delta_request if delta else self._core.handle_request
        respond = self._core.next_delta_response if delta else self._core.next_response

        async def read() -> None:
            try:
                async for request in request_iterator:
                    if not holder:
                        node = request.node.id or context.peer()
                        holder.append(EnvoyStream(node=node, delta=delta))
                        self._core.add(holder[0])
                        first.set()
                    handle(holder[0], request)
            finally:
                closed.set()
                if holder:
                    holder[0].wake.set()

        reader = asyncio.create_task(read())
        try:
            await asyncio.wait(
                [asyncio.create_task(first.wait()), asyncio.create_task(closed.wait())],
                return_when=asyncio.FIRST_COMPLETED,
            )
            if not holder:
                return
            stream = holder[0]
            log.info(
                "envoy connected",
                extra={"node": stream.node, "peer": context.peer(), "delta": delta},
            )
            while not closed.is_set():
                await stream.wake.wait()
                stream.wake.clear()
                while (response := respond(stream)) is not None:
                    yield response
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            if stream is not None:
                log.info("envoy disconnected", extra={"node": stream.node})
                self._core.remove(stream)


class GrpcXdsServer:
    """The real ADS server on grpc.aio."""

    def __init__(self, observer: XdsObserver, host: str, port: int) -> None:
        self._core = _Core(observer)
        self._host = host
        self._port = port
        self._server: grpc.aio.Server | None = None

    @property
    def streams(self) -> list[EnvoyStream]:
        return self._core.streams

    def publish(self, snapshot: Snapshot, sequence: int) -> None:
        self._core.publish(snapshot, sequence)

    async def start(self) -> int:
        self._server = grpc.aio.server(
            options=[
                # Envoys keep their stream for hours: keepalives notice a dead peer.
                ("grpc.keepalive_time_ms", 30_000),
                ("grpc.keepalive_timeout_ms", 10_000),
                ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
                ("grpc.max_send_message_length", 512 * 1024 * 1024),
            ]
        )
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(
            _Servicer(self._core), self._server
        )
        port = self._server.add_insecure_port(f"{self._host}:{self._port}")
        await self._server.start()
        self._port = int(port)
        return self._port

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=1.0)


class FakeEnvoy:
    """An in-memory Envoy for the fake server: subscribes to everything it is sent and ACKs it,
    unless ``refuse`` says otherwise (returns an error message for a NACK)."""

    def __init__(self, node: str, delta: bool = False) -> None:
        self.node = node
        self.delta = delta
        self.refuse: dict[str, str] = {}
        """resource name -> error message to NACK with when it is sent."""
        self.received: list[tuple[str, list[str]]] = []


class FakeXdsServer:
    """Same contract as :class:`GrpcXdsServer`, with in-process Envoys that answer at once."""

    def __init__(self, observer: XdsObserver) -> None:
        self._core = _Core(observer)
        self._envoys: dict[int, tuple[EnvoyStream, FakeEnvoy]] = {}

    @property
    def streams(self) -> list[EnvoyStream]:
        return self._core.streams

    def publish(self, snapshot: Snapshot, sequence: int) -> None:
        self._core.publish(snapshot, sequence)
        self._drive()

    async def start(self) -> int:
        return 0

    async def stop(self) -> None:
        for stream, _ in list(self._envoys.values()):
            self._core.remove(stream)
        self._envoys.clear()

    def connect(self, envoy: FakeEnvoy) -> EnvoyStream:
        stream = EnvoyStream(node=envoy.node, delta=envoy.delta)
        self._core.add(stream)
        self._envoys[id(stream)] = (stream, envoy)
        for type_url in TYPES:
            if envoy.delta:
                self._core.handle_delta_request(
                    stream, discovery_pb2.DeltaDiscoveryRequest(type_url=type_url)
                )
            else:
                self._core.handle_request(stream, discovery_pb2.DiscoveryRequest(type_url=type_url))
        self._drive()
        return stream

    def disconnect(self, stream: EnvoyStream) -> None:
        self._envoys.pop(id(stream), None)
        self._core.remove(stream)

    def _drive(self) -> None:
        snapshot, _ = self._core.snapshot
        for stream, envoy in list(self._envoys.values()):
            for _ in range(1000):
                # The fake subscribes to every named resource of the snapshot, as an Envoy does
                # once listeners and clusters reference them.
                if snapshot is not None:
                    for type_url in TYPES:
                        wanted = set(snapshot.resources.get(type_url, {}))
                        resubscribe(stream.states[type_url], wanted)
                step = self._core.next_push(stream)
                if step is None:
                    break
                push, nonce, sequence = step
                names = [r.name for r in push.resources]
                envoy.received.append((push.type_url, names))
                refused = [envoy.refuse[n] for n in names if n in envoy.refuse]
                error = refused[0] if refused else None
                if envoy.delta:
                    delta = discovery_pb2.DeltaDiscoveryRequest(
                        type_url=push.type_url, response_nonce=nonce
                    )
                    if error is not None:
                        delta.error_detail.message = error
                    self._core.handle_delta_request(stream, delta)
                    continue
                # A SotW request names the whole subscription, ACK or NACK alike.
                request = discovery_pb2.DiscoveryRequest(
                    type_url=push.type_url,
                    response_nonce=nonce,
                    version_info=str(sequence),
                    resource_names=sorted(stream.states[push.type_url].subscribed),
                )
                if error is not None:
                    request.error_detail.message = error
                self._core.handle_request(stream, request)

"""Wiring: domain and backend events -> validation -> Envoy resources -> ADS -> l7.* events.

Level-triggered: the newest generation per key wins (LatestByKey); a domain leaves Envoy only on
an explicit domain.deleted. The ADS server starts only after the current state was replayed from
the bus, so a restarted control plane never hands its Envoys an empty configuration.

A domain that fails validation, or whose new configuration an Envoy NACKs, is rejected alone: the
last configuration of that domain that was good stays in Envoy, and every other domain proceeds.
When a NACKed response changed several domains at once, they are retried one at a time
(probation) so the refusal lands on the domain that caused it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable

from ingress_events import catalogue as c
from ingress_events.bus import Consumer, ConsumerSpec
from ingress_events.envelope import Envelope
from ingress_events.generation import GenerationClock
from ingress_events.state import LatestByKey
from ingress_runtime import ServiceContext, cancel_and_wait

from .adapters.files import FileSetWriter, FileXdsServer
from .adapters.kube_secrets import KubernetesSecretStore, kube_configuration
from .adapters.secrets import DirectorySecretStore, SecretStore
from .adapters.xds import EnvoyStream, GrpcXdsServer, XdsObserver, XdsServer
from .domain.layout import FileLayout
from .domain.model import SecretMaterial
from .domain.push import Push
from .domain.resources import (
    LISTENER,
    ROUTE,
    SCOPED_ROUTE,
    BackendKey,
    BuildCache,
    BuildOptions,
    Snapshot,
    build_snapshot,
    http_route_names,
)
from .domain.validate import secret_name, validate_domain
from .settings import L7ConfigSettings

Clock = Callable[[], dt.datetime]

GATHER_SECONDS = 0.002
"""How long an isolated change waits for the events that travel with it before a build."""


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class L7ConfigApp(XdsObserver):
    def __init__(
        self,
        ctx: ServiceContext[L7ConfigSettings],
        *,
        xds: Callable[[XdsObserver], XdsServer] | None = None,
        secrets: SecretStore | None = None,
        clock: Clock = _utcnow,
    ) -> None:
        self._ctx = ctx
        self._log = ctx.log
        s = ctx.settings
        layout: FileLayout | None = None
        if s.mode == "file":
            layout = FileLayout(s.files_envoy_root or str(s.files_dir.absolute()))
        self._options = BuildOptions(
            listen_address=s.listen_address,
            http_port=s.http_port,
            https_port=s.https_port,
            https_redirect_port=s.https_redirect_port,
            access_log=s.access_log,
            local_locality_weight=s.local_locality_weight,
            files=layout,
            http_scopes=s.http_scopes,
        )
        self._min_envoys = s.min_envoys
        if xds is not None:
            self._xds: XdsServer = xds(self)
        elif layout is not None:
            # No Envoy reports back in file mode: written is as applied as it gets.
            self._xds = FileXdsServer(FileSetWriter(s.files_dir), layout)
            self._min_envoys = 0
        else:
            self._xds = GrpcXdsServer(self, s.xds_host, s.xds_port)
        if secrets is None and s.secrets_source == "kubernetes":
            secrets = KubernetesSecretStore(
                kube_configuration(s.kube_api_url, s.kube_token_file, s.kube_ca_file)
            )
        self._secrets = secrets or DirectorySecretStore(s.secrets_dir)
        self._clock = clock
        self._generations = GenerationClock()
        self._latest: LatestByKey[c.Event] = LatestByKey()
        self._desired: dict[str, c.DomainDesired] = {}
        self._backends: dict[BackendKey, c.BackendEndpoints] = {}
        self._good: dict[str, c.DomainDesired] = {}
        """Per host, the newest valid generation: what should be in Envoy."""
        self._confirmed: dict[str, c.DomainDesired] = {}
        """Per host, the generation every Envoy ACKed: the last good one."""
        self._materials: dict[tuple[str, str], SecretMaterial] = {}
        self._rejected: dict[str, int] = {}
        self._applied: dict[str, int] = {}
        self._unapplied: set[str] = set()
        """Hosts of the current snapshot whose generation is not applied yet: what an ACK may
        complete. Made at each new snapshot (its generations change only there), so an ACK
        looks at these and not at every domain (at 10,000 domains, every ACK went through all
        of them)."""
        self._probation: list[str] = []
        self._removing: set[str] = set()
        self._dirty: set[str] = set()
        self._last_out: dict[str, int] = {}
        self._snapshot: Snapshot | None = None
        self._snapshot_domains: dict[str, c.DomainDesired] = {}
        """The domains the current snapshot was built from: what an Envoy holding it holds."""
        self._build_cache = BuildCache()
        """The parts of the last build: a change rebuilds only what it touched."""
        self._sequence = 0
        self._wake = asyncio.Event()
        self._outbox: asyncio.Queue[c.Event] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._consumers: list[Consumer] = []
        self.xds_port = 0
        self.built = asyncio.Event()
        """Set after every rebuild (tests and the benchmark wait on it)."""

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        ready = self._ctx.readiness
        for condition in ("state-replayed", "xds-serving"):
            ready.require(condition)
        bus = self._ctx.bus
        if isinstance(self._secrets, KubernetesSecretStore):
            # The Secret cache is complete before the first build: a restart never rejects a
            # domain because its Secret was not listed yet.
            self._secrets.on_change = self._secret_changed
            await self._secrets.start()
        for family in (c.Family.BACKEND, c.Family.DOMAIN):
            for envelope in (await bus.replay(family)).values():
                self._offer(envelope)
        self._rebuild()
        ready.set("state-replayed")
        self._tasks = [
            asyncio.create_task(self._reconcile_loop(), name="l7-reconcile"),
            asyncio.create_task(self._publish_loop(), name="l7-publish"),
        ]
        self.xds_port = await self._xds.start()
        ready.set("xds-serving")
        self._log.info("xds serving", port=self.xds_port, domains=len(self._desired))
        # Every replica serves its own Envoys, so each needs every event: durables per instance.
        instance = "".join(ch if ch.isalnum() else "-" for ch in self._ctx.settings.instance)
        for family in (c.Family.BACKEND, c.Family.DOMAIN):
            spec = ConsumerSpec(
                f"l7-config-{instance}-{family.value}"[:200],
                family,
                fetch_timeout_seconds=0.5,
            )
            self._consumers.append(await bus.consume(spec, self._handle))

    async def stop(self) -> None:
        for consumer in self._consumers:
            await consumer.stop()
        await self._xds.stop()
        await cancel_and_wait(self._tasks, self._log)
        while not self._outbox.empty():
            await self._ctx.bus.publish(self._outbox.get_nowait())
        if isinstance(self._secrets, KubernetesSecretStore):
            await self._secrets.stop()

    # ------------------------------------------------------------------ inputs

    def _offer(self, envelope: Envelope[c.Event]) -> None:
        if not self._latest.offer(envelope):
            return
        event = envelope.event
        if isinstance(event, c.DomainDesired | c.DomainDeleted):
            self._dirty.add(event.host)
        elif isinstance(event, c.BackendEndpoints):
            self._backends[(event.namespace, event.service, event.port)] = event
        elif isinstance(event, c.BackendDeleted):
            self._backends.pop((event.namespace, event.service, event.port), None)
        self._wake.set()

    def _secret_changed(self, namespace: str, name: str) -> None:
        """A Secret was created, rotated or deleted: check the domains that use it again."""
        hosts = [
            host
            for host, d in self._desired.items()
            if d.tls is not None
            and (d.tls.secret.namespace, d.tls.secret.name) == (namespace, name)
        ]
        if hosts:
            self._dirty.update(hosts)
            self._wake.set()

    async def _handle(self, envelope: Envelope[c.Event]) -> None:
        self._offer(envelope)

    async def _reconcile_loop(self) -> None:
        loop = asyncio.get_running_loop()
        window = self._ctx.settings.debounce_seconds
        last_build = -window
        while True:
            await self._wake.wait()
            # Leading edge: an isolated change builds after a short gather (events published
            # together arrive together); a burst (a relist, a rollout's endpoint churn) builds
            # at most once per window.
            await asyncio.sleep(max(min(GATHER_SECONDS, window), last_build + window - loop.time()))
            self._wake.clear()
            try:
                # Only a build that gave the Envoys work opens a window: an event that changed
                # nothing (endpoints no domain uses yet) must not delay the one that follows.
                if self._rebuild():
                    last_build = loop.time()
            except Exception:
                self._log.exception("rebuild failed")

    async def _publish_loop(self) -> None:
        while True:
            event = await self._outbox.get()
            try:
                await self._ctx.bus.publish(event)
            except Exception:
                self._log.exception("publish failed; retrying", event_type=event.event_type())
                await asyncio.sleep(1.0)
                self._outbox.put_nowait(event)

    def _emit(self, event: c.Event) -> None:
        self._outbox.put_nowait(event)

    def _next_generation(self, host: str) -> int:
        generation = self._generations.next(self._last_out.get(host))
        self._last_out[host] = generation
        return generation

    # ------------------------------------------------------------------ planning

    def _reject(self, host: str, generation: int, reason: str, message: str) -> None:
        self._rejected[host] = generation
        self._log.warning(
            "domain rejected", host=host, generation=generation, reason=reason, message=message
        )
        self._emit(
            c.L7Rejected(
                generation=self._next_generation(host),
                host=host,
                observed_generation=generation,
                reason=reason,
                message=message[:4096],
            )
        )

    def _take_changes(self) -> None:
        for host in sorted(self._dirty):
            event = self._latest.get(c.Family.DOMAIN, (host,))
            if isinstance(event, c.DomainDeleted):
                self._desired.pop(host, None)
                self._rejected.pop(host, None)
                self._applied.pop(host, None)
                self._confirmed.pop(host, None)
                if host in self._probation:
                    self._probation.remove(host)
                if self._good.pop(host, None) is not None:
                    self._removing.add(host)
                else:
                    self._emit(c.L7Removed(generation=self._next_generation(host), host=host))
                continue
            if not isinstance(event, c.DomainDesired):
                continue
            self._desired[host] = event
            secrets = {}
            if event.tls is not None:
                ref = event.tls.secret
                secrets[secret_name(ref)] = self._secrets.read(ref.namespace, ref.name)
            problems = validate_domain(event, secrets, self._clock())
            if problems:
                self._reject(
                    host,
                    event.generation,
                    problems[0].reason,
                    "; ".join(p.message for p in problems),
                )
                continue
            self._rejected.pop(host, None)
            if event.tls is not None:
                material = secrets[secret_name(event.tls.secret)]
                assert isinstance(material, SecretMaterial)
                self._materials[(secret_name(event.tls.secret), event.tls.content_hash)] = material
            self._good[host] = event
            self._removing.discard(host)
        self._dirty.clear()

    def _effective(self) -> dict[str, c.DomainDesired]:
        effective = dict(self._good)
        # Only the head of the probation queue tries its new configuration; the others keep
        # their last good one until it is their turn.
        for host in self._probation[1:]:
            if host in self._confirmed:
                effective[host] = self._confirmed[host]
            else:
                effective.pop(host, None)
        return effective

    def _rebuild(self) -> bool:
        """Build and publish; True when the Envoys have something new to take."""
        self._take_changes()
        effective = self._effective()
        secrets: dict[str, SecretMaterial] = {}
        for domain in effective.values():
            if domain.tls is not None:
                name = secret_name(domain.tls.secret)
                material = self._materials.get((name, domain.tls.content_hash))
                if material is not None:
                    secrets[name] = material
        snapshot = build_snapshot(
            effective, self._backends, secrets, self._options, self._build_cache
        )
        if self._snapshot is not None and _same(self._snapshot, snapshot):
            self._check_progress()
            self.built.set()
            return False
        self._sequence += 1
        self._snapshot = snapshot
        self._snapshot_domains = effective
        self._unapplied = {
            host
            for host, generation in snapshot.generations.items()
            if self._applied.get(host) != generation
        }
        self._xds.publish(snapshot, self._sequence)
        self._check_progress()
        self.built.set()
        return True

    # ------------------------------------------------------------------ ADS feedback

    def on_ack(self, stream: EnvoyStream, push: Push, sequence: int) -> None:
        self._check_progress()

    def on_streams_changed(self) -> None:
        self._check_progress()

    def on_nack(
        self, stream: EnvoyStream, push: Push, sequence: int, changed: list[str], message: str
    ) -> None:
        snapshot = self._snapshot
        if snapshot is None:
            return
        names = {(push.type_url, n) for n in changed}
        suspects = sorted(
            host
            for host, deps in snapshot.deps.items()
            if deps & names
            and self._confirmed.get(host) is not self._good.get(host)
            and host in self._good
        )
        if not suspects:
            self._log.error("NACK not attributable to a domain", node=stream.node, error=message)
            return
        if self._probation and self._probation[0] in suspects:
            suspects = [self._probation[0]]
        if len(suspects) == 1:
            host = suspects[0]
            domain = self._good[host]
            self._reject(host, domain.generation, "EnvoyRejected", f"{stream.node}: {message}")
            if host in self._confirmed:
                self._good[host] = self._confirmed[host]
            else:
                del self._good[host]
            if host in self._probation:
                self._probation.remove(host)
        else:
            self._log.warning(
                "NACK of several domains: trying them one at a time", hosts=suspects, error=message
            )
            self._probation = suspects + [h for h in self._probation if h not in suspects]
        # Rebuild now, not after the debounce: the stream sends its next response as soon as
        # this returns, and it must not be the rest of the refused change.
        self._rebuild()

    def _holds(
        self, stream: EnvoyStream, snapshot: Snapshot, deps: frozenset[tuple[str, str]]
    ) -> bool:
        for type_url, name in deps:
            resource = snapshot.get(type_url, name)
            if resource is None or not stream.states[type_url].holds(name, resource.digest):
                return False
        return True

    def _check_progress(self) -> None:
        snapshot = self._snapshot
        if snapshot is None:
            return
        streams = self._xds.streams
        if self._removing and not streams:
            # No Envoy holds anything: the removal is complete as far as l7 is concerned.
            for host in sorted(self._removing):
                self._emit(c.L7Removed(generation=self._next_generation(host), host=host))
            self._removing.clear()
        if len(streams) < self._min_envoys:
            return
        for host in sorted(self._unapplied):
            generation = snapshot.generations[host]
            deps = snapshot.deps[host]
            if all(self._holds(s, snapshot, deps) for s in streams):
                self._unapplied.discard(host)
                self._applied[host] = generation
                # What the snapshot was built from, not _effective() again: that copies every
                # domain, and a start applies 10,000 hosts in one call (quadratic: seconds).
                built = self._snapshot_domains.get(host)
                if built is not None:
                    self._confirmed[host] = built
                if self._probation and self._probation[0] == host:
                    self._probation.pop(0)
                    self._wake.set()
                self._emit(
                    c.L7Applied(
                        generation=self._next_generation(host),
                        host=host,
                        observed_generation=generation,
                        envoys=len(streams),
                        config_version=str(self._sequence),
                    )
                )
        if self._removing:
            http = {(LISTENER, n) for n in snapshot.resources.get(LISTENER, {})}
            http |= {(SCOPED_ROUTE, n) for n in snapshot.resources.get(SCOPED_ROUTE, {})}
            http |= {(ROUTE, n) for n in http_route_names(self._options)}
            if all(self._holds(s, snapshot, frozenset(http)) for s in streams):
                for host in sorted(self._removing):
                    self._emit(c.L7Removed(generation=self._next_generation(host), host=host))
                self._removing.clear()

    # ------------------------------------------------------------------ introspection

    @property
    def snapshot(self) -> Snapshot | None:
        return self._snapshot

    @property
    def xds(self) -> XdsServer:
        return self._xds


def _same(a: Snapshot, b: Snapshot) -> bool:
    # Identity first: the incremental build returns unchanged resources, and the snapshot itself
    # when nothing changed, as the same objects.
    if a is b:
        return True
    if a.generations is not b.generations and a.generations != b.generations:
        return False
    for type_url in set(a.resources) | set(b.resources):
        ra, rb = a.resources.get(type_url, {}), b.resources.get(type_url, {})
        if ra is rb:
            continue
        if ra.keys() != rb.keys() or any(
            ra[n] is not rb[n] and ra[n].digest != rb[n].digest for n in ra
        ):
            return False
    return True

"""l7-config in-process against a real nats-server: domain and backend events in, l7.* events out,
each checked against the committed schemas by ``event_capture``. The Envoys are the in-memory fake
of the ADS contract (the real Envoy is exercised in services/l7-config/tests/test_l7_envoy.py)."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest
from ingress_events import catalogue as c
from ingress_events.bus import Bus
from ingress_l7_config.adapters.secrets import MemorySecretStore
from ingress_l7_config.adapters.xds import FakeEnvoy, FakeXdsServer, XdsObserver
from ingress_l7_config.app import L7ConfigApp
from ingress_l7_config.settings import L7ConfigSettings
from ingress_l7_config.testing import issue, make_ca
from ingress_testkit import EventCapture

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "services/l7-config/tests"))
from l7_fixtures import context, domain, endpoints, route, tls

pytestmark = pytest.mark.contract


def _of(capture: EventCapture, cls: type[c.Event], host: str) -> list[c.Event]:
    return [e for e in capture.of_type(cls) if getattr(e, "host", None) == host]


async def _app(bus: Bus, store: MemorySecretStore) -> tuple[L7ConfigApp, FakeXdsServer]:
    servers: list[FakeXdsServer] = []

    def make(observer: XdsObserver) -> FakeXdsServer:
        servers.append(FakeXdsServer(observer))
        return servers[0]

    settings = L7ConfigSettings(debounce_seconds=0.005, instance=f"ct-{uuid.uuid4().hex[:6]}")
    app = L7ConfigApp(context(bus, settings), xds=make, secrets=store)
    await app.start()
    return app, servers[0]


async def test_applied_rejected_removed(bus: Bus, event_capture: EventCapture) -> None:
    store = MemorySecretStore()
    ca = make_ca()
    cert, key = issue(ca, ["tls.example.com"])
    store.secrets["shop/good-tls"] = {"tls.crt": cert, "tls.key": key}
    store.secrets["shop/opaque"] = {"password": b"hunter2"}
    app, xds = await _app(bus, store)
    try:
        envoy = FakeEnvoy("envoy-1")
        xds.connect(envoy)
        await bus.publish(endpoints("web", 8080))
        ok = domain("ok.example.com", [route("/", "Prefix", "web")])
        secure = domain(
            "tls.example.com", [route("/", "Prefix", "web")], tls=tls("good-tls", "a" * 64)
        )
        missing = domain(
            "missing.example.com", [route("/", "Prefix", "web")], tls=tls("nope", "b" * 64)
        )
        opaque = domain(
            "opaque.example.com", [route("/", "Prefix", "web")], tls=tls("opaque", "c" * 64)
        )
        for event in (ok, secure, missing, opaque):
            await bus.publish(event)

        def applied(d: c.DomainDesired) -> object:
            return lambda x: (
                isinstance(x.envelope.event, c.L7Applied)
                and x.envelope.event.host == d.host
                and x.envelope.event.observed_generation == d.generation
            )

        for d in (ok, secure):
            [hit] = await event_capture.wait_for(applied(d))  # type: ignore[arg-type]
            assert hit.envelope.event.envoys == 1  # type: ignore[attr-defined]
        reasons = {}
        for d in (missing, opaque):
            [hit] = await event_capture.wait_for(
                lambda x, d=d: (
                    isinstance(x.envelope.event, c.L7Rejected) and x.envelope.event.host == d.host
                )
            )
            event = hit.envelope.event
            assert isinstance(event, c.L7Rejected) and event.observed_generation == d.generation
            reasons[d.host] = (event.reason, event.message)
        assert reasons == {
            "missing.example.com": ("SecretNotFound", "Secret shop/nope does not exist"),
            "opaque.example.com": (
                "SecretNotTls",
                "Secret shop/opaque is not a TLS Secret (it needs tls.crt and tls.key)",
            ),
        }
        snapshot = app.snapshot
        assert snapshot is not None and set(snapshot.generations) == {ok.host, secure.host}

        # Envoy refuses the next version of ok.example.com: rejected with its words, the last
        # good generation stays configured, the other domains are untouched.
        envoy.refuse["http"] = "Proto constraint validation failed (test refusal)"
        bad = domain("ok.example.com", [route("/v2", "Prefix", "web")])
        await bus.publish(bad)
        [hit] = await event_capture.wait_for(
            lambda x: (
                isinstance(x.envelope.event, c.L7Rejected)
                and x.envelope.event.observed_generation == bad.generation
            )
        )
        event = hit.envelope.event
        assert isinstance(event, c.L7Rejected)
        assert (event.reason, event.message) == (
            "EnvoyRejected",
            "envoy-1: Proto constraint validation failed (test refusal)",
        )
        envoy.refuse.clear()
        await bus.publish(endpoints("web", 8081))  # any change: the next push must go through
        later = domain("later.example.com", [route("/", "Prefix", "web")])
        await bus.publish(later)
        await event_capture.wait_for(applied(later))  # type: ignore[arg-type]
        assert app.snapshot is not None and app.snapshot.generations[ok.host] == ok.generation

        await bus.publish(c.DomainDeleted(generation=secure.generation + 1, host=secure.host))
        await event_capture.wait_for(
            lambda x: (
                isinstance(x.envelope.event, c.L7Removed) and x.envelope.event.host == secure.host
            )
        )
        assert app.snapshot is not None and secure.host not in app.snapshot.generations
        # Exactly one applied per accepted generation: converged reconciles emit nothing more.
        assert len(_of(event_capture, c.L7Applied, ok.host)) == 1
    finally:
        await app.stop()


async def test_restart_replays_state_before_serving(bus: Bus, event_capture: EventCapture) -> None:
    """A restarted l7-config rebuilds the whole configuration from the bus before any Envoy can
    connect: an Envoy never sees an empty snapshot."""
    store = MemorySecretStore()
    await bus.publish(endpoints("web", 8080))
    d = domain("replayed.example.com", [route("/", "Prefix", "web")])
    await bus.publish(d)
    app, xds = await _app(bus, store)
    try:
        assert app.snapshot is not None and app.snapshot.generations == {d.host: d.generation}
        xds.connect(FakeEnvoy("envoy-late"))
        await event_capture.wait_for(
            lambda x: isinstance(x.envelope.event, c.L7Applied) and x.envelope.event.host == d.host
        )
    finally:
        await app.stop()

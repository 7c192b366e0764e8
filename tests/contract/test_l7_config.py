"""l7-config in-process against a real nats-server: domain and backend events in, l7.* events out,
each checked against the committed schemas by ``event_capture``. The Envoys are the in-memory fake
of the ADS contract (the real Envoy is exercised in services/l7-config/tests/test_l7_envoy.py)."""

from __future__ import annotations

import asyncio
import sys
import uuid
from pathlib import Path

import pytest
from ingress_events import catalogue as c
from ingress_events.bus import Bus
from ingress_l7_config.adapters.secrets import MemorySecretStore
from ingress_l7_config.adapters.xds import FakeEnvoy, FakeXdsServer, XdsObserver
from ingress_l7_config.app import L7ConfigApp
from ingress_l7_config.domain.resources import http_scope, http_scope_routes
from ingress_l7_config.settings import L7ConfigSettings
from ingress_l7_config.testing import issue, make_ca
from ingress_testkit import EventCapture

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "services/l7-config/tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "services/ingress-watcher/tests"))
from kube_apiserver import LocalApiServer
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


@pytest.mark.parametrize("delta", [True, False], ids=["delta", "sotw"])
async def test_applied_rejected_removed(bus: Bus, event_capture: EventCapture, delta: bool) -> None:
    store = MemorySecretStore()
    ca = make_ca()
    cert, key = issue(ca, ["tls.example.com"])
    store.secrets["shop/good-tls"] = {"tls.crt": cert, "tls.key": key}
    store.secrets["shop/opaque"] = {"password": b"hunter2"}
    app, xds = await _app(bus, store)
    try:
        envoy = FakeEnvoy("envoy-1", delta=delta)
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
        ok_table = http_scope_routes(http_scope(ok.host, L7ConfigSettings().http_scopes))
        envoy.refuse[ok_table] = "Proto constraint validation failed (test refusal)"
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


async def test_file_mode_writes_the_file_set_and_reports_applied(
    bus: Bus, event_capture: EventCapture, tmp_path: Path
) -> None:
    """File mode: no ADS server, no Envoy streams; l7.applied (envoys=0) once the domain's files
    are written, a bad domain rejected without touching the files, l7.removed after its files
    are gone."""
    settings = L7ConfigSettings(
        mode="file",
        files_dir=tmp_path / "xds",
        debounce_seconds=0.005,
        instance=f"ctf-{uuid.uuid4().hex[:6]}",
    )
    app = L7ConfigApp(context(bus, settings), secrets=MemorySecretStore())
    await app.start()
    try:
        assert app.xds_port == 0
        await bus.publish(endpoints("web", 8080))
        good = domain("file.example.com", [route("/", "Prefix", "web")])
        bad = domain(
            "badfile.example.com", [route("/", "Prefix", "web")], tls=tls("absent", "c" * 64)
        )
        await bus.publish(good)
        await bus.publish(bad)
        [applied] = await event_capture.wait_for(
            lambda x: (
                isinstance(x.envelope.event, c.L7Applied) and x.envelope.event.host == good.host
            )
        )
        assert isinstance(applied.envelope.event, c.L7Applied)
        assert applied.envelope.event.envoys == 0
        [rejected] = await event_capture.wait_for(
            lambda x: (
                isinstance(x.envelope.event, c.L7Rejected) and x.envelope.event.host == bad.host
            )
        )
        assert isinstance(rejected.envelope.event, c.L7Rejected)
        assert rejected.envelope.event.reason == "SecretNotFound"
        routes = (tmp_path / "xds/core/rds-http.json").read_text()
        assert good.host in routes and bad.host not in routes
        assert (tmp_path / "xds/endpoints/shop_web_80.json").is_file()

        await bus.publish(c.DomainDeleted(generation=good.generation + 1, host=good.host))
        await event_capture.wait_for(
            lambda x: (
                isinstance(x.envelope.event, c.L7Removed) and x.envelope.event.host == good.host
            )
        )
        assert good.host not in (tmp_path / "xds/core/rds-http.json").read_text()
        assert not (tmp_path / "xds/endpoints/shop_web_80.json").exists()
    finally:
        await app.stop()


async def test_tls_material_from_the_kubernetes_api(bus: Bus, event_capture: EventCapture) -> None:
    """L7_CONFIG_SECRETS_SOURCE=kubernetes against the local API server: a domain whose Secret
    does not exist yet is rejected, and applies as soon as the Secret is created (the watch
    re-checks the domains using it); a rotation reaches the SDS resource."""
    import base64
    import hashlib

    api = await LocalApiServer(bookmark_interval=0.1).start()
    ca = make_ca()
    settings = L7ConfigSettings(
        secrets_source="kubernetes",
        kube_api_url=api.url,
        debounce_seconds=0.005,
        instance=f"ctk-{uuid.uuid4().hex[:6]}",
    )
    servers: list[FakeXdsServer] = []

    def make(observer: XdsObserver) -> FakeXdsServer:
        servers.append(FakeXdsServer(observer))
        return servers[0]

    app = L7ConfigApp(context(bus, settings), xds=make)
    host = "kube.example.com"

    async def put_secret(cert: bytes, key: bytes) -> str:
        await api.put(
            {
                "kind": "Secret",
                "metadata": {"namespace": "shop", "name": "kube-tls"},
                "type": "kubernetes.io/tls",
                "data": {
                    "tls.crt": base64.b64encode(cert).decode(),
                    "tls.key": base64.b64encode(key).decode(),
                },
            }
        )
        return hashlib.sha256(cert + key).hexdigest()

    await app.start()
    try:
        servers[0].connect(FakeEnvoy("envoy-k"))
        await bus.publish(endpoints("web", 8080))
        early = domain(host, [route("/", "Prefix", "web")], tls=tls("kube-tls", "d" * 64))
        await bus.publish(early)
        [hit] = await event_capture.wait_for(
            lambda x: isinstance(x.envelope.event, c.L7Rejected) and x.envelope.event.host == host
        )
        assert hit.envelope.event.reason == "SecretNotFound"  # type: ignore[attr-defined]

        cert, key = issue(ca, [host])
        await put_secret(cert, key)
        [hit] = await event_capture.wait_for(
            lambda x: isinstance(x.envelope.event, c.L7Applied) and x.envelope.event.host == host
        )
        assert hit.envelope.event.observed_generation == early.generation  # type: ignore[attr-defined]
        snapshot = app.snapshot
        assert snapshot is not None
        sds = snapshot.get(
            "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret", "shop/kube-tls"
        )
        assert sds is not None
        assert sds.message.tls_certificate.certificate_chain.inline_bytes == cert

        new_cert, new_key = issue(ca, [host])
        digest = await put_secret(new_cert, new_key)
        await bus.publish(domain(host, [route("/", "Prefix", "web")], tls=tls("kube-tls", digest)))

        def rotated() -> bool:
            snap = app.snapshot
            res = snap and snap.get(
                "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
                "shop/kube-tls",
            )
            return (
                bool(res) and res.message.tls_certificate.certificate_chain.inline_bytes == new_cert
            )  # type: ignore[union-attr]

        for _ in range(200):
            if rotated():
                break
            await asyncio.sleep(0.025)
        assert rotated()
    finally:
        await app.stop()
        await api.stop()

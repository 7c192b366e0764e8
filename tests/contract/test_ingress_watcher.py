"""ingress-watcher in-process against a real nats-server: manifests in, events out, every event
checked against the committed schemas by ``event_capture``."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import structlog
from ingress_events import catalogue as c
from ingress_events.bus import Bus
from ingress_runtime import Readiness, ServiceContext
from ingress_testkit.capture import Captured, EventCapture
from ingress_watcher.app import WatcherApp
from ingress_watcher.domain.plan import Stamp
from ingress_watcher.settings import WatcherSettings

pytestmark = pytest.mark.contract

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _context(bus: Bus, manifests: Path) -> ServiceContext[WatcherSettings]:
    settings = WatcherSettings(
        manifests_dir=manifests, poll_interval_seconds=0.05, debounce_seconds=0.01
    )
    return ServiceContext(
        name="ingress-watcher",
        settings=settings,
        bus=bus,
        readiness=Readiness(),
        log=structlog.get_logger("ingress-watcher"),
    )


@pytest.fixture
def manifests(tmp_path: Path) -> Path:
    target = tmp_path / "manifests"
    shutil.copytree(EXAMPLES, target)
    return target


@pytest.fixture
async def app(bus: Bus, manifests: Path) -> AsyncIterator[WatcherApp]:
    watcher = WatcherApp(_context(bus, manifests))
    await watcher.start()
    try:
        yield watcher
    finally:
        await watcher.stop()


def _is(cls: type[c.Event], **fields: object) -> object:
    def match(captured: Captured) -> bool:
        event = captured.envelope.event
        return isinstance(event, cls) and all(getattr(event, k) == v for k, v in fields.items())

    return match


async def test_examples_become_the_desired_state(
    app: WatcherApp, event_capture: EventCapture
) -> None:
    [shop] = await event_capture.wait_for(_is(c.DomainDesired, host="shop.example.com"))
    domain = shop.envelope.event
    assert isinstance(domain, c.DomainDesired)
    assert domain.owner_namespace == "shop"
    assert domain.ingress_class == "ingress-domain"
    assert [(r.path, r.path_type, r.source.namespace) for r in domain.routes] == [
        ("/", "Prefix", "shop"),
        ("/feed", "Prefix", "blog"),
        ("/healthz", "Exact", "shop"),
    ]
    assert domain.routes[0].backends[0].backend == c.BackendRef(
        namespace="shop", service="web", port=80
    )
    assert domain.routes[0].timeouts == c.RouteTimeouts(request_seconds=30.0)
    assert domain.tls is not None and domain.tls.secret.name == "shop-tls"
    assert len(domain.tls.content_hash) == 64
    assert domain.http_redirect_to_https is True
    assert domain.dns.ttl_seconds == 60

    [web] = await event_capture.wait_for(_is(c.BackendEndpoints, service="web"))
    backend = web.envelope.event
    assert isinstance(backend, c.BackendEndpoints)
    assert [(e.address, e.port, e.ready) for e in backend.endpoints] == [
        ("127.0.0.11", 18080, True),
        ("127.0.0.12", 18080, True),
    ]
    await event_capture.wait_for(_is(c.LoadBalancerServiceDesired, service="echo"))
    await event_capture.wait_for(_is(c.PoolDesired, pool="local"))
    [peer] = await event_capture.wait_for(_is(c.PeerDesired, peer="tor-a"))
    assert isinstance(peer.envelope.event, c.PeerDesired)
    assert peer.envelope.event.password_hash is not None

    rejections = await event_capture.wait_for(_is(c.AdmissionRejected), count=2)
    by_name = {
        cap.envelope.event.object.name: cap.envelope.event  # type: ignore[attr-defined]
        for cap in rejections
    }
    event = by_name["take-checkout"]
    assert isinstance(event, c.AdmissionRejected)
    assert event.object.namespace == "blog"
    assert [p.reason for p in event.problems] == ["OwnershipDenied"]
    assert event.problems[0].winner is None
    assert event.component == "ingress-watcher"
    conflict = by_name["web-copy"]
    assert isinstance(conflict, c.AdmissionRejected)
    assert [p.reason for p in conflict.problems] == ["ClaimConflict"]
    assert conflict.problems[0].winner == c.ObjectRef(kind="Ingress", namespace="shop", name="web")
    assert conflict.observed_generation == 2
    # The loser contributes nothing, so it is not a source (and gets no VIP); the winner's
    # metadata.generation travels with it.
    assert [(s.name, s.generation) for s in domain.sources] == [("blog", None), ("web", 3)]
    # The rejected /checkout never reaches the owner's domain.
    assert all(r.path != "/checkout" for r in domain.routes)
    # No Secret material travels: only the reference and the hash.
    assert all(b"PRIVATE KEY" not in c.envelope.event.model_dump_json().encode() for c in [shop])


async def test_a_change_publishes_only_its_key_and_a_removal_a_tombstone(
    app: WatcherApp, event_capture: EventCapture, manifests: Path
) -> None:
    await asyncio.wait_for(app.synced.wait(), 10)
    await event_capture.wait_for(_is(c.DomainDesired, host="blog.example.com"))
    before = len(event_capture.events)
    first = event_capture.of_type(c.DomainDesired)

    blog = (manifests / "blog.yaml").read_text()
    (manifests / "blog.yaml").write_text(blog.replace("127.0.0.22]", "127.0.0.24]"))
    [changed] = await event_capture.wait_for(
        lambda cap: (
            isinstance(cap.envelope.event, c.BackendEndpoints)
            and any(e.address == "127.0.0.24" for e in cap.envelope.event.endpoints)
        )
    )
    await asyncio.sleep(0.3)
    assert [cap.envelope.event.key() for cap in event_capture.events[before:]] == [
        ("blog", "blog", "80")
    ]
    old = next(e for e in first if e.key() == ("blog.example.com",))
    assert changed.envelope.event.generation > old.generation

    (manifests / "rejected.yaml").unlink()
    (manifests / "blog.yaml").write_text(
        blog.split("---\napiVersion: networking.k8s.io/v1\nkind: Ingress")[0]
    )
    [gone] = await event_capture.wait_for(_is(c.DomainDeleted, host="blog.example.com"))
    assert gone.envelope.event.generation > old.generation
    [shop] = await event_capture.wait_for(
        lambda cap: (
            isinstance(cap.envelope.event, c.DomainDesired)
            and cap.envelope.event.host == "shop.example.com"
            and all(r.path != "/feed" for r in cap.envelope.event.routes)
        )
    )
    assert {r.path for r in shop.envelope.event.routes} == {"/", "/healthz"}  # type: ignore[attr-defined]
    await event_capture.wait_for(_is(c.BackendDeleted, service="feed", port=8080))
    # The deleted Ingresses' verdicts are cleared, each above its verdict's generation.
    cleared = await event_capture.wait_for(_is(c.AdmissionCleared), count=3)
    names = {cap.envelope.event.object.name for cap in cleared}  # type: ignore[attr-defined]
    assert names == {"take-checkout", "web-copy", "blog"}
    for cap in cleared:
        verdicts = [
            e
            for e in [
                *event_capture.of_type(c.AdmissionAccepted),
                *event_capture.of_type(c.AdmissionRejected),
            ]
            if e.key() == cap.envelope.event.key()
        ]
        assert verdicts and cap.envelope.event.generation > max(v.generation for v in verdicts)


async def test_a_restarted_watcher_publishes_nothing_when_converged(
    bus: Bus, manifests: Path, event_capture: EventCapture
) -> None:
    first = WatcherApp(_context(bus, manifests))
    await first.start()
    await asyncio.wait_for(first.synced.wait(), 10)
    await first.stop()
    await event_capture.wait_for(_is(c.AdmissionRejected))
    settled = len(event_capture.events)
    assert settled >= 15

    second = WatcherApp(_context(bus, manifests))
    await second.start()
    try:
        # What the bus holds, read back a fetch at a time and kept as the planner keeps it:
        # the stamps made from the stored events must equal those of the desired state.
        kinds = {(k[0], type(e) is Stamp) for k, e in second.published.items()}
        assert {(f, True) for f in (c.Family.DOMAIN, c.Family.BACKEND, c.Family.ADMISSION)} <= kinds
        await asyncio.wait_for(second.synced.wait(), 10)
        await asyncio.sleep(0.3)
        assert len(event_capture.events) == settled
        # What status is made of: the domains as the first one published them.
        assert second.domains == first.domains and second.domains
    finally:
        await second.stop()


async def test_an_emptied_directory_deletes_nothing(
    bus: Bus, manifests: Path, event_capture: EventCapture
) -> None:
    app = WatcherApp(_context(bus, manifests))
    await app.start()
    try:
        await asyncio.wait_for(app.synced.wait(), 10)
        await event_capture.wait_for(_is(c.DomainDesired), count=2)
        for path in manifests.glob("*.yaml"):
            path.unlink()
        shutil.rmtree(manifests / "secrets")
        reconciles = app.reconciles
        for _ in range(100):
            if app.reconciles > reconciles:
                break
            await asyncio.sleep(0.05)
        assert app.reconciles > reconciles
        await asyncio.sleep(0.2)
        assert event_capture.of_type(c.DomainDeleted) == []
        assert event_capture.of_type(c.BackendDeleted) == []
    finally:
        await app.stop()


async def test_a_broken_file_keeps_its_last_good_content(
    app: WatcherApp, event_capture: EventCapture, manifests: Path
) -> None:
    await asyncio.wait_for(app.synced.wait(), 10)
    await event_capture.wait_for(_is(c.DomainDesired), count=2)
    (manifests / "blog.yaml").write_text("kind: [unclosed\n")
    await asyncio.sleep(0.5)
    assert event_capture.of_type(c.DomainDeleted) == []
    assert str(manifests / "blog.yaml") in app_directory_errors(app)


def app_directory_errors(app: WatcherApp) -> dict[str, str]:
    source = app._source
    return source.directory.errors  # type: ignore[attr-defined, no-any-return]

"""The full reconcile in parts: everything but the backends at once, then the backends a part at
a time, with only stamps of the published backends kept. Whatever the part size, it must
publish what one normalize of everything gives, and its deletes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import pytest
import structlog
from ingress_events import catalogue as c
from ingress_events.bus import Bus
from ingress_events.catalogue import Family
from ingress_runtime import Readiness, ServiceContext
from ingress_watcher import app as app_module
from ingress_watcher.adapters.publisher import InMemoryPublisher
from ingress_watcher.app import WatcherApp
from ingress_watcher.domain.normalize import Policy, normalize
from ingress_watcher.domain.plan import STAMPED, Stamp, same_state
from ingress_watcher.settings import WatcherSettings
from watcher_objects import base, domain, endpoint_slice, ingress, service

pytestmark = pytest.mark.unit

TEAMS = [f"team-{i}" for i in range(6)]


class BatchPublisher(InMemoryPublisher):
    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[c.Event]] = []

    async def publish(self, events: Sequence[c.Event]) -> None:
        self.batches.append(list(events))
        await super().publish(events)


def app_slice(ns: str, ready: int) -> dict[str, Any]:
    return endpoint_slice(
        ns,
        "app",
        [
            {"addresses": [f"10.0.{ready}.{i + 1}"], "conditions": {"ready": i < ready}}
            for i in range(3)
        ],
    )


def cluster(teams: list[str], ready: int = 2) -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = []
    for ns in teams:
        host = f"app.{ns}.example.com"
        objects += [
            domain(ns, host),
            service(ns, "app"),
            ingress(ns, "app", host, "/", service_name="app"),
            app_slice(ns, ready),
        ]
    return objects


def watcher(publisher: BatchPublisher) -> WatcherApp:
    settings = WatcherSettings.model_validate({"debounce_seconds": 0, "write_status": False})
    bus = cast(Bus, object())  # a reconcile publishes through the publisher only
    ctx = ServiceContext("ingress-watcher", settings, bus, Readiness(), structlog.get_logger())
    return WatcherApp(ctx, source=None, publisher=publisher)


def install(app: WatcherApp, objects: list[dict[str, Any]]) -> None:
    fresh = base(*objects)
    for kind, items in fresh.objects.items():
        app.store.replace(kind, items.values())


def assert_published_is(publisher: BatchPublisher, objects: list[dict[str, Any]]) -> None:
    desired = normalize(base(*objects).objects, Policy())
    live = {k: e for k, e in publisher.state.items() if type(e) not in c.TOMBSTONES}
    assert set(live) == set(desired)
    for key, event in desired.items():
        assert same_state(live[key], event), key


@pytest.mark.parametrize("part", [1, 2, 1000])
async def test_parts_publish_what_one_normalize_gives(
    part: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app_module, "BACKENDS_PER_PART", part)
    publisher = BatchPublisher()
    app = watcher(publisher)
    objects = cluster(TEAMS)
    install(app, objects)
    await app.reconcile(True)
    assert_published_is(publisher, objects)
    backend_batches = [
        [e for e in batch if e.family is Family.BACKEND] for batch in publisher.batches
    ]
    assert max(len(b) for b in backend_batches) == min(part, len(TEAMS))
    # The planner keeps stamps; the app keeps the domains as published, for status.
    assert all(isinstance(e, Stamp) == (k[0] in STAMPED) for k, e in app.published.items())
    assert Family.DOMAIN in STAMPED
    sent_domains = {e.host: e for e in publisher.state.values() if isinstance(e, c.DomainDesired)}
    assert app.domains == sent_domains and len(sent_domains) == len(TEAMS)
    assert await app.reconcile(True) == 0  # converged against the stamps

    # Endpoints change for two Services, two teams go away: updates and deletes, nothing else.
    changed = cluster(TEAMS[:2], ready=3) + cluster(TEAMS[2:4])
    install(app, changed)
    publisher.batches.clear()
    await app.reconcile(True)
    assert_published_is(publisher, changed)
    sent = [e for batch in publisher.batches for e in batch]
    backends = {(type(e).__name__, e.namespace) for e in sent if e.family is Family.BACKEND}
    assert backends == {
        ("BackendEndpoints", "team-0"),
        ("BackendEndpoints", "team-1"),
        ("BackendDeleted", "team-4"),
        ("BackendDeleted", "team-5"),
    }
    assert await app.reconcile(True) == 0


async def test_every_backend_vanishing_at_once_is_held(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(app_module, "BACKENDS_PER_PART", 2)
    publisher = BatchPublisher()
    app = watcher(publisher)
    install(app, cluster(TEAMS))
    await app.reconcile(True)
    publisher.batches.clear()
    # A relist that came back without any Ingress and Service looks like a broken source.
    install(app, [o for o in cluster(TEAMS) if o["kind"] not in ("Ingress", "Service")])
    await app.reconcile(True)
    sent = [e for batch in publisher.batches for e in batch]
    assert not [e for e in sent if isinstance(e, c.BackendDeleted | c.DomainDeleted)]


async def test_a_restart_against_the_full_bus_rebuilds_what_status_is_made_of() -> None:
    """The bus keeps every domain; a new process reads back only their stamps. Its first full
    reconcile publishes nothing, and the domains status is made of are the published ones,
    with their generations, in the app and in the status index."""
    publisher = BatchPublisher()
    first = watcher(publisher)
    install(first, cluster(TEAMS))
    await first.reconcile(True)

    second = watcher(publisher)  # the same bus
    second.published = await publisher.current()
    assert second.domains == {} and second.status_index.domains == {}
    install(second, cluster(TEAMS))
    assert await second.reconcile(True) == 0
    assert second.domains == first.domains
    assert second.status_index.domains == first.domains

"""The pure status computation and the Lease decision, table by table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ingress_events import catalogue as c
from ingress_events.catalogue import TOMBSTONES
from ingress_watcher.adapters.status import InMemoryStatusWriter
from ingress_watcher.domain.lease import decide, lease_spec, micro_time, released
from ingress_watcher.domain.normalize import Policy, normalize
from ingress_watcher.domain.plan import plan
from ingress_watcher.domain.status import (
    StatusIndex,
    Target,
    compute,
    compute_targets,
    status_patch,
)
from watcher_objects import base, domain, ingress, service

pytestmark = pytest.mark.unit

HOST = "shop.example.com"
G = 10**15
WEB = Target("Ingress", "team-a", "web")


def _vip(addresses: list[str] | None = None) -> c.Event:
    if addresses is None:
        return c.VipRejected(
            generation=G,
            owner=c.VipOwner(kind="domain", host=HOST),
            reason="PoolExhausted",
            message="no free address",
            observed_generation=1,
        )
    return c.VipAssigned(
        generation=G,
        owner=c.VipOwner(kind="domain", host=HOST),
        addresses=addresses,
        pool="p",
        ports=[c.PortSpec(port=80)],
        observed_generation=1,
    )


def _state(*objects: dict[str, Any]) -> tuple[Any, dict[Any, c.Event]]:
    store = base(*objects)
    desired = normalize(store.objects, Policy())
    result = plan(desired, {}, G)
    return store, {(e.family, e.key()): e for e in result.publish}


def _conds(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {x["type"]: (x["status"], x["reason"]) for x in status["conditions"]}


L7_OK = c.L7Applied(
    generation=G, host=HOST, observed_generation=2 * G, envoys=1, config_version="1"
)
L7_OLD = c.L7Applied(generation=G, host=HOST, observed_generation=1, envoys=1, config_version="0")
L7_BAD = c.L7Rejected(
    generation=G, host=HOST, observed_generation=2 * G, reason="EnvoyNack", message="bad"
)
DNS_OK = c.DnsPublished(
    generation=G,
    fqdn=HOST,
    zone="example.com",
    owner_id="x",
    records=[c.DnsRecord(record_type="A", values=["192.0.2.1"], ttl_seconds=60)],
    providers=["knot"],
    observed_generation=G,
)
L4_OK = c.L4Programmed(
    generation=G,
    node="n1",
    vip="192.0.2.1",
    dataplane="ipvs",
    services=[c.VirtualService(port=80, scheduler="mh", real_servers=1, ready_real_servers=1)],
    observed_generation=G,
)
ROUTE_OK = c.RouteAnnounced(
    generation=G, node="n1", vip="192.0.2.1", prefix="192.0.2.1/32", peers=["tor-a"]
)
ROUTE_NO_PEER = c.RouteAnnounced(generation=G, node="n1", vip="192.0.2.1", prefix="192.0.2.1/32")
ROUTE_GONE = c.RouteWithdrawn(
    generation=G, node="n1", vip="192.0.2.1", prefix="192.0.2.1/32", reason="NoReadyBackends"
)
EVERYTHING = [_vip(["192.0.2.1"]), DNS_OK, L7_OK, L4_OK, ROUTE_OK]


@pytest.mark.parametrize(
    ("reports", "ips", "expected"),
    [
        (
            [],
            [],
            {"VipAssigned": ("Unknown", "Pending"), "Ready": ("Unknown", "VipAssignedPending")},
        ),
        (
            [_vip()],
            [],
            {"VipAssigned": ("False", "PoolExhausted"), "Ready": ("False", "VipAssignedFailed")},
        ),
        (EVERYTHING, ["192.0.2.1"], {"Ready": ("True", "Ready"), "L7Applied": ("True", "Applied")}),
        (
            [*EVERYTHING[:2], L7_OLD, *EVERYTHING[3:]],
            ["192.0.2.1"],
            {"L7Applied": ("Unknown", "Pending"), "Ready": ("Unknown", "L7AppliedPending")},
        ),
        (
            [*EVERYTHING[:2], L7_BAD, *EVERYTHING[3:]],
            ["192.0.2.1"],
            {"L7Applied": ("False", "EnvoyNack")},
        ),
        (
            [*EVERYTHING[:4], ROUTE_GONE],
            ["192.0.2.1"],
            {"RouteAnnounced": ("False", "NoReadyBackends"), "DnsPublished": ("True", "Published")},
        ),
        (
            # BIRD exports the route before its session is up: no router has it yet.
            [*EVERYTHING[:4], ROUTE_NO_PEER],
            ["192.0.2.1"],
            {
                "RouteAnnounced": ("Unknown", "NoEstablishedPeer"),
                "Ready": ("Unknown", "RouteAnnouncedPending"),
            },
        ),
    ],
)
def test_ingress_conditions_follow_the_reports(
    reports: list[c.Event], ips: list[str], expected: dict[str, tuple[str, str]]
) -> None:
    store, published = _state(ingress("team-a", "web", HOST))
    verdicts = [e for e in published.values() if isinstance(e, c.AdmissionAccepted)]
    computed = compute(store.objects, Policy(), published, [*verdicts, *reports])
    status = computed.status[WEB]
    assert [x["ip"] for x in status["loadBalancer"]["ingress"]] == ips
    conds = _conds(status)
    assert conds["Accepted"] == ("True", "Accepted")
    for kind, value in expected.items():
        assert conds[kind] == value
    assert all(x["observedGeneration"] == 3 for x in status["conditions"])


def test_other_classes_get_nothing_and_rejections_become_warnings() -> None:
    store, published = _state(
        ingress("team-a", "web", HOST),
        ingress("team-a", "nginx", HOST, "/n", class_name="nginx"),
        ingress("team-b", "intruder", HOST, "/x"),
        service("team-a", "lb", type="LoadBalancer", loadBalancerClass="other/lb"),
    )
    reports = [e for e in published.values() if e.family is c.Family.ADMISSION]
    computed = compute(store.objects, Policy(), published, [*reports, _vip()])
    assert set(computed.status) == {WEB, Target("Ingress", "team-b", "intruder")}
    reasons = {(w.target.name, w.reason) for w in computed.warnings}
    assert reasons == {("intruder", "OwnershipDenied"), ("web", "PoolExhausted")}


def test_a_converged_status_is_not_written_again() -> None:
    store, published = _state(ingress("team-a", "web", HOST))
    desired = compute(store.objects, Policy(), published, EVERYTHING).status[WEB]
    first = status_patch(desired, None, "2026-01-01T00:00:00Z")
    assert first is not None
    assert status_patch(desired, first, "2026-01-02T00:00:00Z") is None
    # A changed stage keeps the other conditions' transition times.
    changed = compute(store.objects, Policy(), published, EVERYTHING[:-1]).status[WEB]
    second = status_patch(changed, first, "2026-01-03T00:00:00Z")
    assert second is not None
    times = {x["type"]: x["lastTransitionTime"] for x in second["conditions"]}
    assert times["VipAssigned"] == "2026-01-01T00:00:00Z"
    assert times["RouteAnnounced"] == "2026-01-03T00:00:00Z"


async def test_the_in_memory_writer_records_patches_and_events() -> None:
    store, published = _state(ingress("team-b", "intruder", HOST, "/x"))
    reports = [e for e in published.values() if e.family is c.Family.ADMISSION]
    computed = compute(store.objects, Policy(), published, reports)
    writer = InMemoryStatusWriter()
    target = Target("Ingress", "team-b", "intruder")
    patch = status_patch(computed.status[target], writer.current(target, None), "t")
    assert patch is not None
    await writer.patch(target, patch)
    await writer.event(computed.warnings[0], "t")
    assert status_patch(computed.status[target], writer.current(target, None), "u") is None
    assert writer.events[0]["involvedObject"]["name"] == "intruder"
    assert writer.events[0]["type"] == "Warning"


NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _lease(holder: str | None, renewed: datetime, duration: int = 15) -> dict[str, Any]:
    return {
        "spec": {
            "holderIdentity": holder,
            "renewTime": micro_time(renewed),
            "leaseDurationSeconds": duration,
        }
    }


@pytest.mark.parametrize(
    ("lease", "action"),
    [
        (None, "create"),
        (_lease("me", NOW - timedelta(seconds=100)), "renew"),
        (_lease("other", NOW - timedelta(seconds=5)), "wait"),
        (_lease("other", NOW - timedelta(seconds=16)), "take-over"),
        (_lease(None, NOW), "take-over"),
        (released(_lease("other", NOW), NOW), "take-over"),
    ],
)
def test_lease_decisions(lease: dict[str, Any] | None, action: str) -> None:
    assert decide(lease, "me", NOW) == action


def test_a_take_over_counts_a_transition() -> None:
    spec = lease_spec(_lease("other", NOW), "me", NOW, 15, "take-over")
    assert spec["holderIdentity"] == "me" and spec["leaseTransitions"] == 1
    renewed = lease_spec({"spec": spec}, "me", NOW + timedelta(seconds=5), 15, "renew")
    assert renewed["leaseTransitions"] == 1 and renewed["acquireTime"] == spec["acquireTime"]


# ---------------------------------------------------------------------------- incremental rounds

OTHER = "api.example.com"
NODES = ("n1", "n2")
ADDRESSES = ("192.0.2.1", "192.0.2.2")
OWNERS = (
    c.VipOwner(kind="domain", host=HOST),
    c.VipOwner(kind="domain", host=OTHER),
    c.VipOwner(kind="service", namespace="team-a", service="lb"),
)
OBJECT_REFS = (
    c.ObjectRef(kind="Ingress", namespace="team-a", name="web"),
    c.ObjectRef(kind="Ingress", namespace="team-a", name="api"),
    c.ObjectRef(kind="Service", namespace="team-a", name="lb"),
)


def _report_kinds() -> st.SearchStrategy[Any]:
    """Every kind of report status is made of, tombstones included, about our objects."""
    owners, nodes, vips = (
        st.sampled_from(OWNERS),
        st.sampled_from(NODES),
        st.sampled_from(ADDRESSES),
    )
    hosts = st.sampled_from([HOST, OTHER])
    refs = st.sampled_from(OBJECT_REFS)
    record = c.DnsRecord(record_type="A", values=["192.0.2.1"], ttl_seconds=60)
    served = [c.VirtualService(port=80, scheduler="mh", real_servers=1, ready_real_servers=1)]
    problem = [c.Problem(reason="Bad", field="spec", message="no")]
    return st.one_of(
        st.builds(
            lambda o, a, g: c.VipAssigned(
                generation=g,
                owner=o,
                addresses=a,
                pool="p",
                ports=[c.PortSpec(port=80)],
                observed_generation=1,
            ),
            owners,
            st.lists(vips, min_size=1, max_size=2, unique=True),
            st.just(1),
        ),
        st.builds(
            lambda o, g: c.VipRejected(
                generation=g, owner=o, reason="PoolExhausted", message="full", observed_generation=1
            ),
            owners,
            st.just(1),
        ),
        st.builds(lambda o, g: c.VipReleased(generation=g, owner=o), owners, st.just(1)),
        st.builds(
            lambda h, g: c.DnsPublished(
                generation=g,
                fqdn=h,
                zone="example.com",
                owner_id="x",
                records=[record],
                providers=["knot"],
                observed_generation=1,
            ),
            hosts,
            st.just(1),
        ),
        st.builds(
            lambda h, g: c.DnsRejected(generation=g, fqdn=h, reason="NoZone", message="none"),
            hosts,
            st.just(1),
        ),
        st.builds(lambda h, g: c.DnsRemoved(generation=g, fqdn=h), hosts, st.just(1)),
        st.builds(
            lambda h, og, g: c.L7Applied(
                generation=g, host=h, observed_generation=og, envoys=1, config_version="1"
            ),
            hosts,
            st.sampled_from([1, 3 * G]),
            st.just(1),
        ),
        st.builds(
            lambda h, g: c.L7Rejected(
                generation=g, host=h, observed_generation=3 * G, reason="EnvoyNack", message="x"
            ),
            hosts,
            st.just(1),
        ),
        st.builds(lambda h, g: c.L7Removed(generation=g, host=h), hosts, st.just(1)),
        st.builds(
            lambda n, v, g: c.L4Programmed(
                generation=g,
                node=n,
                vip=v,
                dataplane="ipvs",
                services=served,
                observed_generation=1,
            ),
            nodes,
            vips,
            st.just(1),
        ),
        st.builds(
            lambda n, v, g: c.L4NotReady(
                generation=g, node=n, vip=v, reason="NoReadyBackends", message="none"
            ),
            nodes,
            vips,
            st.just(1),
        ),
        st.builds(
            lambda n, v, g: c.L4Removed(generation=g, node=n, vip=v), nodes, vips, st.just(1)
        ),
        st.builds(
            lambda n, v, g, peers: c.RouteAnnounced(
                generation=g, node=n, vip=v, prefix=f"{v}/32", peers=peers
            ),
            nodes,
            vips,
            st.just(1),
            st.sampled_from([[], ["tor-a"]]),
        ),
        st.builds(
            lambda n, v, g: c.RouteWithdrawn(
                generation=g, node=n, vip=v, prefix=f"{v}/32", reason="NoReadyBackends"
            ),
            nodes,
            vips,
            st.just(1),
        ),
        st.builds(
            lambda comp, r, g: c.AdmissionAccepted(
                generation=g, component=comp, object=r, observed_generation=3
            ),
            st.sampled_from(["ipam", "l7-config"]),
            refs,
            st.just(1),
        ),
        st.builds(
            lambda comp, r, g: c.AdmissionRejected(
                generation=g, component=comp, object=r, observed_generation=3, problems=problem
            ),
            st.sampled_from(["ipam", "l7-config"]),
            refs,
            st.just(1),
        ),
        st.builds(
            lambda comp, r, g: c.AdmissionCleared(generation=g, component=comp, object=r),
            st.sampled_from(["ipam", "l7-config"]),
            refs,
            st.just(1),
        ),
        # A domain published again, or deleted (its Ingresses edited away).
        st.builds(lambda h: ("domain", h, True), hosts),
        st.builds(lambda h: ("domain", h, False), hosts),
    )


@settings(max_examples=150, deadline=None)
@given(st.lists(_report_kinds(), min_size=1, max_size=30))
def test_recomputing_only_whom_an_event_concerns_equals_recomputing_everything(
    steps: list[Any],
) -> None:
    """The watcher's status rounds recompute the targets :class:`StatusIndex` names for each
    report and domain event; after every step that must equal a round over every object."""
    store, published = _state(
        ingress("team-a", "web", HOST),
        ingress("team-a", "web-api", HOST, "/api", created="2026-01-04T00:00:00Z"),
        ingress("team-a", "api", OTHER),
        domain("team-a", OTHER),
        service("team-a", "lb", type="LoadBalancer"),
    )
    full_domains = {k: e for k, e in published.items() if k[0] is c.Family.DOMAIN}
    assert len(full_domains) == 2
    desired = dict(full_domains)
    reports: dict[Any, c.Event] = {}
    index = StatusIndex.of(desired, [])
    shown = compute_targets(store.objects, Policy(), index).status
    warned = {(w.target, w.key) for w in compute_targets(store.objects, Policy(), index).warnings}
    for generation, step in enumerate(steps, start=2 * G):
        if isinstance(step, tuple):
            _, host, present = step
            key = (c.Family.DOMAIN, (host,))
            event: c.Event = (
                full_domains[key] if present else c.DomainDeleted(generation=generation, host=host)
            )
            desired[key] = event
            touched = index.domain(event)
        else:
            event = step.model_copy(update={"generation": generation})
            reports[(event.family, event.key())] = event
            touched = index.report(event)
        partial = compute_targets(store.objects, Policy(), index, touched)
        for target in touched - set(partial.status):
            shown.pop(target, None)
        shown.update(partial.status)
        warned |= {(w.target, w.key) for w in partial.warnings}

        live = [e for e in reports.values() if type(e) not in TOMBSTONES]
        everything = compute(store.objects, Policy(), desired, live)
        assert shown == everything.status
        assert {(w.target, w.key) for w in everything.warnings} <= warned

"""The pure status computation and the Lease decision, table by table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from ingress_events import catalogue as c
from ingress_watcher.adapters.status import InMemoryStatusWriter
from ingress_watcher.domain.lease import decide, lease_spec, micro_time, released
from ingress_watcher.domain.normalize import Policy, normalize
from ingress_watcher.domain.plan import plan
from ingress_watcher.domain.status import Target, compute, status_patch
from watcher_objects import base, ingress, service

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
ROUTE_OK = c.RouteAnnounced(generation=G, node="n1", vip="192.0.2.1", prefix="192.0.2.1/32")
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

"""EndpointSlice-only changes take a fast path (only the backends of the changed slices'
Services are recomputed): after any sequence of slice changes it must give exactly what a full
normalize gives for every backend."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ingress_events.catalogue import Family
from ingress_watcher.domain.normalize import (
    Policy,
    backend_index,
    normalize,
    normalize_backends,
)
from ingress_watcher.domain.store import ObjectStore
from watcher_objects import base, domain, endpoint_slice, ingress, service

pytestmark = pytest.mark.unit

SERVICES = [("team-a", "web"), ("team-a", "api"), ("team-b", "web"), ("team-a", "lonely")]


def ready_slice(ns: str, svc: str, suffix: str, ready: list[bool], port: int = 8080) -> Any:
    return endpoint_slice(
        ns,
        svc,
        [
            {"addresses": [f"10.0.{len(suffix)}.{i + 1}"], "conditions": {"ready": r}}
            for i, r in enumerate(ready)
        ],
        name=f"{svc}-{suffix}",
        port=port,
    )


def cluster() -> ObjectStore:
    store = base(
        domain("team-b", "other.example.com"),
        service("team-a", "api"),
        service("team-a", "lonely"),
        ingress("team-a", "web", "shop.example.com", "/"),
        ingress("team-a", "api", "shop.example.com", "/api", service_name="api"),
        ingress("team-b", "web", "other.example.com", "/"),
        ready_slice("team-a", "web", "a", [True, True]),
    )
    store.take_changes()
    return store


change = st.tuples(
    st.sampled_from(SERVICES),
    st.sampled_from(["a", "bb"]),
    st.one_of(st.none(), st.lists(st.booleans(), max_size=3)),
    st.sampled_from([8080, 9090]),
)


@given(st.lists(change, min_size=1, max_size=6))
@settings(max_examples=60, deadline=None)
def test_slice_changes_fast_path_equals_full_normalize(changes: list[Any]) -> None:
    store = cluster()
    before = normalize(store.objects, Policy())
    backend_keys = backend_index(before)
    for (ns, svc), suffix, ready, port in changes:
        if ready is None:
            store.delete("EndpointSlice", (ns, f"{svc}-{suffix}"))
        else:
            store.upsert("EndpointSlice", ready_slice(ns, svc, suffix, ready, port))
    taken = store.take_changes()
    assert taken.endpoint_slices_only
    fast = normalize_backends(
        store.objects, Policy(), taken.slice_services, backend_keys, store.slices
    )
    # The index of slices by Service is what a rebuild from scratch gives.
    rebuilt = ObjectStore()
    rebuilt.replace("EndpointSlice", store.objects["EndpointSlice"].values())
    assert rebuilt.slices == store.slices
    full = normalize(store.objects, Policy())
    touched = {k for k in full if k[0] is Family.BACKEND and k[1][:2] in taken.slice_services}
    assert set(fast) == touched
    for key, event in fast.items():
        assert event == full[key]
    # Nothing else moved: slices never change anything but their Services' backends.
    assert {k: e for k, e in full.items() if k not in fast} == {
        k: e for k, e in before.items() if k not in fast
    }


def test_a_slice_moved_to_another_service_refreshes_both() -> None:
    store = cluster()
    moved = ready_slice("team-a", "api", "a", [True])
    moved["metadata"]["name"] = "web-a"  # same object, its service label now says api
    store.upsert("EndpointSlice", moved)
    taken = store.take_changes()
    assert taken.slice_services == {("team-a", "web"), ("team-a", "api")}


def test_other_changes_take_the_full_path() -> None:
    store = cluster()
    store.upsert("EndpointSlice", ready_slice("team-a", "web", "a", [False]))
    store.upsert("Service", service("team-a", "web", port=81))
    assert not store.take_changes().endpoint_slices_only
    store.replace("EndpointSlice", [])
    assert not store.take_changes().endpoint_slices_only
    assert not store.take_changes().endpoint_slices_only  # nothing changed at all

"""Ingress-only changes take a fast path: only the hosts the changed Ingresses name (and every
Ingress sharing those hosts, and their backends and admissions) are normalized again. After any
sequence of creates, edits and deletes it must give exactly what a full normalize gives, inside
its scope and outside it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from ingress_events import catalogue as c
from ingress_watcher.domain.normalize import (
    Policy,
    normalize,
    normalize_ingresses,
    normalize_with_index,
)
from ingress_watcher.domain.store import ObjectStore
from watcher_objects import base, domain, endpoint_slice, ingress, service, tls_secret

pytestmark = pytest.mark.unit

NAMES = [("team-a", "one"), ("team-a", "two"), ("team-b", "three"), ("team-a", "four")]
HOSTS = [
    "shop.example.com",
    "www.shop.example.com",
    "*.shop.example.com",
    "other.example.com",
    "Shop.Example.com.",  # the same host as the first, before normalization
    "bad..example.com",
]
SERVICES = ["web", "api", "missing"]
CREATED = ["2026-01-03T00:00:00Z", "2026-01-04T00:00:00Z", "2026-01-05T00:00:00Z"]


def cluster() -> ObjectStore:
    store = base(
        domain("team-b", "other.example.com"),
        service("team-a", "api"),
        tls_secret("team-a", "shop-tls"),
        # A LoadBalancer Service keeps web:80's backend alive whatever the Ingresses do.
        service("team-b", "web", type="LoadBalancer"),
        ingress("team-a", "one", "shop.example.com", "/"),
        ingress("team-b", "three", "other.example.com", "/", created="2026-01-04T00:00:00Z"),
    )
    store.take_changes()
    return store


@st.composite
def an_ingress(draw: st.DrawFn) -> dict[str, Any]:
    ns, name = draw(st.sampled_from(NAMES))
    hosts = draw(st.lists(st.sampled_from(HOSTS), min_size=1, max_size=2))
    annotations: dict[str, str] = {}
    if draw(st.integers(0, 4)) == 0:
        annotations["ingress-domain.io/canary-weight"] = draw(st.sampled_from(["20", "90", "x"]))
    obj = ingress(
        ns,
        name,
        hosts[0],
        draw(st.sampled_from(["/", "/api", "/x"])),
        service_name=draw(st.sampled_from(SERVICES)),
        path_type=draw(st.sampled_from(["Prefix", "Exact"])),
        created=draw(st.sampled_from(CREATED)),
        annotations=annotations,
        tls=[{"hosts": [hosts[0]], "secretName": draw(st.sampled_from(["shop-tls", "none"]))}]
        if draw(st.booleans())
        else None,
    )
    for host in hosts[1:]:
        obj["spec"]["rules"].append(
            {
                "host": host,
                "http": {
                    "paths": [
                        {
                            "path": "/",
                            "pathType": "Prefix",
                            "backend": {
                                "service": {
                                    "name": draw(st.sampled_from(SERVICES)),
                                    "port": {"number": 80},
                                }
                            },
                        }
                    ]
                },
            }
        )
    if draw(st.integers(0, 3)) == 0:
        obj["spec"]["defaultBackend"] = {
            "service": {"name": draw(st.sampled_from(SERVICES)), "port": {"number": 80}}
        }
    return obj


change = st.one_of(
    st.tuples(st.just("put"), an_ingress()),
    st.tuples(st.just("delete"), st.sampled_from(NAMES)),
)


@given(st.lists(st.lists(change, min_size=1, max_size=3), min_size=1, max_size=5))
@settings(max_examples=150, deadline=None)
def test_ingress_changes_fast_path_equals_full_normalize(rounds: list[list[Any]]) -> None:
    store = cluster()
    state, index = normalize_with_index(store.objects, Policy())
    for changes in rounds:
        for op, value in changes:
            if op == "put":
                store.upsert("Ingress", value)
            else:
                store.delete("Ingress", value)
        taken = store.take_changes()
        if not taken.kinds:
            continue
        assert taken.ingresses_only
        fast, scope = normalize_ingresses(
            store.objects, Policy(), taken.ingresses, index, store.slices
        )
        assert set(fast) <= scope
        # What a caller does: the scope's keys take the fast path's events, keys of the scope
        # it no longer produces go, and everything else stays as it was.
        state = {k: e for k, e in state.items() if k not in scope} | fast
        assert state == normalize(store.objects, Policy())
    # The index the fast path kept up is the one a full normalize builds.
    _, rebuilt = normalize_with_index(store.objects, Policy())
    assert dict(index.hosts_of) == dict(rebuilt.hosts_of)
    assert {h: k for h, k in index.ingresses_of.items() if k} == dict(rebuilt.ingresses_of)
    assert index.refs_of == rebuilt.refs_of
    assert {r: h for r, h in index.hosts_using.items() if h} == dict(rebuilt.hosts_using)


def test_a_new_ingress_on_its_own_host_touches_only_its_keys() -> None:
    store = cluster()
    _, index = normalize_with_index(store.objects, Policy())
    store.upsert(
        "Ingress", ingress("team-a", "two", "www.shop.example.com", "/", service_name="api")
    )
    taken = store.take_changes()
    fast, scope = normalize_ingresses(store.objects, Policy(), taken.ingresses, index, store.slices)
    assert scope == {
        (c.Family.DOMAIN, ("www.shop.example.com",)),
        (c.Family.ADMISSION, ("ingress-watcher", "Ingress", "team-a", "two")),
        (c.Family.BACKEND, ("team-a", "api", "80")),
    }
    assert set(fast) == scope


def test_other_kinds_take_the_full_path() -> None:
    store = cluster()
    store.upsert("Ingress", ingress("team-a", "two", "www.shop.example.com", "/"))
    store.upsert("Domain", domain("team-a", "new.example.com"))
    assert not store.take_changes().ingresses_only
    store.replace("Ingress", [])
    assert not store.take_changes().ingresses_only


def test_a_manifest_edit_changes_only_its_objects() -> None:
    from ingress_watcher.adapters.manifests import apply_difference

    store = cluster()
    ingresses = list(store.objects["Ingress"].values())
    edited = ingress("team-a", "one", "shop.example.com", "/api")
    assert apply_difference(store, "Ingress", [edited, ingresses[1]])
    taken = store.take_changes()
    assert taken.ingresses_only and taken.ingresses == {("team-a", "one")}
    # Unchanged: nothing recorded at all.
    assert apply_difference(store, "Ingress", [edited, ingresses[1]])
    assert not store.take_changes().kinds
    # A kind emptied at once goes wholesale (the full path holds such deletes).
    assert not apply_difference(store, "Ingress", [])
    assert store.take_changes().wholesale
    assert store.objects["Ingress"] == {}


def test_a_manifest_file_edit_beside_endpoint_slices_takes_the_ingress_path(
    tmp_path: Path,
) -> None:
    """The store keeps slices in a compact form: the directory must hand them over in that
    form, or every poll would see every slice as changed and take the full path (it did: the
    local topology's new domain took 1.2 s at 10,000 present instead of 0.13 s)."""
    from ingress_watcher.adapters.manifests import ManifestDirectory, apply_difference

    slice_doc = endpoint_slice(
        "team-a",
        "web",
        [{"addresses": ["10.0.0.1"], "conditions": {"ready": True}}],
        managedFields=[{"manager": "kubectl"}],
    )
    slice_doc["apiVersion"] = "discovery.k8s.io/v1"
    (tmp_path / "slices.yaml").write_text(yaml.safe_dump(slice_doc))
    web = ingress("team-a", "web", "shop.example.com", "/")
    (tmp_path / "web.yaml").write_text(yaml.safe_dump(web))
    directory = ManifestDirectory(tmp_path)
    store = base()
    for kind, items in directory.load().items():
        store.replace(kind, items)
    store.take_changes()

    edited = ingress("team-a", "web", "shop.example.com", "/api")
    (tmp_path / "web.yaml").write_text(yaml.safe_dump(edited))
    for kind, items in directory.load().items():
        assert apply_difference(store, kind, items)
    taken = store.take_changes()
    assert taken.kinds == {"Ingress"} and taken.ingresses_only

"""The store keeps objects in a slimmer form (no managedFields; an EndpointSlice's endpoints as
tuples). Normalize must give from it exactly what it gives from the objects as the API sent
them, whatever the endpoints hold, well-formed or not; and both must read an endpoint the way
the EndpointSlice API defines it."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ingress_events import catalogue as c
from ingress_events.catalogue import Family
from ingress_watcher.domain.normalize import Policy, normalize
from ingress_watcher.domain.objects import SliceEndpoint, stored
from watcher_objects import base, endpoint_slice, ingress, store

pytestmark = pytest.mark.unit

conditions = st.one_of(
    st.none(),
    st.just("ready"),  # not a mapping: treated as no conditions
    st.fixed_dictionaries(
        {},
        optional={
            "ready": st.sampled_from([True, False, None]),
            "serving": st.sampled_from([True, False, None]),
            "terminating": st.sampled_from([True, False, None]),
        },
    ),
)
target_refs = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {"name": st.sampled_from(["web-1", "", None])},
        optional={"kind": st.sampled_from(["Pod", ""]), "namespace": st.just("team-a")},
    ),
)
endpoints = st.one_of(
    st.just("not an endpoint"),
    st.fixed_dictionaries(
        {"addresses": st.lists(st.sampled_from(["10.0.0.1", "10.0.0.2", "fd00::1", "x"]))},
        optional={
            "conditions": conditions,
            "nodeName": st.sampled_from(["node-a", None, 7]),
            "zone": st.sampled_from(["z1", None]),
            "targetRef": target_refs,
        },
    ),
)


def web_slice(items: list[Any], address_type: str) -> dict[str, Any]:
    return endpoint_slice(
        "team-a",
        "web",
        items,
        address_type=address_type,
        managedFields=[{"manager": "kube-controller-manager", "fieldsV1": {}}],
    )


@settings(max_examples=150, deadline=None)
@given(st.lists(endpoints, max_size=5), st.sampled_from(["IPv4", "IPv6"]))
def test_normalize_reads_the_stored_form_as_the_api_form(
    items: list[Any], address_type: str
) -> None:
    raw = web_slice(items, address_type)
    via_store = base(ingress("team-a", "web", "shop.example.com", "/"), raw)
    as_sent = {kind: dict(objects) for kind, objects in via_store.objects.items()}
    as_sent["EndpointSlice"] = {("team-a", "web-x"): raw}
    assert normalize(via_store.objects, Policy()) == normalize(as_sent, Policy())


def test_the_stored_form_is_slim_and_idempotent() -> None:
    raw = web_slice(
        [
            {
                "addresses": ["10.0.0.1"],
                "conditions": {"ready": True},
                "nodeName": "node-a",
                "targetRef": {"kind": "Pod", "name": "web-1", "uid": "u-1"},
            }
        ],
        "IPv4",
    )
    kept = store(raw).objects["EndpointSlice"][("team-a", "web-x")]
    assert "managedFields" not in kept["metadata"]
    assert kept["endpoints"] == (
        SliceEndpoint(("10.0.0.1",), True, True, False, "node-a", None, ("Pod", "team-a", "web-1")),
    )
    assert stored("EndpointSlice", kept) == kept
    assert raw["metadata"]["managedFields"]  # the object given is left as it was


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        # discovery.k8s.io/v1: a nil ready or serving means ready; serving follows ready.
        ({}, {"ready": True, "serving": True, "terminating": False}),
        ({"conditions": "ready"}, {"ready": True, "serving": True, "terminating": False}),
        ({"conditions": {"ready": None}}, {"ready": True, "serving": True}),
        ({"conditions": {"ready": False}}, {"ready": False, "serving": False}),
        (
            {"conditions": {"ready": False, "serving": True, "terminating": True}},
            {"ready": False, "serving": True, "terminating": True},
        ),
        ({"conditions": {"ready": True, "serving": False}}, {"ready": True, "serving": False}),
        ({"nodeName": "node-a", "zone": "z1"}, {"node": "node-a", "zone": "z1"}),
        # A targetRef without namespace or kind is a Pod of the slice's namespace.
        (
            {"targetRef": {"name": "web-1"}},
            {"target": {"kind": "Pod", "namespace": "team-a", "name": "web-1"}},
        ),
        (
            {"targetRef": {"kind": "Pod", "namespace": "team-b", "name": "p"}},
            {"target": {"kind": "Pod", "namespace": "team-b", "name": "p"}},
        ),
        ({"targetRef": {"name": ""}}, {"target": None}),
    ],
)
@pytest.mark.parametrize("through_store", [True, False], ids=["stored", "as-sent"])
def test_an_endpoint_reads_as_the_api_defines_it(
    endpoint: dict[str, Any], expected: dict[str, Any], through_store: bool
) -> None:
    raw = web_slice([{"addresses": ["10.0.0.1"], **endpoint}], "IPv4")
    objects = base(ingress("team-a", "web", "shop.example.com", "/"), raw)
    view = {kind: dict(items) for kind, items in objects.objects.items()}
    if not through_store:
        view["EndpointSlice"] = {("team-a", "web-x"): raw}
    backend = normalize(view, Policy())[(Family.BACKEND, ("team-a", "web", "80"))]
    assert isinstance(backend, c.BackendEndpoints)
    (got,) = backend.endpoints
    dumped = got.model_dump(mode="json", exclude_none=True)
    assert {k: dumped.get(k) for k in expected} == expected

"""The ADS stream bookkeeping with a scripted Envoy: each Envoy takes one snapshot whole before
the next (routes are never starved by clusters that keep changing), and endpoints always come
from the newest snapshot without waiting behind a route table."""

from __future__ import annotations

import dataclasses

import pytest
from envoy.config.route.v3 import route_pb2
from envoy.service.discovery.v3 import discovery_pb2
from hypothesis import given, settings
from hypothesis import strategies as st
from ingress_l7_config.adapters.xds import EnvoyStream, _Core
from ingress_l7_config.domain.push import (
    WILDCARD_TYPES,
    Push,
    TypeState,
    after_ack,
    after_nack,
    next_push,
    resubscribe,
)
from ingress_l7_config.domain.resources import (
    CLUSTER,
    ENDPOINT,
    HTTP_ROUTES,
    LISTENER,
    ROUTE,
    TYPES,
    BuildCache,
    BuildOptions,
    Snapshot,
    build_snapshot,
    http_scope,
    http_scope_routes,
)
from l7_fixtures import NS, domain, endpoints, route

pytestmark = pytest.mark.unit


class Quiet:
    def on_ack(self, stream: EnvoyStream, push: Push, sequence: int) -> None:
        return None

    def on_nack(
        self, stream: EnvoyStream, push: Push, sequence: int, changed: list[str], message: str
    ) -> None:
        return None

    def on_streams_changed(self) -> None:
        return None


SCOPES = 4


def table(host: str) -> str:
    """The plain-HTTP route table of ``host`` in the Fleet's snapshots."""
    return http_scope_routes(http_scope(host, SCOPES))


class Fleet:
    """Domains d0.. each routing to its own Service s0..; builds snapshots as the app does."""

    def __init__(self) -> None:
        self.domains: dict[str, object] = {}
        self.backends: dict[tuple[str, str, int], object] = {}
        self.cache = BuildCache()
        self.sequence = 0

    def add(self, i: int) -> None:
        host = f"d{i}.example.com"
        self.domains[host] = domain(host, [route("/", "Prefix", f"s{i}")])
        self.backends[(NS, f"s{i}", 80)] = endpoints(f"s{i}", 1000 + i)

    def move(self, i: int, port: int) -> None:
        self.backends[(NS, f"s{i}", 80)] = endpoints(f"s{i}", port)

    def publish(self, core: _Core) -> Snapshot:
        snap = build_snapshot(
            self.domains,  # type: ignore[arg-type]
            self.backends,  # type: ignore[arg-type]
            {},
            BuildOptions(access_log=False, http_scopes=SCOPES),
            self.cache,
        )
        self.sequence += 1
        core.publish(snap, self.sequence)
        return snap


def ack(core: _Core, stream: EnvoyStream, response: discovery_pb2.DiscoveryResponse) -> None:
    """The Envoy accepts ``response`` and, for named types, stays subscribed to what it holds
    plus what it was sent (as an Envoy does once clusters and listeners name them)."""
    names: list[str] = []
    if response.type_url not in WILDCARD_TYPES:
        held = stream.states[response.type_url].subscribed
        names = sorted(held | set(_names(response)))
    core.handle_request(
        stream,
        discovery_pb2.DiscoveryRequest(
            type_url=response.type_url,
            response_nonce=response.nonce,
            version_info=response.version_info,
            resource_names=names,
        ),
    )


def subscribe(core: _Core, stream: EnvoyStream, type_url: str, snap: Snapshot) -> None:
    core.handle_request(
        stream,
        discovery_pb2.DiscoveryRequest(
            type_url=type_url, resource_names=sorted(snap.resources.get(type_url, {}))
        ),
    )


def _names(response: discovery_pb2.DiscoveryResponse) -> list[str]:
    out = []
    for packed in response.resources:
        if response.type_url == ROUTE:
            message = route_pb2.RouteConfiguration()
            packed.Unpack(message)
            out.append(message.name)
        else:
            # Every other type has its name (or cluster_name) as field 1: read it generically.
            message = _message(response.type_url)
            packed.Unpack(message)
            out.append(getattr(message, "name", "") or getattr(message, "cluster_name", ""))
    return out


def _message(type_url: str) -> object:
    from envoy.config.cluster.v3 import cluster_pb2
    from envoy.config.endpoint.v3 import endpoint_pb2
    from envoy.config.listener.v3 import listener_pb2

    return {
        CLUSTER: cluster_pb2.Cluster,
        ENDPOINT: endpoint_pb2.ClusterLoadAssignment,
        LISTENER: listener_pb2.Listener,
    }[type_url]()


def _vhosts(response: discovery_pb2.DiscoveryResponse) -> list[str]:
    table = route_pb2.RouteConfiguration()
    response.resources[0].Unpack(table)
    assert table.name.startswith(HTTP_ROUTES + "/")
    return [v.name for v in table.virtual_hosts]


def converge(core: _Core, stream: EnvoyStream) -> None:
    while (response := core.next_response(stream)) is not None:
        ack(core, stream, response)


def connected(fleet: Fleet) -> tuple[_Core, EnvoyStream]:
    core = _Core(Quiet())
    stream = EnvoyStream(node="envoy-1")
    core.add(stream)
    snap = fleet.publish(core)
    for type_url in TYPES:
        core.handle_request(stream, discovery_pb2.DiscoveryRequest(type_url=type_url))
    subscribe(core, stream, ENDPOINT, snap)
    subscribe(core, stream, ROUTE, snap)
    converge(core, stream)
    return core, stream


def test_routes_go_out_before_a_newer_cluster_set() -> None:
    fleet = Fleet()
    fleet.add(0)
    core, stream = connected(fleet)

    fleet.add(1)
    fleet.publish(core)  # B: a new domain, a new cluster
    cds_b = core.next_response(stream)
    assert cds_b is not None and cds_b.type_url == CLUSTER
    fleet.add(2)
    fleet.publish(core)  # C arrives while B's clusters are in flight
    # As Envoy does: it asks for the new clusters' endpoints, and ACKs the clusters once they
    # arrived (warmed).
    core.handle_request(
        stream,
        discovery_pb2.DiscoveryRequest(type_url=ENDPOINT, resource_names=_names(cds_b)),
    )
    eds = core.next_response(stream)
    assert eds is not None and eds.type_url == ENDPOINT and _names(eds) == ["shop/s1/80"]
    ack(core, stream, eds)
    ack(core, stream, cds_b)
    # B is delivered whole first: its route table, not C's clusters.
    rds_b = core.next_response(stream)
    assert rds_b is not None and rds_b.type_url == ROUTE
    assert "d1.example.com" in _vhosts(rds_b) and "d2.example.com" not in _vhosts(rds_b)
    ack(core, stream, rds_b)
    cds_c = core.next_response(stream)
    assert cds_c is not None and cds_c.type_url == CLUSTER and len(cds_c.resources) == 3
    ack(core, stream, cds_c)
    converge(core, stream)
    assert stream.pinned is not None and stream.pinned[1] == fleet.sequence


def test_an_endpoint_change_does_not_wait_for_a_route_table_in_flight() -> None:
    fleet = Fleet()
    fleet.add(0)
    fleet.add(1)
    core, stream = connected(fleet)

    fleet.add(2)
    fleet.publish(core)
    while (response := core.next_response(stream)) is not None and response.type_url != ROUTE:
        ack(core, stream, response)
    assert response is not None and response.type_url == ROUTE  # in flight, not ACKed
    fleet.move(0, 2000)
    fleet.publish(core)
    eds = core.next_response(stream)
    assert eds is not None and eds.type_url == ENDPOINT and _names(eds) == ["shop/s0/80"]
    ack(core, stream, eds)
    ack(core, stream, response)
    converge(core, stream)


# ------------------------------------------------------------------ settled is only a shortcut


@st.composite
def _script(draw: st.DrawFn) -> list[tuple[str, int]]:
    return draw(
        st.lists(
            st.tuples(
                st.sampled_from(["add", "remove", "move", "ack", "nack", "narrow", "widen"]),
                st.integers(0, 5),
            ),
            max_size=40,
        )
    )


def _reference(states: dict[str, TypeState], snap: Snapshot) -> Push | None:
    """What next_push chooses with no memory of settled snapshots."""
    fresh = {t: dataclasses.replace(s, settled=None) for t, s in states.items()}
    return next_push(snap, fresh, ())


@settings(max_examples=200, deadline=None)
@given(_script(), st.booleans())
def test_settled_never_changes_what_is_sent(script: list[tuple[str, int]], delta: bool) -> None:
    fleet = Fleet()
    for i in range(3):
        fleet.add(i)
    core = _Core(Quiet())
    snap = fleet.publish(core)
    states = {t: TypeState(requested=True, incremental=delta) for t in TYPES}
    for type_url in (ENDPOINT, ROUTE):
        resubscribe(states[type_url], set(snap.resources.get(type_url, {})))
    for op, i in script:
        if op == "add":
            fleet.add(i)
        elif op == "remove":
            fleet.domains.pop(f"d{i}.example.com", None)
        elif op == "move":
            if (NS, f"s{i}", 80) in fleet.backends:
                fleet.move(i, 5000 + len(fleet.domains) + i)
        elif op in ("ack", "nack"):
            push = next_push(snap, states, ())
            if push is not None:
                if op == "ack":
                    after_ack(states, push, fleet.sequence, str(fleet.sequence))
                else:
                    after_nack(states, push)
        elif op == "narrow":
            names = sorted(states[ENDPOINT].subscribed)
            resubscribe(states[ENDPOINT], set(names[: len(names) // 2]))
        elif op == "widen":
            for type_url in (ENDPOINT, ROUTE):
                resubscribe(states[type_url], set(snap.resources.get(type_url, {})))
        if op in ("add", "remove", "move"):
            snap = fleet.publish(core)
        expected = _reference(states, snap)
        got = next_push(snap, states, ())
        assert (got and (got.type_url, [r.digest for r in got.resources], got.removed)) == (
            expected
            and (expected.type_url, [r.digest for r in expected.resources], expected.removed)
        )


# ------------------------------------------------------------------ delta xDS


def delta_ack(
    core: _Core, stream: EnvoyStream, response: discovery_pb2.DeltaDiscoveryResponse
) -> None:
    """The Envoy accepts ``response``; for named types it subscribes to what it was sent, and
    to the endpoints of new clusters (as an Envoy does, before it ACKs them)."""
    names = [r.name for r in response.resources]
    if response.type_url == CLUSTER and names:
        core.handle_delta_request(
            stream,
            discovery_pb2.DeltaDiscoveryRequest(type_url=ENDPOINT, resource_names_subscribe=names),
        )
    request = discovery_pb2.DeltaDiscoveryRequest(
        type_url=response.type_url, response_nonce=response.nonce
    )
    if response.type_url not in WILDCARD_TYPES:
        request.resource_names_subscribe.extend(names)
    core.handle_delta_request(stream, request)


def delta_converge(core: _Core, stream: EnvoyStream) -> list[discovery_pb2.DeltaDiscoveryResponse]:
    responses = []
    while (response := core.next_delta_response(stream)) is not None:
        responses.append(response)
        delta_ack(core, stream, response)
    return responses


def delta_connect(
    core: _Core, snap: Snapshot, held: dict[str, dict[str, str]] | None = None
) -> tuple[EnvoyStream, list[discovery_pb2.DeltaDiscoveryResponse]]:
    """A delta Envoy connects, holding ``held`` (type -> name -> version) from before, and is
    brought up to date."""
    stream = EnvoyStream(node="envoy-delta", delta=True)
    core.add(stream)
    held = held or {}
    for type_url in TYPES:
        request = discovery_pb2.DeltaDiscoveryRequest(type_url=type_url)
        for name, version in held.get(type_url, {}).items():
            request.initial_resource_versions[name] = version
        if type_url in (ENDPOINT, ROUTE):
            request.resource_names_subscribe.extend(sorted(snap.resources.get(type_url, {})))
        core.handle_delta_request(stream, request)
    return stream, delta_converge(core, stream)


def _sent(
    responses: list[discovery_pb2.DeltaDiscoveryResponse],
) -> list[tuple[str, list[str], list[str]]]:
    return [
        (response.type_url, [r.name for r in response.resources], list(response.removed_resources))
        for response in responses
    ]


def test_delta_sends_a_new_domain_as_its_own_resources() -> None:
    fleet = Fleet()
    for i in range(3):
        fleet.add(i)
    core = _Core(Quiet())
    stream, first = delta_connect(core, fleet.publish(core))
    assert [names for type_url, names, _ in _sent(first) if type_url == CLUSTER] == [
        ["shop/s0/80", "shop/s1/80", "shop/s2/80"]
    ]
    # Every delta resource carries its digest as its version.
    cds = next(r for r in first if r.type_url == CLUSTER)
    assert all(len(r.version) == 16 for r in cds.resources)

    fleet.add(3)
    fleet.publish(core)
    assert _sent(delta_converge(core, stream)) == [
        (CLUSTER, ["shop/s3/80"], []),
        (ENDPOINT, ["shop/s3/80"], []),
        (ROUTE, [table("d3.example.com")], []),
    ]


def test_delta_removes_a_dropped_cluster_only_after_the_routes() -> None:
    fleet = Fleet()
    for i in range(3):
        fleet.add(i)
    core = _Core(Quiet())
    stream, _ = delta_connect(core, fleet.publish(core))

    del fleet.domains["d1.example.com"]
    fleet.publish(core)
    # The routes that no longer use the cluster go first; its removal follows their ACK.
    assert _sent(delta_converge(core, stream)) == [
        (ROUTE, [table("d1.example.com")], []),
        (CLUSTER, [], ["shop/s1/80"]),
    ]
    assert "shop/s1/80" not in stream.states[CLUSTER].acked
    assert _sent(delta_converge(core, stream)) == []


def test_delta_reconnect_sends_only_what_the_envoy_lacks() -> None:
    fleet = Fleet()
    for i in range(3):
        fleet.add(i)
    core = _Core(Quiet())
    stream, _ = delta_connect(core, fleet.publish(core))
    held = {t: {n: digest for n, (digest, _) in s.acked.items()} for t, s in stream.states.items()}
    core.remove(stream)

    # While the Envoy was away (a restart of l7-config, say): one Service moved, one domain
    # went away with its cluster.
    fleet.move(0, 2000)
    del fleet.domains["d2.example.com"]
    snap = fleet.publish(core)
    _, responses = delta_connect(core, snap, held)
    assert _sent(responses) == [
        (ENDPOINT, ["shop/s0/80"], []),
        (ROUTE, [table("d2.example.com")], []),
        (CLUSTER, [], ["shop/s2/80"]),
    ]


def test_delta_does_not_resend_a_refused_cluster_nor_hold_the_others_back() -> None:
    fleet = Fleet()
    fleet.add(0)
    core = _Core(Quiet())
    stream, _ = delta_connect(core, fleet.publish(core))

    fleet.add(1)
    fleet.publish(core)
    cds = core.next_delta_response(stream)
    assert cds is not None and [r.name for r in cds.resources] == ["shop/s1/80"]
    refusal = discovery_pb2.DeltaDiscoveryRequest(type_url=CLUSTER, response_nonce=cds.nonce)
    refusal.error_detail.message = "refused"
    core.handle_delta_request(stream, refusal)
    fleet.add(2)
    fleet.publish(core)
    sent = _sent(delta_converge(core, stream))
    assert sent[0] == (CLUSTER, ["shop/s2/80"], [])

"""The incremental build: ``build_snapshot`` with a ``BuildCache`` gives exactly what a fresh
build gives, after any sequence of changes, and reuses what a change did not touch."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ingress_events import catalogue as c
from ingress_l7_config.domain.model import SecretMaterial
from ingress_l7_config.domain.resources import (
    CLUSTER,
    ENDPOINT,
    HTTP_ROUTES,
    HTTP_SCOPE_HEADER,
    LISTENER,
    ROUTE,
    SCOPED_ROUTE,
    BuildCache,
    BuildOptions,
    Snapshot,
    build_snapshot,
    http_route_names,
    http_scope,
    http_scope_routes,
    snapshot_json,
)
from l7_fixtures import NS, domain, endpoints, gen, route, tls

pytestmark = pytest.mark.unit

HOSTS = ["a.example.com", "b.example.com", "*.w.example.com", "c.example.com"]
SERVICES = ["web", "api", "img"]
SECRETS = ["cert-1", "cert-2"]
OPTIONS = BuildOptions(access_log=False)


def _digests(snap: Snapshot) -> dict[str, dict[str, str]]:
    return {t: {n: r.digest for n, r in rs.items()} for t, rs in snap.resources.items()}


def _same(a: Snapshot, b: Snapshot) -> None:
    assert _digests(a) == _digests(b)
    assert a.generations == b.generations
    assert a.deps == b.deps
    assert snapshot_json(a) == snapshot_json(b)


remote = st.builds(
    c.RemoteBackend,
    cluster=st.sampled_from(["east", "west"]),
    address=st.sampled_from(["192.0.2.1", "192.0.2.2"]),
    port=st.just(80),
    weight=st.integers(0, 3),
    priority=st.integers(0, 2),
)


@st.composite
def a_domain(draw: st.DrawFn) -> c.DomainDesired:
    host = draw(st.sampled_from(HOSTS))
    paths = draw(st.lists(st.sampled_from(["/", "/api", "/img", "/x/y"]), min_size=1, max_size=3))
    routes = [
        route(p, draw(st.sampled_from(["Prefix", "Exact"])), draw(st.sampled_from(SERVICES)))
        for p in paths
    ]
    extra: dict[str, Any] = {}
    if draw(st.booleans()):
        extra["tls"] = tls(draw(st.sampled_from(SECRETS)), "0" * 64)
        extra["http_redirect_to_https"] = draw(st.booleans())
    if draw(st.integers(0, 3)) == 0:
        extra["remote_backends"] = draw(st.lists(remote, max_size=2))
    return domain(host, routes, **extra)


step = st.one_of(
    st.tuples(st.just("domain"), a_domain()),
    st.tuples(st.just("delete-domain"), st.sampled_from(HOSTS)),
    st.tuples(
        st.just("endpoints"),
        st.sampled_from(SERVICES),
        st.lists(st.integers(1000, 1003), max_size=3),
        st.booleans(),
    ),
    st.tuples(st.just("delete-backend"), st.sampled_from(SERVICES)),
    st.tuples(st.just("secret"), st.sampled_from(SECRETS), st.integers(0, 2)),
    # The same domain with other remote backends only (its clusters and endpoints stay).
    st.tuples(st.just("remotes"), st.sampled_from(HOSTS), st.lists(remote, max_size=2)),
)


def _material(version: int) -> SecretMaterial:
    return SecretMaterial(f"cert {version}".encode(), f"key {version}".encode())


@settings(max_examples=150, deadline=None)
@given(st.lists(step, min_size=1, max_size=25))
def test_a_cached_build_equals_a_fresh_one_after_any_changes(steps: list[Any]) -> None:
    domains: dict[str, c.DomainDesired] = {}
    backends: dict[tuple[str, str, int], c.BackendEndpoints] = {}
    secrets = {f"{NS}/{name}": _material(0) for name in SECRETS}
    cache = BuildCache()
    for change in steps:
        match change:
            case ("domain", d):
                domains[d.host] = d
            case ("delete-domain", host):
                domains.pop(host, None)
            case ("endpoints", service, ports, ready):
                backends[(NS, service, 80)] = endpoints(service, *ports, ready=ready)
            case ("delete-backend", service):
                backends.pop((NS, service, 80), None)
            case ("secret", name, version):
                secrets[f"{NS}/{name}"] = _material(version)
            case ("remotes", host, remotes) if host in domains:
                domains[host] = domains[host].model_copy(
                    update={"remote_backends": remotes, "generation": gen()}
                )
        cached = build_snapshot(domains, backends, secrets, OPTIONS, cache)
        _same(cached, build_snapshot(domains, backends, secrets, OPTIONS))


def _fleet(n: int) -> tuple[dict[str, c.DomainDesired], dict[tuple[str, str, int], Any]]:
    domains = {
        f"d{i}.example.com": domain(f"d{i}.example.com", [route("/", "Prefix", f"s{i}")])
        for i in range(n)
    }
    backends = {(NS, f"s{i}", 80): endpoints(f"s{i}", 1000 + i) for i in range(n)}
    return domains, backends


def test_an_endpoint_change_rebuilds_only_its_endpoints() -> None:
    domains, backends = _fleet(50)
    cache = BuildCache()
    before = build_snapshot(domains, backends, {}, OPTIONS, cache)
    backends[(NS, "s7", 80)] = endpoints("s7", 2000)
    after = build_snapshot(domains, backends, {}, OPTIONS, cache)
    assert cache.reused == 50
    changed = {
        (t, n)
        for t, rs in after.resources.items()
        for n, r in rs.items()
        if before.resources[t].get(n) is not r
    }
    assert changed == {(ENDPOINT, "shop/s7/80")}
    # Everything else is the very same object: nothing re-serialized, nothing copied.
    for name, table in before.resources[ROUTE].items():
        assert after.resources[ROUTE][name] is table
    assert after.resources[CLUSTER] == before.resources[CLUSTER]


@pytest.mark.parametrize("scopes", [OPTIONS.http_scopes, 0])
def test_a_new_domain_rebuilds_its_parts_and_its_route_table_only(scopes: int) -> None:
    options = BuildOptions(access_log=False, http_scopes=scopes)
    domains, backends = _fleet(50)
    cache = BuildCache()
    before = build_snapshot(domains, backends, {}, options, cache)
    domains["new.example.com"] = domain("new.example.com", [route("/", "Prefix", "s3")])
    after = build_snapshot(domains, backends, {}, options, cache)
    assert cache.reused == 50
    changed = {
        (t, n)
        for t, rs in after.resources.items()
        for n, r in rs.items()
        if before.resources[t].get(n) is not r
    }
    # s3's cluster and endpoints are shared with d3: reused. Only the host's route table
    # changes: its scope's, or the one table.
    table = http_scope_routes(http_scope("new.example.com", scopes)) if scopes else HTTP_ROUTES
    assert changed == {(ROUTE, table)}
    assert after.resources[LISTENER] == before.resources[LISTENER]


def test_a_host_is_in_its_scope_table_and_a_wildcard_host_in_every_one() -> None:
    from envoy.config.route.v3 import route_pb2

    options = BuildOptions(access_log=False, http_scopes=8)
    domains, backends = _fleet(40)
    domains["*.w.example.com"] = domain("*.w.example.com", [route("/", "Prefix", "s1")])
    snap = build_snapshot(domains, backends, {}, options)
    assert sorted(snap.resources[SCOPED_ROUTE]) == sorted(http_route_names(options))
    seen: dict[str, list[str]] = {}
    for name, resource in snap.resources[ROUTE].items():
        table = route_pb2.RouteConfiguration()
        table.ParseFromString(resource.payload)
        assert list(table.request_headers_to_remove) == [HTTP_SCOPE_HEADER]
        for vhost in table.virtual_hosts:
            seen.setdefault(vhost.name, []).append(name)
    assert seen.pop("*.w.example.com") == sorted(http_route_names(options))
    assert len(seen) == 40
    for host, tables in seen.items():
        assert tables == [http_scope_routes(http_scope(host, 8))]
    # The hosts spread over the scopes (d0..d39 under one parent domain).
    assert len({tables[0] for tables in seen.values()}) >= 6


def test_new_options_start_from_nothing() -> None:
    domains, backends = _fleet(3)
    cache = BuildCache()
    build_snapshot(domains, backends, {}, OPTIONS, cache)
    other = BuildOptions(access_log=False, http_port=9999)
    _same(
        build_snapshot(domains, backends, {}, other, cache),
        build_snapshot(domains, backends, {}, other),
    )
    assert cache.reused == 0


def test_the_route_table_is_byte_for_byte_the_serialized_message() -> None:
    from envoy.config.route.v3 import route_pb2

    domains, backends = _fleet(300)  # varints of several bytes: the table is > 16 KiB
    domains["r.example.com"] = domain(
        "r.example.com",
        [route("/", "Prefix", "s1")],
        tls=tls("cert-1", "0" * 64),
        http_redirect_to_https=True,
    )
    secrets = {f"{NS}/cert-1": _material(1)}
    one_table = BuildOptions(access_log=False, http_scopes=0)
    table = build_snapshot(domains, backends, secrets, one_table).resources[ROUTE][HTTP_ROUTES]
    parsed = route_pb2.RouteConfiguration()
    parsed.ParseFromString(table.payload)
    assert len(parsed.virtual_hosts) == 301
    assert parsed.SerializeToString(deterministic=True) == table.payload
    rebuilt = route_pb2.RouteConfiguration(name=HTTP_ROUTES, virtual_hosts=parsed.virtual_hosts)
    assert rebuilt.SerializeToString(deterministic=True) == table.payload
    # A scoped table also names the header to remove, after the virtual hosts.
    scoped = BuildOptions(access_log=False, http_scopes=2)
    for name, table in build_snapshot(domains, backends, secrets, scoped).resources[ROUTE].items():
        if not name.startswith("http/"):
            continue
        parsed = route_pb2.RouteConfiguration()
        parsed.ParseFromString(table.payload)
        assert parsed.SerializeToString(deterministic=True) == table.payload
        rebuilt = route_pb2.RouteConfiguration(
            name=name,
            virtual_hosts=parsed.virtual_hosts,
            request_headers_to_remove=[HTTP_SCOPE_HEADER],
        )
        assert rebuilt.SerializeToString(deterministic=True) == table.payload

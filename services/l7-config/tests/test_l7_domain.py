"""Pure domain code: Ingress path semantics (property-based against the spec), validation of
user input and TLS material, golden resources, and the xDS push plan."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ingress_events import catalogue as c
from ingress_l7_config.domain.model import SecretMaterial, SecretMissing
from ingress_l7_config.domain.push import TypeState, after_ack, after_nack, next_push
from ingress_l7_config.domain.resources import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    ROUTE,
    SCOPED_ROUTE,
    SECRET,
    TYPES,
    BuildOptions,
    build_snapshot,
    normalized_prefix,
    ordered_routes,
    snapshot_json,
)
from ingress_l7_config.domain.validate import check_path, check_tls, validate_domain
from ingress_l7_config.testing import issue, make_ca
from l7_fixtures import domain, endpoints, route, tls, wb

pytestmark = pytest.mark.unit

GOLDEN = Path(__file__).parent / "golden"
NOW = dt.datetime.now(dt.UTC)

# ----------------------------------------------------------------------------- path semantics


def spec_match(rules: list[c.Route], path: str) -> c.Route | None:
    """The Ingress v1 rule for ``path``, straight from the spec's wording."""

    def elements(p: str) -> list[str]:
        return [e for e in p.split("/") if e]

    best: tuple[int, int, c.Route] | None = None
    for rule in rules:
        if rule.path_type == "Exact":
            hit, length, rank = path == rule.path, len(rule.path), 1
        else:
            want = elements(rule.path)
            hit = elements(path)[: len(want)] == want
            length, rank = len(normalized_prefix(rule.path)), 0
        if hit and (best is None or (length, rank) > best[:2]):
            best = (length, rank, rule)
    return None if best is None else best[2]


def envoy_first_match(rules: list[c.Route], path: str) -> c.Route | None:
    """What Envoy does with our ordered list: the first route whose matcher accepts the path."""
    for rule in ordered_routes(rules):
        if rule.path_type == "Exact":
            if path == rule.path:
                return rule
            continue
        prefix = normalized_prefix(rule.path)
        if prefix == "/" or path == prefix or path.startswith(prefix + "/"):
            return rule
    return None


segment = st.sampled_from(["foo", "bar", "foobar", "a", "FOO", "b.c"])
paths = st.lists(segment, min_size=0, max_size=3).map(lambda s: "/" + "/".join(s))
rule_paths = st.tuples(paths, st.booleans()).map(
    lambda t: t[0] + "/" if t[1] and t[0] != "/" else t[0]
)
rules = st.lists(
    st.tuples(rule_paths, st.sampled_from(["Exact", "Prefix", "ImplementationSpecific"])),
    min_size=1,
    max_size=6,
    unique=True,
)
requests = st.tuples(paths, st.booleans()).map(lambda t: t[0] + ("/" if t[1] else ""))


@settings(max_examples=400, deadline=None)
@given(rules, requests)
def test_ordered_routes_implement_the_ingress_spec(
    spec: list[tuple[str, str]], request: str
) -> None:
    built = ordered_routes([route(p, t, "svc-a") for p, t in spec])
    expected = spec_match(built, request)
    got = envoy_first_match(built, request)
    if expected is None:
        assert got is None
    else:
        assert got is not None
        # Duplicates of the same rule are dropped, so compare what they match, not identity.
        assert (got.path_type == "Exact", normalized_prefix(got.path)) == (
            expected.path_type == "Exact",
            normalized_prefix(expected.path),
        )


def test_prefix_never_matches_a_longer_element() -> None:
    rules_ = [route("/foo", "Prefix", "a"), route("/", "Prefix", "root")]
    assert envoy_first_match(rules_, "/foobar") is rules_[1]
    assert envoy_first_match(rules_, "/foo/") is rules_[0]


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("/a\x00b", "'\\x00'"),
        ("/a\r\nb", "'\\n'"),
        ("/{id}", "'{'"),
        ("/a b", "' '"),
        ("/a%zz", "not a %XX escape"),
        ("/a%2Fb", "encodes a slash"),
        ("/a/../b", "'..' segment"),
        ("foo", "start with '/'"),
    ],
)
def test_bad_paths_are_rejected_with_the_reason(path: str, fragment: str) -> None:
    problem = check_path(path, "routes[0].path")
    assert problem is not None and problem.reason == "InvalidPath"
    assert fragment in problem.message


def test_regex_metacharacters_are_literal_path_characters() -> None:
    """A path that looks like a regex is matched literally: no rule ever becomes a regex."""
    snap = build_snapshot(
        {"re.example.com": domain("re.example.com", [route("/a.*(b)+", "Prefix", "svc-a")])},
        {},
        {},
        BuildOptions(http_scopes=0),
    )
    vhost = snap.to_json()["RDS"]["http"]["virtual_hosts"][0]  # type: ignore[index]
    assert vhost["routes"][0]["match"] == {"path_separated_prefix": "/a.*(b)+"}


def _bypass(host: str, **changes: object) -> c.DomainDesired:
    """A DomainDesired that skipped model validation, as a buggy or hostile producer sends it."""
    good = domain("ok.example.com", [route("/", "Prefix", "svc-a")])
    return good.model_copy(update={"host": host, **changes})


@pytest.mark.parametrize(
    ("desired", "reason"),
    [
        (_bypass("evil\r\n.example.com"), "InvalidHostname"),
        (_bypass("{x}.example.com"), "InvalidHostname"),
        (_bypass("a.*.example.com"), "InvalidHostname"),
        (
            _bypass(
                "ok.example.com",
                routes=[
                    route("/", "Prefix", "svc-a").model_copy(
                        update={"rewrite": c.Rewrite.model_construct(host="x\r\nset-cookie: a")}
                    )
                ],
            ),
            "InvalidHostname",
        ),
        (
            _bypass(
                "ok.example.com",
                routes=[route("/", "Prefix", "svc-a").model_copy(update={"path": "/x{1}"})],
            ),
            "InvalidPath",
        ),
        (
            domain(
                "w.example.com",
                [route("/", "Prefix", "svc-a").model_copy(update={"backends": [wb("svc-a", 0)]})],
            ),
            "NoBackendWeight",
        ),
    ],
)
def test_bad_domains_are_rejected(desired: c.DomainDesired, reason: str) -> None:
    problems = validate_domain(desired, {}, NOW)
    assert problems and problems[0].reason == reason


def test_tls_material_checks() -> None:
    ca = make_ca()
    host = "t.example.com"
    good = SecretMaterial(*issue(ca, [host]))
    assert check_tls(good, host, "shop/t", NOW) is None
    wildcard = SecretMaterial(*issue(ca, ["*.example.com"]))
    assert check_tls(wildcard, host, "shop/t", NOW) is None
    assert check_tls(wildcard, "a.b.example.com", "shop/t", NOW) is not None
    expired = SecretMaterial(
        *issue(
            ca, [host], not_before=NOW - dt.timedelta(days=9), not_after=NOW - dt.timedelta(days=1)
        )
    )
    future = SecretMaterial(*issue(ca, [host], not_before=NOW + dt.timedelta(days=1)))
    other = SecretMaterial(*issue(ca, ["other.example.com"]))
    mismatched = SecretMaterial(good.cert_pem, other.key_pem)
    cases = {
        "SecretNotFound": SecretMissing("SecretNotFound", "Secret shop/t does not exist"),
        "SecretNotTls": SecretMissing("SecretNotTls", "not a TLS Secret"),
        "CertificateExpired": expired,
        "CertificateNotYetValid": future,
        "CertificateHostMismatch": other,
        "CertificateKeyMismatch": mismatched,
        "InvalidCertificate": SecretMaterial(b"-----BEGIN CERTIFICATE-----\nAAAA\n", good.key_pem),
    }
    for reason, material in cases.items():
        problem = check_tls(material, host, "shop/t", NOW)
        assert problem is not None and problem.reason == reason, (reason, problem)
        assert problem.message


# ----------------------------------------------------------------------------- golden resources


def golden_snapshot() -> str:
    material = SecretMaterial(b"-----CERT-----\n", b"-----KEY-----\n")
    domains = [
        domain(
            "shop.example.com",
            [
                route("/", "Prefix", "web"),
                route(
                    "/api/",
                    "Prefix",
                    "api",
                    rewrite={"prefix": "/", "host": "api.internal.example.com"},
                ),
                route(
                    "/api/health",
                    "Exact",
                    "api",
                    timeouts={"request_seconds": 2.5, "idle_seconds": 60},
                    retries={"attempts": 2, "per_try_timeout_seconds": 1, "on": ["5xx", "reset"]},
                ),
                route("/canary", "ImplementationSpecific", "web", "web-canary"),
            ],
            tls=tls("shop-tls", "0" * 64),
            http_redirect_to_https=True,
        ),
        domain("*.apps.example.com", [route("/", "Prefix", "web")], default_backend=wb("web")),
        domain("plain.example.com", [], default_backend=wb("web")),
    ]
    backends = {
        ("shop", "web", 80): endpoints("web", 8080, 8081),
        ("shop", "api", 80): endpoints("api", 9090).model_copy(
            update={
                "endpoints": [
                    c.Endpoint(address="10.0.0.2", port=9090, ready=True, zone="z1"),
                    c.Endpoint(address="10.0.0.1", port=9090, ready=True, zone="z2"),
                    c.Endpoint(address="10.0.0.3", port=9090, ready=False, zone="z1"),
                ]
            }
        ),
    }
    snap = build_snapshot(
        {d.host: d for d in domains},
        backends,
        {"shop/shop-tls": material},
        # Four scopes, not the default 64: the same shape, a golden file one can read.
        BuildOptions(
            listen_address="0.0.0.0",
            http_port=8080,
            https_port=8443,
            https_redirect_port=443,
            http_scopes=4,
        ),
    )
    return snapshot_json(snap)


def test_golden_resources() -> None:
    path = GOLDEN / "snapshot.json"
    text = golden_snapshot()
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert text == path.read_text(), "regenerate with UPDATE_GOLDEN=1 and review the diff"
    assert golden_snapshot() == text  # deterministic
    resources = json.loads(text)
    assert set(resources) == {"LDS", "SRDS", "RDS", "CDS", "EDS", "SDS"}


def remote(
    cluster: str, address: str, port: int, weight: int = 1, priority: int = 1
) -> c.RemoteBackend:
    return c.RemoteBackend(
        cluster=cluster, address=address, port=port, weight=weight, priority=priority
    )


def golden_remote() -> str:
    """A domain with remote backends next to one without, sharing a Service: the remote domain
    gets its own clusters; the other keeps the plain shared one."""
    federated = domain(
        "fed.example.com",
        [route("/", "Prefix", "web"), route("/api", "Prefix", "api")],
        remote_backends=[
            remote("cluster-c", "192.0.2.30", 80, weight=5, priority=7),
            remote("cluster-b", "192.0.2.20", 80, weight=1, priority=1),
            remote("cluster-d", "192.0.2.40", 8080, weight=10, priority=0),
            remote("cluster-off", "192.0.2.50", 80, weight=0, priority=1),
        ],
    )
    local = domain("local.example.com", [route("/", "Prefix", "web")])
    backends = {
        ("shop", "web", 80): endpoints("web", 8080).model_copy(
            update={
                "endpoints": [
                    c.Endpoint(address="10.0.0.1", port=8080, ready=True, zone="z1"),
                    c.Endpoint(address="10.0.0.2", port=8080, ready=True, zone="z1"),
                    c.Endpoint(address="10.0.0.3", port=8080, ready=False, zone="z1"),
                    c.Endpoint(address="10.0.0.4", port=8080, ready=True, zone="z2"),
                    c.Endpoint(address="10.0.0.5", port=8080, ready=True, terminating=True),
                ]
            }
        ),
    }
    snap = build_snapshot(
        {d.host: d for d in (federated, local)},
        backends,
        {},
        BuildOptions(access_log=False, http_scopes=0),
    )
    return snapshot_json(snap)


def test_golden_remote_backends() -> None:
    path = GOLDEN / "remote.json"
    text = golden_remote()
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert text == path.read_text(), "regenerate with UPDATE_GOLDEN=1 and review the diff"
    resources = json.loads(text)
    assert sorted(resources["CDS"]) == [
        "shop/api/80@fed.example.com",
        "shop/web/80",
        "shop/web/80@fed.example.com",
    ]
    web = resources["EDS"]["shop/web/80@fed.example.com"]["endpoints"]
    # (locality, priority, weight): local zones weighted 100 per ready endpoint, remotes ranked
    # 0 (mixed), 1, 2 without gaps, the weight-0 remote left out.
    summary = [
        (
            loc["locality"].get("zone") or loc["locality"].get("region", ""),
            loc.get("priority", 0),
            loc["load_balancing_weight"],
        )
        for loc in web
    ]
    assert summary == [
        ("", 0, 1),  # only a terminating endpoint: listed unhealthy, minimum weight
        ("z1", 0, 200),
        ("z2", 0, 100),
        ("cluster-d", 0, 10),
        ("cluster-b", 1, 1),
        ("cluster-c", 2, 5),
    ]
    statuses = {
        e["endpoint"]["address"]["socket_address"]["address"]: e["health_status"]
        for loc in web
        for e in loc["lb_endpoints"]
        if "zone" in loc["locality"] or not loc["locality"]
    }
    assert statuses == {
        "10.0.0.1": "HEALTHY",
        "10.0.0.2": "HEALTHY",
        "10.0.0.3": "UNHEALTHY",
        "10.0.0.4": "HEALTHY",
        "10.0.0.5": "UNHEALTHY",
    }
    # The shared cluster of the other domain is unchanged: ready endpoints only, no weights.
    plain = resources["EDS"]["shop/web/80"]["endpoints"]
    assert all("load_balancing_weight" not in loc for loc in plain)
    routes = {
        vh["name"]: {r["route"]["cluster"] for r in vh["routes"]}
        for vh in resources["RDS"]["http"]["virtual_hosts"]
    }
    assert routes == {
        "fed.example.com": {"shop/web/80@fed.example.com", "shop/api/80@fed.example.com"},
        "local.example.com": {"shop/web/80"},
    }


def test_a_remote_vip_must_be_an_address_that_can_serve() -> None:
    bad = domain(
        "badremote.example.com",
        [route("/", "Prefix", "web")],
        remote_backends=[{"cluster": "b", "address": "0.0.0.0", "port": 80}],
    )
    [problem] = validate_domain(bad, {}, NOW)
    assert problem.reason == "InvalidRemoteBackend" and "0.0.0.0" in problem.message


# ----------------------------------------------------------------------------- push plan


def _snap(eps: int) -> object:
    d = domain("p.example.com", [route("/", "Prefix", "web")])
    return build_snapshot(
        {d.host: d}, {("shop", "web", 80): endpoints("web", eps)}, {}, BuildOptions()
    )


def _envoy_takes_everything(snapshot: object, states: dict[str, TypeState]) -> list[str]:
    sent = []
    while (push := next_push(snapshot, states, ())) is not None:  # type: ignore[arg-type]
        sent.append(push.type_url)
        for r in push.resources:
            if push.type_url in (ENDPOINT, ROUTE, SECRET):
                states[push.type_url].subscribed.add(r.name)
        after_ack(states, push, 1, "1")
    return sent


def _fresh_states(snapshot: object) -> dict[str, TypeState]:
    states = {t: TypeState(requested=True) for t in TYPES}
    for t in (ENDPOINT, ROUTE, SECRET):
        states[t].subscribed = set(snapshot.resources.get(t, {}))  # type: ignore[attr-defined]
    return states


def test_push_order_and_endpoint_fast_path() -> None:
    first = _snap(8080)
    states = _fresh_states(first)
    assert _envoy_takes_everything(first, states) == [
        CLUSTER,
        ENDPOINT,
        LISTENER,
        SCOPED_ROUTE,
        ROUTE,
    ]
    assert _envoy_takes_everything(first, states) == []  # converged: nothing is resent
    assert _envoy_takes_everything(_snap(8081), states) == [ENDPOINT]


def test_routes_wait_for_clusters_in_flight_and_nacked_content_is_not_resent() -> None:
    snap = _snap(8080)
    states = _fresh_states(snap)
    push = next_push(snap, states, ())  # type: ignore[arg-type]
    assert push is not None and push.type_url == CLUSTER
    # While CDS awaits its ACK, endpoints flow (Envoy warms clusters) but routes wait.
    assert next_push(snap, states, {CLUSTER}).type_url == ENDPOINT  # type: ignore[arg-type, union-attr]
    assert next_push(snap, states, {CLUSTER, ENDPOINT}) is None  # type: ignore[arg-type]
    after_nack(states, push)
    assert next_push(snap, states, ()).type_url == ENDPOINT  # type: ignore[arg-type, union-attr]


def test_a_dropped_cluster_stays_until_the_routes_no_longer_use_it() -> None:
    """Make before break: moving a route from web to api first adds api to the cluster set,
    then sends the routes, and only then a set without web."""
    before_d = domain("p.example.com", [route("/", "Prefix", "web")])
    after_d = domain("p.example.com", [route("/", "Prefix", "api")], gen=2)
    eps = {("shop", "web", 80): endpoints("web", 8080), ("shop", "api", 80): endpoints("api", 8081)}
    before = build_snapshot({before_d.host: before_d}, eps, {}, BuildOptions())
    after = build_snapshot({after_d.host: after_d}, eps, {}, BuildOptions())
    states = _fresh_states(before)
    _envoy_takes_everything(before, states)
    web = set(before.resources[CLUSTER])
    assert web and not web & set(after.resources[CLUSTER])

    cds = next_push(after, states, ())
    assert cds is not None and cds.type_url == CLUSTER
    assert {r.name for r in cds.resources} == web | set(after.resources[CLUSTER])
    after_ack(states, cds, 2, "2")
    for t in (ENDPOINT, ROUTE):
        states[t].subscribed |= set(after.resources.get(t, {}))
    sent = []
    while (push := next_push(after, states, ())) is not None:
        sent.append((push.type_url, {r.name for r in push.resources}))
        after_ack(states, push, 2, "2")
    # The routes go before the set that drops web; the last push is exactly the new set.
    assert [t for t, _ in sent].index(ROUTE) < len(sent) - 1
    assert sent[-1] == (CLUSTER, set(after.resources[CLUSTER]))
    assert next_push(after, states, ()) is None

"""Table tests for every bad input the issue lists, and the ownership model."""

from __future__ import annotations

from typing import Any

import pytest
from ingress_events import catalogue as c
from ingress_events.catalogue import Family
from ingress_watcher.domain.normalize import Policy, normalize
from watcher_objects import (
    CLASS,
    ZONE,
    base,
    domain,
    ingress,
    path_claim,
    service,
    store,
    tls_secret,
)

pytestmark = pytest.mark.unit
POLICY = Policy()


def run(s: Any) -> dict[Any, c.Event]:
    return normalize(s.objects, POLICY)


def rejection(events: dict[Any, c.Event], ns: str, name: str, kind: str = "Ingress") -> list[str]:
    event = events.get((Family.ADMISSION, ("ingress-watcher", kind, ns, name)))
    if isinstance(event, c.AdmissionRejected):
        return [p.reason for p in event.problems]
    assert isinstance(event, c.AdmissionAccepted), f"no admission result for {kind} {ns}/{name}"
    return []


def domains(events: dict[Any, c.Event]) -> dict[str, c.DomainDesired]:
    return {e.host: e for e in events.values() if isinstance(e, c.DomainDesired)}


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("Shop.example.com", "HostnameNotLowercase"),
        ("shop.example.com.", "HostnameTrailingDot"),
        ("bücher.example.com", "HostnameNotPunycode"),
        ("shop_1.example.com", "InvalidHostname"),
        ("shop .example.com", "InvalidHostname"),
        ("-shop.example.com", "InvalidHostname"),
        ("a" * 64 + ".example.com", "HostnameLabelTooLong"),
        (".".join(["a" * 60] * 5) + ".example.com", "HostnameTooLong"),
        ("*", "InvalidWildcard"),
        ("*.com", "InvalidWildcard"),
        ("a.*.example.com", "InvalidWildcard"),
        ("*shop.example.com", "InvalidWildcard"),
        ("shop..example.com", "InvalidHostname"),
        ("192.168.1.1", "InvalidHostname"),
    ],
)
def test_bad_hosts_are_rejected_with_their_reason(host: str, reason: str) -> None:
    events = run(
        base(ingress("team-a", "bad", host), ingress("team-a", "good", "shop.example.com"))
    )
    assert rejection(events, "team-a", "bad") == [reason]
    assert rejection(events, "team-a", "good") == []
    assert list(domains(events)) == ["shop.example.com"]


@pytest.mark.parametrize(
    ("path", "path_type", "reason"),
    [
        ("/a\x00b", "Prefix", "PathControlCharacter"),
        ("/a\x7fb", "Exact", "PathControlCharacter"),
        ("/a b", "Prefix", "PathWhitespace"),
        ("/a\tb", "Exact", "PathWhitespace"),
        ("/a{b}", "Prefix", "PathForbiddenCharacter"),
        ("/a;b", "Exact", "PathForbiddenCharacter"),
        ("/a#b", "Prefix", "PathForbiddenCharacter"),
        ("/api/.*", "Prefix", "PathRegexSyntax"),
        ("/api/(v1|v2)", "ImplementationSpecific", "PathRegexSyntax"),
        ("/^api$", "Prefix", "PathRegexSyntax"),
        ("api", "Prefix", "PathNotAbsolute"),
        ("/a%zz", "Prefix", "PathBadPercentEncoding"),
        ("/a/../b", "Prefix", "PathDotSegment"),
        ("/" + "a" * 1024, "Prefix", "PathTooLong"),
        ('/a"b', "Exact", "PathInvalidCharacter"),
    ],
)
def test_bad_paths_are_rejected_with_their_reason(path: str, path_type: str, reason: str) -> None:
    events = run(base(ingress("team-a", "bad", "shop.example.com", path, path_type=path_type)))
    assert rejection(events, "team-a", "bad") == [reason]
    assert domains(events) == {}


def test_exact_paths_may_hold_characters_a_prefix_may_not() -> None:
    events = run(base(ingress("team-a", "ok", "shop.example.com", "/a*b", path_type="Exact")))
    assert rejection(events, "team-a", "ok") == []
    assert domains(events)["shop.example.com"].routes[0].path == "/a*b"


@pytest.mark.parametrize(
    ("backend_service", "port", "reason"),
    [
        ("missing", {"number": 80}, "ServiceNotFound"),
        ("web", {"name": "grpc"}, "ServicePortNotFound"),
        ("web", {"number": 81}, "ServicePortNotFound"),
        ("web", {"other": 1}, "MissingServicePort"),
    ],
)
def test_backends_that_do_not_resolve(backend_service: str, port: Any, reason: str) -> None:
    events = run(
        base(ingress("team-a", "bad", "shop.example.com", service_name=backend_service, port=port))
    )
    assert rejection(events, "team-a", "bad") == [reason]


def test_a_port_name_resolves_to_its_number() -> None:
    events = run(base(ingress("team-a", "ok", "shop.example.com", port={"name": "http"})))
    route = domains(events)["shop.example.com"].routes[0]
    assert route.backends[0].backend == c.BackendRef(namespace="team-a", service="web", port=80)


@pytest.mark.parametrize(
    ("annotations", "reason"),
    [
        ({"ingress-domain.io/colour": "blue"}, "UnknownAnnotation"),
        ({"ingress-domain.io/request-timeout": "forever"}, "InvalidDuration"),
        ({"ingress-domain.io/request-timeout": "2h"}, "InvalidAnnotation"),
        ({"ingress-domain.io/canary-weight": "101"}, "InvalidAnnotation"),
        ({"ingress-domain.io/canary-weight": "ten"}, "InvalidAnnotation"),
        ({"ingress-domain.io/vip": "10.0.0.300"}, "InvalidAnnotation"),
        ({"ingress-domain.io/vip": "10.0.0.1,10.0.0.2"}, "InvalidAnnotation"),
        ({"ingress-domain.io/sharing-key": "a b"}, "InvalidAnnotation"),
        ({"ingress-domain.io/pool": "Pool_1"}, "InvalidAnnotation"),
        ({"ingress-domain.io/sharing-key": "x" * 300}, "AnnotationTooLong"),
        ({"ingress-domain.io/rewrite-prefix": "/a b"}, "PathWhitespace"),
        ({"ingress-domain.io/rewrite-host": "*.example.com"}, "InvalidAnnotation"),
        ({"ingress-domain.io/retry-on": "5xx,always"}, "InvalidAnnotation"),
        ({"ingress-domain.io/ssl-redirect": "yes"}, "InvalidAnnotation"),
    ],
)
def test_bad_annotations_reject_the_whole_ingress(annotations: dict[str, str], reason: str) -> None:
    events = run(base(ingress("team-a", "bad", "shop.example.com", annotations=annotations)))
    assert rejection(events, "team-a", "bad") == [reason]
    assert domains(events) == {}


def test_valid_annotations_shape_the_domain() -> None:
    annotations = {
        "ingress-domain.io/pool": "edge",
        "ingress-domain.io/vip": "10.0.0.7, 2001:db8::7",
        "ingress-domain.io/sharing-key": "shared-1",
        "ingress-domain.io/request-timeout": "1m30s",
        "ingress-domain.io/idle-timeout": "500ms",
        "ingress-domain.io/rewrite-prefix": "/v2",
        "ingress-domain.io/retry-attempts": "2",
        "ingress-domain.io/retry-on": "5xx,reset",
        "ingress-domain.io/dns-ttl": "30",
        "other.io/ignored": "anything at all",
    }
    events = run(base(ingress("team-a", "ok", "shop.example.com", annotations=annotations)))
    d = domains(events)["shop.example.com"]
    assert d.vip == c.VipRequest(
        pool="edge", addresses=["10.0.0.7", "2001:db8::7"], sharing_key="shared-1"
    )
    route = d.routes[0]
    assert route.timeouts == c.RouteTimeouts(request_seconds=90.0, idle_seconds=0.5)
    assert route.rewrite == c.Rewrite(prefix="/v2")
    assert route.retries == c.RetryPolicy(attempts=2, on=["5xx", "reset"])
    assert d.dns.ttl_seconds == 30


def test_canary_weights_split_one_route() -> None:
    events = run(
        base(
            service("team-a", "web-next"),
            ingress("team-a", "main", "shop.example.com"),
            ingress(
                "team-a",
                "next",
                "shop.example.com",
                service_name="web-next",
                annotations={"ingress-domain.io/canary-weight": "10"},
                created="2026-01-01T00:00:00Z",
            ),
        )
    )
    [route] = domains(events)["shop.example.com"].routes
    assert [(b.backend.service, b.weight) for b in route.backends] == [
        ("web", 90),
        ("web-next", 10),
    ]
    assert rejection(events, "team-a", "next") == []


def test_tls_problems() -> None:
    events = run(
        base(
            tls_secret("team-a", "good"),
            {
                "kind": "Secret",
                "metadata": {"name": "opaque", "namespace": "team-a"},
                "ingressDomainSummary": {
                    "type": "Opaque",
                    "problem": "the Secret has no tls.crt",
                    "hash": None,
                    "keyHashes": {},
                },
            },
            ingress(
                "team-a",
                "cross",
                "shop.example.com",
                "/cross",
                tls=[{"hosts": ["shop.example.com"], "secretName": "other/good"}],
            ),
            ingress(
                "team-a",
                "missing",
                "shop.example.com",
                "/missing",
                tls=[{"hosts": ["shop.example.com"], "secretName": "nope"}],
            ),
            ingress(
                "team-a",
                "opaque",
                "shop.example.com",
                "/opaque",
                tls=[{"hosts": ["shop.example.com"], "secretName": "opaque"}],
            ),
            ingress(
                "team-a",
                "stray",
                "shop.example.com",
                "/stray",
                tls=[{"hosts": ["other.example.com"], "secretName": "good"}],
            ),
            ingress(
                "team-a",
                "ok",
                "shop.example.com",
                "/ok",
                tls=[{"hosts": ["shop.example.com"], "secretName": "good"}],
            ),
        )
    )
    assert rejection(events, "team-a", "cross") == ["TlsSecretCrossNamespace"]
    assert rejection(events, "team-a", "missing") == ["TlsSecretNotFound"]
    assert rejection(events, "team-a", "opaque") == ["TlsSecretInvalid"]
    assert rejection(events, "team-a", "stray") == ["TlsHostNotInRules"]
    d = domains(events)["shop.example.com"]
    # A host whose TLS is broken is not served from that Ingress at all (no silent plain HTTP).
    assert sorted(r.path for r in d.routes) == ["/ok", "/stray"]
    assert d.tls is not None and d.tls.secret.name == "good"


def test_secret_material_never_leaves_the_summary() -> None:
    secret = tls_secret("team-a", "good", crt="-----BEGIN CERTIFICATE-----", key="PRIVATE KEY")
    assert "data" not in secret and "stringData" not in secret
    assert "PRIVATE" not in repr(secret)


def test_other_classes_get_nothing() -> None:
    foreign_class = {
        "kind": "IngressClass",
        "metadata": {"name": "nginx"},
        "spec": {"controller": "k8s.io/ingress-nginx"},
    }
    events = run(
        base(
            foreign_class,
            ingress("team-a", "theirs", "shop.example.com", class_name="nginx"),
            ingress("team-a", "unknown", "shop.example.com", class_name="nope"),
        )
    )
    assert domains(events) == {}
    assert (Family.ADMISSION, ("ingress-watcher", "Ingress", "team-a", "theirs")) not in events


def test_without_a_default_class_classless_ingresses_are_not_ours() -> None:
    ours = {**CLASS, "metadata": {"name": "ours"}}
    events = run(
        store(
            ours,
            ZONE,
            domain("team-a", "shop.example.com"),
            service("team-a", "web"),
            ingress("team-a", "plain", "shop.example.com"),
            ingress("team-a", "named", "shop.example.com", "/n", class_name="ours"),
        )
    )
    assert [r.path for r in domains(events)["shop.example.com"].routes] == ["/n"]


# --------------------------------------------------------------------------- ownership


def test_a_namespace_without_a_grant_is_denied_and_the_owner_untouched() -> None:
    owner_only = run(base(ingress("team-a", "web", "shop.example.com")))
    both = run(
        base(
            ingress("team-a", "web", "shop.example.com"),
            ingress("team-b", "steal", "shop.example.com", "/pay", created="2025-01-01T00:00:00Z"),
        )
    )
    assert rejection(both, "team-b", "steal") == ["OwnershipDenied"]
    assert domains(both) == domains(owner_only)


def test_a_path_claim_lets_another_namespace_add_routes_only_under_it() -> None:
    events = run(
        base(
            path_claim("team-a", "shop.example.com", "/api", "team-b"),
            ingress("team-a", "web", "shop.example.com"),
            ingress("team-b", "api", "shop.example.com", "/api/v1"),
            ingress("team-b", "apix", "shop.example.com", "/apix"),
            ingress("team-a", "owner-api", "shop.example.com", "/api"),
        )
    )
    assert rejection(events, "team-b", "api") == []
    assert rejection(events, "team-b", "apix") == ["OwnershipDenied"]
    assert rejection(events, "team-a", "owner-api") == ["OwnershipDenied"]
    d = domains(events)["shop.example.com"]
    assert d.owner_namespace == "team-a"
    assert [(r.path, r.source.namespace) for r in d.routes] == [
        ("/", "team-a"),
        ("/api/v1", "team-b"),
    ]


def test_oldest_claim_wins_and_the_loser_learns_the_winner() -> None:
    events = run(
        base(
            ingress("team-a", "young", "shop.example.com", created="2026-02-01T00:00:00Z"),
            ingress("team-a", "old", "shop.example.com", created="2026-01-05T00:00:00Z"),
        )
    )
    event = events[(Family.ADMISSION, ("ingress-watcher", "Ingress", "team-a", "young"))]
    assert isinstance(event, c.AdmissionRejected)
    assert event.problems[0].reason == "ClaimConflict"
    assert "team-a/old" in event.problems[0].message
    assert domains(events)["shop.example.com"].routes[0].source.name == "old"


def test_same_timestamp_breaks_ties_by_namespace_then_name() -> None:
    events = run(
        store(
            CLASS,
            ZONE,
            domain("team-b", "x.example.com", created="2026-01-02T00:00:00Z"),
            domain("team-a", "x.example.com", created="2026-01-02T00:00:00Z"),
        )
    )
    assert rejection(events, "team-b", "x-example-com", "Domain") == ["ClaimConflict"]
    assert rejection(events, "team-a", "x-example-com", "Domain") == []


def test_delegation_follows_the_owner_of_the_parent() -> None:
    events = run(
        store(
            CLASS,
            ZONE,
            service("team-b", "web"),
            service("team-c", "web"),
            domain("team-a", "shop.example.com"),
            domain("team-a", "api.shop.example.com", name="give-api", grantee="team-b"),
            domain("team-c", "pay.shop.example.com", created="2020-01-01T00:00:00Z"),
            domain("other", "blog.example.com"),
            ingress("team-b", "api", "api.shop.example.com"),
            ingress("team-c", "pay", "pay.shop.example.com"),
        )
    )
    assert rejection(events, "team-a", "give-api", "Domain") == []
    assert rejection(events, "team-c", "pay-shop-example-com", "Domain") == ["OwnershipDenied"]
    assert rejection(events, "other", "blog-example-com", "Domain") == ["OwnershipDenied"]
    assert domains(events)["api.shop.example.com"].owner_namespace == "team-b"
    assert rejection(events, "team-c", "pay") == ["OwnershipDenied"]


def test_claims_compare_normalized_names() -> None:
    events = run(
        store(
            CLASS,
            ZONE,
            domain("team-a", "Shop.Example.COM.", name="one", created="2026-01-01T00:00:00Z"),
            domain("team-b", "shop.example.com", name="two"),
        )
    )
    assert rejection(events, "team-a", "one", "Domain") == []
    assert rejection(events, "team-b", "two", "Domain") == ["ClaimConflict"]


def test_a_wildcard_host_belongs_to_the_owner_of_its_parent_and_covers_one_label() -> None:
    events = run(
        base(
            ingress("team-a", "wild", "*.shop.example.com"),
            ingress("team-b", "deep", "*.x.shop.example.com"),
        )
    )
    assert "*.shop.example.com" in domains(events)
    assert rejection(events, "team-b", "deep") == ["OwnershipDenied"]


def test_bad_pools_and_peers_are_rejected_with_their_fields() -> None:
    events = run(
        store(
            {"kind": "VipPool", "metadata": {"name": "bad"}, "spec": {"cidrs": ["10.0.0.1/24"]}},
            {"kind": "VipPool", "metadata": {"name": "empty"}, "spec": {}},
            {
                "kind": "BgpPeer",
                "metadata": {"name": "bad"},
                "spec": {"address": "10.0.0.1", "peerASN": 0, "localASN": 65000},
            },
        )
    )
    assert rejection(events, "-", "bad", "VipPool") == ["InvalidSpec"]
    assert rejection(events, "-", "empty", "VipPool") == ["EmptyPool"]
    assert rejection(events, "-", "bad", "BgpPeer") == ["InvalidSpec"]
    assert not [e for e in events.values() if isinstance(e, (c.PoolDesired, c.PeerDesired))]


def test_lb_services_of_other_classes_are_ignored() -> None:
    events = run(
        store(
            service("a", "mine", type="LoadBalancer"),
            service("a", "theirs", type="LoadBalancer", loadBalancerClass="other.io/lb"),
            service("a", "plain"),
        )
    )
    lbs = [e for e in events.values() if isinstance(e, c.LoadBalancerServiceDesired)]
    assert [e.service for e in lbs] == ["mine"]

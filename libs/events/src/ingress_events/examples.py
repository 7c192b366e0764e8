"""One valid example of every event type: for tests, docs and a new team's first subscriber."""

from __future__ import annotations

from . import catalogue as c

_INGRESS = c.ObjectRef(kind="Ingress", namespace="shop", name="storefront")
_BACKEND = c.BackendRef(namespace="shop", service="web", port=80)
_DOMAIN = c.VipOwner(kind="domain", host="shop.example.com")
_SERVICE = c.VipOwner(kind="service", namespace="shop", service="mqtt")


def examples(generation: int = 1) -> list[c.Event]:
    g = generation
    return [
        c.DomainDesired(
            generation=g,
            host="shop.example.com",
            owner_namespace="shop",
            ingress_class="ingress-domain",
            sources=[_INGRESS],
            routes=[
                c.Route(
                    path="/",
                    path_type="Prefix",
                    source=_INGRESS,
                    backends=[
                        c.WeightedBackend(backend=_BACKEND, weight=90),
                        c.WeightedBackend(
                            backend=c.BackendRef(namespace="shop", service="web-canary", port=80),
                            weight=10,
                        ),
                    ],
                ),
                c.Route(
                    path="/api",
                    path_type="Exact",
                    source=_INGRESS,
                    backends=[
                        c.WeightedBackend(
                            backend=c.BackendRef(namespace="shop", service="api", port=8080)
                        )
                    ],
                    timeouts=c.RouteTimeouts(request_seconds=5),
                    retries=c.RetryPolicy(attempts=2),
                    rewrite=c.Rewrite(prefix="/v1"),
                ),
            ],
            tls=c.TlsConfig(
                secret=c.ObjectRef(kind="Secret", namespace="shop", name="shop-tls"),
                content_hash="0" * 64,
            ),
            http_redirect_to_https=True,
            vip=c.VipRequest(pool="public"),
            dns=c.DnsOptions(ttl_seconds=30),
        ),
        c.DomainDeleted(generation=g, host="shop.example.com"),
        c.BackendEndpoints(
            generation=g,
            namespace="shop",
            service="web",
            port=80,
            port_name="http",
            endpoints=[
                c.Endpoint(address="10.244.1.7", port=8080, ready=True, node="node-a"),
                c.Endpoint(address="10.244.2.9", port=8080, ready=False, terminating=True),
            ],
        ),
        c.BackendDeleted(generation=g, namespace="shop", service="web", port=80),
        c.LoadBalancerServiceDesired(
            generation=g,
            namespace="shop",
            service="mqtt",
            ports=[c.ServicePort(name="mqtt", port=1883)],
            ip_families=["IPv4", "IPv6"],
            ip_family_policy="PreferDualStack",
        ),
        c.LoadBalancerServiceDeleted(generation=g, namespace="shop", service="mqtt"),
        c.PoolDesired(
            generation=g,
            pool="public",
            cidrs=["192.0.2.0/24", "2001:db8:1::/120"],
            exclude=["192.0.2.0", "192.0.2.255"],
            default=True,
            announce=c.PoolAnnouncement(communities=["65000:100"]),
        ),
        c.PoolDeleted(generation=g, pool="public"),
        c.PeerDesired(
            generation=g,
            peer="tor-a",
            address="192.0.2.254",
            peer_asn=65000,
            local_asn=65001,
            password=c.SecretKeyRef(namespace="ingress-domain", name="bgp", key="tor-a"),
        ),
        c.PeerDeleted(generation=g, peer="tor-a"),
        c.VipAssigned(
            generation=g,
            owner=_DOMAIN,
            addresses=["192.0.2.10"],
            pool="public",
            ports=[c.PortSpec(port=80), c.PortSpec(port=443)],
            observed_generation=g,
        ),
        c.VipReleased(generation=g, owner=_SERVICE, addresses=["192.0.2.11"]),
        c.VipRejected(
            generation=g,
            owner=_SERVICE,
            reason="PoolExhausted",
            message="pool public has no free IPv4 address",
            observed_generation=g,
        ),
        c.L4Programmed(
            generation=g,
            node="node-a",
            vip="192.0.2.10",
            dataplane="ipvs",
            services=[
                c.VirtualService(port=80, scheduler="mh", real_servers=2, ready_real_servers=2)
            ],
            observed_generation=g,
        ),
        c.L4NotReady(
            generation=g,
            node="node-a",
            vip="192.0.2.10",
            reason="NoReadyRealServers",
            message="the L7 pool has no ready endpoint",
        ),
        c.L4Removed(generation=g, node="node-a", vip="192.0.2.10"),
        c.L7Applied(
            generation=g,
            host="shop.example.com",
            observed_generation=g,
            envoys=3,
            config_version="42",
        ),
        c.L7Rejected(
            generation=g,
            host="shop.example.com",
            observed_generation=g,
            reason="EnvoyNack",
            message="Proto constraint validation failed",
        ),
        c.L7Removed(generation=g, host="shop.example.com"),
        c.DnsPublished(
            generation=g,
            fqdn="shop.example.com",
            zone="example.com",
            owner_id="cluster-a",
            records=[c.DnsRecord(record_type="A", values=["192.0.2.10"], ttl_seconds=30)],
            providers=["knot-local"],
            observed_generation=g,
        ),
        c.DnsRejected(
            generation=g,
            fqdn="shop.example.com",
            reason="ForeignRecord",
            message="an A record not owned by this cluster holds the name",
        ),
        c.DnsRemoved(generation=g, fqdn="shop.example.com"),
        c.RouteAnnounced(
            generation=g, node="node-a", vip="192.0.2.10", prefix="192.0.2.10/32", peers=["tor-a"]
        ),
        c.RouteWithdrawn(
            generation=g,
            node="node-a",
            vip="192.0.2.10",
            prefix="192.0.2.10/32",
            reason="L7NotReady",
        ),
        c.AdmissionAccepted(
            generation=g, component="ingress-watcher", object=_INGRESS, observed_generation=3
        ),
        c.AdmissionRejected(
            generation=g,
            component="ingress-watcher",
            object=_INGRESS,
            observed_generation=3,
            problems=[
                c.Problem(
                    reason="OwnershipDenied",
                    field="spec.rules[0].host",
                    host="pay.example.com",
                    message="namespace shop holds no Domain grant for pay.example.com",
                )
            ],
        ),
        c.AdmissionCleared(generation=g, component="ingress-watcher", object=_INGRESS),
        c.SessionStatus(
            generation=g,
            node="node-a",
            peer="tor-a",
            state="Established",
            established=True,
            since="2026-11-22T02:00:00Z",
        ),
    ]

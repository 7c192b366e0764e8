"""Envoy resources (listeners, route configurations, clusters, endpoints, secrets) from the
desired state of valid domains. Pure: the same input always gives byte-identical resources, so a
resource's digest says whether an Envoy already has it.

Ingress v1 path semantics, mapped onto Envoy's first-match route list:

* Exact -> ``path`` (the whole path without the query string, case-sensitive).
* Prefix and ImplementationSpecific (documented as Prefix) -> ``path_separated_prefix``: ``/foo``
  matches ``/foo``, ``/foo/`` and ``/foo/bar`` but never ``/foobar``; a trailing slash in the rule
  is dropped first, and ``/`` becomes ``prefix: /`` (it matches everything).
* Routes are ordered longest path first and, on the same path, Exact before Prefix: in a
  first-match list that order is exactly "the longest match wins, Exact beats Prefix".
* A wildcard host ``*.example.com`` matches one label only. Envoy's own ``*.`` domains match any
  depth, so each route of a wildcard virtual host also requires ``:authority`` to be one label
  followed by the suffix; the regex is built from the canonical hostname (letters, digits, '-' and
  escaped dots), never from free text.
* A host without a virtual host gets Envoy's 404.

The plain-HTTP virtual hosts are split over ``http_scopes`` route tables (scoped RDS), so that a
change to one domain re-sends, and makes Envoy rebuild, one table of ~1/64 of the fleet instead
of one table of all of it. HTTP has no SNI to choose a table by, and scoped RDS keys are exact
header fragments (no wildcards, case-sensitive), so a small Lua filter computes the key from the
Host the way routing sees it (lower case, port stripped) as :func:`http_scope` does, sets
``x-ingress-domain-scope`` and clears the route cache; Envoy then picks the scope again. A
wildcard domain may match a host of any scope, so its virtual host is in every table. Each
table removes the header before a request goes upstream. File mode keeps one table.

Cross-cluster backends (``remote_backends``, the seed's local-high / remote-low): every cluster of
such a domain is its own ``<ns>/<service>/<port>@<host>`` cluster whose load assignment holds the
local endpoints at priority 0 and each remote cluster's VIP as a locality of its own, at priority
``rank(remote.priority)`` (0 = mixed with the local endpoints by locality weight, 1.. = failover
levels, renumbered without gaps). Local endpoints that are not ready are listed as UNHEALTHY, so
Envoy sees the real share of healthy local capacity and spills to the next priority as it drops
(overprovisioning factor 1.4); panic routing is off for these clusters, so an unhealthy local pod
never takes traffic while a remote can.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import NamedTuple

from envoy.config.accesslog.v3 import accesslog_pb2  # type: ignore[import-untyped, unused-ignore]
from envoy.config.cluster.v3 import cluster_pb2  # type: ignore[import-untyped, unused-ignore]
from envoy.config.core.v3 import (  # type: ignore[import-untyped, unused-ignore]
    address_pb2,
    base_pb2,
    config_source_pb2,
    health_check_pb2,
)
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2  # type: ignore[import-untyped, unused-ignore]
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2  # type: ignore[import-untyped, unused-ignore]
from envoy.config.route.v3 import route_components_pb2, route_pb2, scoped_route_pb2  # type: ignore[import-untyped, unused-ignore]
from envoy.extensions.access_loggers.stream.v3 import stream_pb2  # type: ignore[import-untyped, unused-ignore]
from envoy.extensions.filters.http.lua.v3 import lua_pb2  # type: ignore[import-untyped, unused-ignore]
from envoy.extensions.filters.http.router.v3 import router_pb2  # type: ignore[import-untyped, unused-ignore]
from envoy.extensions.filters.listener.tls_inspector.v3 import (  # type: ignore[import-untyped, unused-ignore]
    tls_inspector_pb2,
)
from envoy.extensions.filters.network.http_connection_manager.v3 import (  # type: ignore[import-untyped, unused-ignore]
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import (  # type: ignore[import-untyped, unused-ignore]
    common_pb2,
    secret_pb2,
    tls_pb2,
)
from envoy.type.matcher.v3 import regex_pb2, string_pb2  # type: ignore[import-untyped, unused-ignore]
from envoy.type.v3 import percent_pb2  # type: ignore[import-untyped, unused-ignore]
from google.protobuf import (  # type: ignore[import-untyped, unused-ignore]
    any_pb2,
    duration_pb2,
    json_format,
    wrappers_pb2,
)
from google.protobuf.message import Message  # type: ignore[import-untyped, unused-ignore]
from ingress_events import catalogue as c

from .layout import FileLayout
from .model import SecretMaterial
from .validate import secret_name

LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
SCOPED_ROUTE = "type.googleapis.com/envoy.config.route.v3.ScopedRouteConfiguration"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
TYPES = (CLUSTER, ENDPOINT, SECRET, LISTENER, SCOPED_ROUTE, ROUTE)
"""Every type, in the order an update is pushed: clusters before their endpoints, both before
the listeners and routes that point at them (make before break)."""
SHORT = {
    LISTENER: "LDS",
    SCOPED_ROUTE: "SRDS",
    ROUTE: "RDS",
    CLUSTER: "CDS",
    ENDPOINT: "EDS",
    SECRET: "SDS",
}

HTTP_LISTENER = "http"
HTTPS_LISTENER = "https"
HTTP_ROUTES = "http"
"""The one plain-HTTP route table when ``http_scopes`` is 0 (file mode)."""
HTTP_SCOPE_HEADER = "x-ingress-domain-scope"
_SCOPE_MODULUS = 16777213
"""Keeps the hash below 2**24, so that Lua's doubles compute it exactly as Python does."""


def http_scope(host: str, scopes: int) -> int:
    """The scope (route table) of a plain-HTTP host; the Lua filter computes the same from the
    request's Host."""
    h = 0
    for byte in host.encode():
        h = (h * 31 + byte) % _SCOPE_MODULUS
    return h % scopes


def http_scope_routes(scope: int) -> str:
    return f"{HTTP_ROUTES}/{scope}"


def http_route_names(options: BuildOptions) -> tuple[str, ...]:
    """The plain-HTTP route tables."""
    if not options.http_scopes:
        return (HTTP_ROUTES,)
    return tuple(http_scope_routes(i) for i in range(options.http_scopes))


_SCOPE_LUA = f"""-- ingress-domain: the scoped-RDS key of the request (see http_scope in l7-config)
function envoy_on_request(handle)
  local host = string.lower(handle:headers():get(":authority") or "")
  host = string.gsub(host, ":%d+$", "")
  local h = 0
  for i = 1, #host do
    h = (h * 31 + string.byte(host, i)) % {_SCOPE_MODULUS}
  end
  handle:headers():replace("{HTTP_SCOPE_HEADER}", tostring(h % SCOPES))
  handle:clearRouteCache()
end
"""


def https_routes(host: str) -> str:
    return f"https/{host}"


def cluster_name(ref: c.BackendRef) -> str:
    return f"{ref.namespace}/{ref.service}/{ref.port}"


def remote_cluster_name(ref: c.BackendRef, host: str) -> str:
    """The cluster of ``ref`` for a domain with remote backends: the remote VIPs are the
    domain's, so the cluster cannot be shared with other domains."""
    return f"{cluster_name(ref)}@{host}"


NameOf = Callable[[c.BackendRef], str]


BackendKey = tuple[str, str, int]


def backend_key(ref: c.BackendRef) -> BackendKey:
    return (ref.namespace, ref.service, ref.port)


@dataclass(frozen=True)
class BuildOptions:
    listen_address: str = "0.0.0.0"
    http_port: int = 8080
    https_port: int = 8443
    https_redirect_port: int = 443
    access_log: bool = True
    local_locality_weight: int = 100
    """Locality weight per ready local endpoint in clusters with remote backends (a remote's
    ``weight`` is measured against it at the same priority)."""
    files: FileLayout | None = None
    """File mode: RDS, EDS and SDS are read from these files instead of over ADS."""
    http_scopes: int = 64
    """Plain-HTTP route tables (scoped RDS); 0: one table (file mode always has one)."""

    def __post_init__(self) -> None:
        if self.files is not None:
            object.__setattr__(self, "http_scopes", 0)


@dataclass(frozen=True)
class Resource:
    """One xDS resource as it goes on the wire: its deterministic serialization (``payload``,
    sent as is), a digest of it (its version), and its message, parsed from the payload only when
    something reads it (the JSON of golden files and file mode)."""

    name: str
    payload: bytes
    digest: str
    kind: type[Message]

    @functools.cached_property
    def message(self) -> Message:
        message = self.kind()
        message.ParseFromString(self.payload)
        return message


@dataclass(frozen=True)
class Snapshot:
    resources: Mapping[str, Mapping[str, Resource]]
    generations: Mapping[str, int]
    """host -> the domain.desired generation this snapshot carries."""
    deps: Mapping[str, frozenset[tuple[str, str]]] = field(default_factory=dict)
    """host -> every (type, resource name) that holds part of its configuration."""

    def get(self, type_url: str, name: str) -> Resource | None:
        return self.resources.get(type_url, {}).get(name)

    def to_json(self) -> dict[str, dict[str, object]]:
        return {
            SHORT[t]: {
                name: json_format.MessageToDict(r.message, preserving_proto_field_name=True)
                for name, r in sorted(self.resources.get(t, {}).items())
            }
            for t in TYPES
        }


def _any(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def _wire(name: str, payload: bytes, kind: type[Message]) -> Resource:
    return Resource(name, payload, hashlib.sha256(payload).hexdigest()[:16], kind)


def _resource(name: str, message: Message) -> Resource:
    resource = _wire(name, message.SerializeToString(deterministic=True), type(message))
    resource.__dict__["message"] = message  # already at hand: never parsed back
    return resource


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


_ROUTE_CONFIG_NAME = route_pb2.RouteConfiguration.DESCRIPTOR.fields_by_name["name"].number
_ROUTE_CONFIG_VHOSTS = route_pb2.RouteConfiguration.DESCRIPTOR.fields_by_name[
    "virtual_hosts"
].number


def _vhost_field(vhost: route_components_pb2.VirtualHost) -> bytes:
    """A virtual host as one ``virtual_hosts`` field of a RouteConfiguration's wire form."""
    return _field(_ROUTE_CONFIG_VHOSTS, vhost.SerializeToString(deterministic=True))


_ROUTE_CONFIG_REMOVE = route_pb2.RouteConfiguration.DESCRIPTOR.fields_by_name[
    "request_headers_to_remove"
].number


def _route_table(name: str, vhost_fields: Iterable[bytes], scoped: bool = False) -> Resource:
    """A RouteConfiguration of only a name, virtual hosts (see :func:`_vhost_field`) and, for a
    scoped table, the scope header removed before upstream: the wire form of a message is its
    fields in number order and a repeated field is its elements one after another, so this is
    byte for byte what serializing the assembled message gives, without copying 10,000 virtual
    hosts into it first."""
    payload = _field(_ROUTE_CONFIG_NAME, name.encode()) + b"".join(vhost_fields)
    if scoped:
        payload += _field(_ROUTE_CONFIG_REMOVE, HTTP_SCOPE_HEADER.encode())
    return _wire(name, payload, route_pb2.RouteConfiguration)


def _scope(scope: int) -> Resource:
    name = http_scope_routes(scope)
    return _resource(
        name,
        scoped_route_pb2.ScopedRouteConfiguration(
            name=name,
            route_configuration_name=name,
            key=scoped_route_pb2.ScopedRouteConfiguration.Key(
                fragments=[
                    scoped_route_pb2.ScopedRouteConfiguration.Key.Fragment(string_key=str(scope))
                ]
            ),
        ),
    )


def _ads() -> config_source_pb2.ConfigSource:
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(),
        resource_api_version=config_source_pb2.ApiVersion.V3,
    )


def _path_source(layout: FileLayout, where: tuple[str, str]) -> config_source_pb2.ConfigSource:
    # watched_directory: Envoy reloads on a move into the directory, which is how both our
    # writer (write + rename) and a Kubernetes ConfigMap volume (..data swap) update files.
    return config_source_pb2.ConfigSource(
        path_config_source=config_source_pb2.PathConfigSource(
            path=layout.path(where),
            watched_directory=base_pb2.WatchedDirectory(path=layout.group_dir(where[0])),
        ),
        resource_api_version=config_source_pb2.ApiVersion.V3,
    )


def _route_source(name: str, options: BuildOptions) -> config_source_pb2.ConfigSource:
    files = options.files
    return _ads() if files is None else _path_source(files, files.route(name))


def _endpoint_source(name: str, options: BuildOptions) -> config_source_pb2.ConfigSource:
    files = options.files
    return _ads() if files is None else _path_source(files, files.endpoints(name))


def _secret_source(name: str, options: BuildOptions) -> config_source_pb2.ConfigSource:
    files = options.files
    return _ads() if files is None else _path_source(files, files.secret(name))


def _duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(round(seconds * 1e9))
    return d


# ----------------------------------------------------------------------------- routes


def normalized_prefix(path: str) -> str:
    """A Prefix rule without its trailing slash ("/foo/" and "/foo" are the same rule)."""
    stripped = path.rstrip("/")
    return stripped or "/"


def route_order(route: c.Route) -> tuple[int, int, str]:
    path = route.path if route.path_type == "Exact" else normalized_prefix(route.path)
    return (-len(path), 0 if route.path_type == "Exact" else 1, path)


def ordered_routes(routes: Iterable[c.Route]) -> list[c.Route]:
    """Longest first, Exact before Prefix on the same path; a duplicate (same type and normalized
    path, e.g. from two Ingresses) keeps the first one in the event's order."""
    seen: set[tuple[int, str]] = set()
    unique: list[c.Route] = []
    for route in routes:
        _, kind, path = route_order(route)
        if (kind, path) in seen:
            continue
        seen.add((kind, path))
        unique.append(route)
    return sorted(unique, key=route_order)


def _authority_one_label(host: str) -> route_components_pb2.HeaderMatcher:
    suffix = host[1:].replace(".", r"\.")
    return route_components_pb2.HeaderMatcher(
        name=":authority",
        string_match=string_pb2.StringMatcher(
            safe_regex=regex_pb2.RegexMatcher(regex=rf"[^.:]+{suffix}(:[0-9]+)?")
        ),
    )


def _action(
    backends: list[c.WeightedBackend],
    route: c.Route | None,
    matched_prefix: str | None,
    names: NameOf = cluster_name,
) -> route_components_pb2.RouteAction:
    action = route_components_pb2.RouteAction()
    live = [b for b in backends if b.weight > 0]
    if len(live) == 1:
        action.cluster = names(live[0].backend)
    else:
        action.weighted_clusters.CopyFrom(
            route_components_pb2.WeightedCluster(
                clusters=[
                    route_components_pb2.WeightedCluster.ClusterWeight(
                        name=names(b.backend),
                        weight=wrappers_pb2.UInt32Value(value=b.weight),
                    )
                    for b in live
                ]
            )
        )
    if route is None:
        return action
    if route.timeouts is not None:
        if route.timeouts.request_seconds is not None:
            action.timeout.CopyFrom(_duration(route.timeouts.request_seconds))
        if route.timeouts.idle_seconds is not None:
            action.idle_timeout.CopyFrom(_duration(route.timeouts.idle_seconds))
    if route.retries is not None:
        policy = route_components_pb2.RetryPolicy(
            retry_on=",".join(route.retries.on),
            num_retries=wrappers_pb2.UInt32Value(value=route.retries.attempts),
        )
        if route.retries.per_try_timeout_seconds is not None:
            policy.per_try_timeout.CopyFrom(_duration(route.retries.per_try_timeout_seconds))
        action.retry_policy.CopyFrom(policy)
    if route.rewrite is not None:
        if route.rewrite.host is not None:
            action.host_rewrite_literal = route.rewrite.host
        if route.rewrite.prefix is not None:
            rewrite = route.rewrite.prefix
            if matched_prefix == "/":
                # Under "prefix: /" the matched text is the leading slash alone: "/x" must
                # become "/app/x", not "/appx".
                action.prefix_rewrite = rewrite if rewrite.endswith("/") else rewrite + "/"
            elif rewrite.rstrip("/"):
                # "/api" -> "/v2" keeps the separator of "/api/x": "/v2/x", never "/v2//x".
                action.prefix_rewrite = rewrite.rstrip("/")
            else:
                # "/api" -> "/": plain prefix replacement would give "//x"; the pattern is the
                # validated path with every non-alphanumeric character escaped.
                escaped = "".join(ch if ch.isalnum() else "\\" + ch for ch in matched_prefix or "")
                action.regex_rewrite.CopyFrom(
                    regex_pb2.RegexMatchAndSubstitute(
                        pattern=regex_pb2.RegexMatcher(regex=f"^{escaped}/?"), substitution="/"
                    )
                )
    return action


def _route(route: c.Route, host: str, names: NameOf = cluster_name) -> route_components_pb2.Route:
    match = route_components_pb2.RouteMatch()
    matched_prefix: str | None = None
    if route.path_type == "Exact":
        match.path = route.path
    else:
        matched_prefix = normalized_prefix(route.path)
        if matched_prefix == "/":
            match.prefix = "/"
        else:
            match.path_separated_prefix = matched_prefix
    if host.startswith("*."):
        match.headers.append(_authority_one_label(host))
    kind = "exact" if route.path_type == "Exact" else "prefix"
    return route_components_pb2.Route(
        name=f"{kind}:{route.path}",
        match=match,
        route=_action(list(route.backends), route, matched_prefix, names),
    )


def _virtual_host(
    domain: c.DomainDesired, names: NameOf = cluster_name
) -> route_components_pb2.VirtualHost:
    routes = [_route(r, domain.host, names) for r in ordered_routes(domain.routes)]
    if domain.default_backend is not None:
        match = route_components_pb2.RouteMatch(prefix="/")
        if domain.host.startswith("*."):
            match.headers.append(_authority_one_label(domain.host))
        routes.append(
            route_components_pb2.Route(
                name="default-backend",
                match=match,
                route=_action([domain.default_backend], None, None, names),
            )
        )
    return route_components_pb2.VirtualHost(name=domain.host, domains=[domain.host], routes=routes)


def _redirect_host(domain: c.DomainDesired, port: int) -> route_components_pb2.VirtualHost:
    redirect = route_components_pb2.RedirectAction(https_redirect=True)
    if port != 443:
        redirect.port_redirect = port
    return route_components_pb2.VirtualHost(
        name=domain.host,
        domains=[domain.host],
        routes=[
            route_components_pb2.Route(
                name="redirect-to-https",
                match=route_components_pb2.RouteMatch(prefix="/"),
                redirect=redirect,
            )
        ],
    )


# ----------------------------------------------------------------------------- listeners


def _router() -> hcm_pb2.HttpFilter:
    return hcm_pb2.HttpFilter(
        name="envoy.filters.http.router", typed_config=_any(router_pb2.Router())
    )


def _scope_filter(scopes: int) -> hcm_pb2.HttpFilter:
    code = _SCOPE_LUA.replace("SCOPES", str(scopes))
    return hcm_pb2.HttpFilter(
        name="envoy.filters.http.lua",
        typed_config=_any(lua_pb2.Lua(default_source_code=base_pb2.DataSource(inline_string=code))),
    )


def _scoped_routes() -> hcm_pb2.ScopedRoutes:
    fragment = hcm_pb2.ScopedRoutes.ScopeKeyBuilder.FragmentBuilder(
        header_value_extractor=hcm_pb2.ScopedRoutes.ScopeKeyBuilder.FragmentBuilder.HeaderValueExtractor(
            name=HTTP_SCOPE_HEADER, index=0
        )
    )
    return hcm_pb2.ScopedRoutes(
        name=HTTP_ROUTES,
        scope_key_builder=hcm_pb2.ScopedRoutes.ScopeKeyBuilder(fragments=[fragment]),
        rds_config_source=_ads(),
        scoped_rds=hcm_pb2.ScopedRds(scoped_rds_config_source=_ads()),
    )


def _hcm(
    stat_prefix: str, route_config: str, options: BuildOptions, scopes: int = 0
) -> listener_components_pb2.Filter:
    """``scopes`` > 0: the plain-HTTP manager, its route tables chosen by scope."""
    hcm = hcm_pb2.HttpConnectionManager(
        stat_prefix=stat_prefix,
        http_filters=[_scope_filter(scopes), _router()] if scopes else [_router()],
        # Routing sees the host without its port, so "a.example.com:8080" finds its virtual host.
        strip_any_host_port=True,
        # RFC 3986 normalization before matching: "/foo/../bar" cannot sneak past a rule.
        normalize_path=wrappers_pb2.BoolValue(value=True),
    )
    if scopes:
        hcm.scoped_routes.CopyFrom(_scoped_routes())
    else:
        hcm.rds.CopyFrom(
            hcm_pb2.Rds(
                config_source=_route_source(route_config, options), route_config_name=route_config
            )
        )
    if options.access_log:
        hcm.access_log.append(
            accesslog_pb2.AccessLog(
                name="envoy.access_loggers.stdout", typed_config=_any(stream_pb2.StdoutAccessLog())
            )
        )
    return listener_components_pb2.Filter(
        name="envoy.filters.network.http_connection_manager", typed_config=_any(hcm)
    )


def _address(host: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(
        socket_address=address_pb2.SocketAddress(address=host, port_value=port)
    )


def _http_listener(options: BuildOptions) -> listener_pb2.Listener:
    return listener_pb2.Listener(
        name=HTTP_LISTENER,
        address=_address(options.listen_address, options.http_port),
        filter_chains=[
            listener_components_pb2.FilterChain(
                filters=[_hcm("http", HTTP_ROUTES, options, options.http_scopes)]
            )
        ],
    )


def _filter_chain(
    domain: c.DomainDesired, options: BuildOptions
) -> listener_components_pb2.FilterChain:
    """A TLS domain's filter chain on the HTTPS listener: matched by SNI, its certificate over
    SDS, its own route configuration."""
    assert domain.tls is not None
    sname = secret_name(domain.tls.secret)
    context = tls_pb2.DownstreamTlsContext(
        common_tls_context=tls_pb2.CommonTlsContext(
            tls_certificate_sds_secret_configs=[
                secret_pb2.SdsSecretConfig(name=sname, sds_config=_secret_source(sname, options))
            ],
            alpn_protocols=["h2", "http/1.1"],
        )
    )
    return listener_components_pb2.FilterChain(
        name=domain.host,
        filter_chain_match=listener_components_pb2.FilterChainMatch(server_names=[domain.host]),
        transport_socket=base_pb2.TransportSocket(
            name="envoy.transport_sockets.tls", typed_config=_any(context)
        ),
        filters=[_hcm("https", https_routes(domain.host), options)],
    )


def _https_listener(
    chains: Iterable[listener_components_pb2.FilterChain], options: BuildOptions
) -> listener_pb2.Listener:
    return listener_pb2.Listener(
        name=HTTPS_LISTENER,
        address=_address(options.listen_address, options.https_port),
        listener_filters=[
            listener_components_pb2.ListenerFilter(
                name="envoy.filters.listener.tls_inspector",
                typed_config=_any(tls_inspector_pb2.TlsInspector()),
            )
        ],
        filter_chains=list(chains),
    )


# ----------------------------------------------------------------------------- clusters


def _cluster(name: str, options: BuildOptions, remote: bool = False) -> cluster_pb2.Cluster:
    cluster = cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.DiscoveryType.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(
            eds_config=_endpoint_source(name, options)
        ),
        connect_timeout=_duration(2.0),
        lb_policy=cluster_pb2.Cluster.LbPolicy.ROUND_ROBIN,
    )
    if remote:
        cluster.common_lb_config.CopyFrom(
            cluster_pb2.Cluster.CommonLbConfig(
                locality_weighted_lb_config=cluster_pb2.Cluster.CommonLbConfig.LocalityWeightedLbConfig(),
                # Never route to a not-ready local pod: the next priority takes the traffic.
                healthy_panic_threshold=percent_pb2.Percent(value=0.0),
            )
        )
    return cluster


def _lb_endpoint(
    e: c.Endpoint | c.RemoteBackend, healthy: bool
) -> endpoint_components_pb2.LbEndpoint:
    return endpoint_components_pb2.LbEndpoint(
        endpoint=endpoint_components_pb2.Endpoint(address=_address(e.address, e.port)),
        health_status=(
            health_check_pb2.HealthStatus.HEALTHY
            if healthy
            else health_check_pb2.HealthStatus.UNHEALTHY
        ),
    )


def _ready(ep: c.Endpoint) -> bool:
    # Only ready endpoints take traffic; a terminating one is never ready.
    return ep.ready and not ep.terminating


def _load_assignment(
    name: str, backend: c.BackendEndpoints | None
) -> endpoint_pb2.ClusterLoadAssignment:
    by_zone: dict[str, list[c.Endpoint]] = {}
    if backend is not None:
        for ep in backend.endpoints:
            if _ready(ep):
                by_zone.setdefault(ep.zone or "", []).append(ep)
    localities = []
    for zone in sorted(by_zone):
        eps = sorted(by_zone[zone], key=lambda e: (e.address, e.port))
        localities.append(
            endpoint_components_pb2.LocalityLbEndpoints(
                locality=base_pb2.Locality(zone=zone),
                lb_endpoints=[_lb_endpoint(e, True) for e in eps],
            )
        )
    return endpoint_pb2.ClusterLoadAssignment(cluster_name=name, endpoints=localities)


def priority_ranks(remotes: Iterable[c.RemoteBackend]) -> dict[int, int]:
    """Envoy priority of each catalogue priority: 0 stays 0 (with the local endpoints); the
    others become 1, 2, ... in order, without gaps."""
    levels = sorted({r.priority for r in remotes if r.priority > 0})
    return {0: 0} | {p: i + 1 for i, p in enumerate(levels)}


def _remote_load_assignment(
    name: str,
    backend: c.BackendEndpoints | None,
    remotes: list[c.RemoteBackend],
    options: BuildOptions,
) -> endpoint_pb2.ClusterLoadAssignment:
    """Local endpoints at priority 0, weighted ``local_locality_weight`` per ready endpoint
    (not-ready ones listed UNHEALTHY so the healthy share is real); each remote VIP its own
    locality at its ranked priority with its own weight."""
    by_zone: dict[str, list[c.Endpoint]] = {}
    for ep in backend.endpoints if backend is not None else []:
        by_zone.setdefault(ep.zone or "", []).append(ep)
    localities = []
    for zone in sorted(by_zone):
        eps = sorted(by_zone[zone], key=lambda e: (e.address, e.port, not _ready(e)))
        ready = sum(1 for e in eps if _ready(e))
        localities.append(
            endpoint_components_pb2.LocalityLbEndpoints(
                locality=base_pb2.Locality(zone=zone),
                lb_endpoints=[_lb_endpoint(e, _ready(e)) for e in eps],
                # A weight of at least 1 is required; a zone with no ready endpoint gets no
                # traffic anyway (its hosts are unhealthy).
                load_balancing_weight=wrappers_pb2.UInt32Value(
                    value=max(1, ready * options.local_locality_weight)
                ),
                priority=0,
            )
        )
    ranks = priority_ranks(remotes)
    for remote in sorted(remotes, key=lambda r: (ranks[r.priority], r.cluster, r.address, r.port)):
        localities.append(
            endpoint_components_pb2.LocalityLbEndpoints(
                locality=base_pb2.Locality(region=remote.cluster),
                lb_endpoints=[_lb_endpoint(remote, True)],
                load_balancing_weight=wrappers_pb2.UInt32Value(value=remote.weight),
                priority=ranks[remote.priority],
            )
        )
    return endpoint_pb2.ClusterLoadAssignment(cluster_name=name, endpoints=localities)


def _secret(name: str, material: SecretMaterial) -> secret_pb2.Secret:
    return secret_pb2.Secret(
        name=name,
        tls_certificate=common_pb2.TlsCertificate(
            certificate_chain=base_pb2.DataSource(inline_bytes=material.cert_pem),
            private_key=base_pb2.DataSource(inline_bytes=material.key_pem),
        ),
    )


# ----------------------------------------------------------------------------- snapshot


def _bind_host(host: str) -> NameOf:
    def name(ref: c.BackendRef) -> str:
        return remote_cluster_name(ref, host)

    return name


@dataclass(frozen=True)
class DomainParts:
    """What one domain contributes to a snapshot, built from one ``DomainDesired`` object.

    It names clusters but holds nothing built from endpoints, so an endpoint change never
    invalidates it."""

    domain: c.DomainDesired
    http_vhost: bytes
    """Its virtual host on the plain-HTTP route table (the 301 vhost for a redirecting domain),
    as a field of that table's wire form."""
    http_scope: int | None
    """The plain-HTTP table it is in; None: every table (a wildcard host, or one table)."""
    https_route: Resource | None
    filter_chain: listener_components_pb2.FilterChain | None
    clusters: tuple[tuple[str, BackendKey], ...]
    """(cluster name, backend) of every backend it routes to, each name once."""
    remotes: tuple[c.RemoteBackend, ...]
    """Remote backends that take traffic (weight > 0); non-empty makes its clusters its own."""
    secret: str | None
    deps: frozenset[tuple[str, str]]


def domain_parts(domain: c.DomainDesired, options: BuildOptions) -> DomainParts:
    refs = [b.backend for r in domain.routes for b in r.backends]
    if domain.default_backend is not None:
        refs.append(domain.default_backend.backend)
    # A remote with weight 0 is switched off: it contributes nothing.
    remotes = tuple(r for r in domain.remote_backends if r.weight > 0)
    names: NameOf = _bind_host(domain.host) if remotes else cluster_name
    unique: dict[str, BackendKey] = {}
    for ref in refs:
        unique.setdefault(names(ref), backend_key(ref))
    clusters = tuple(unique.items())
    scope: int | None = None
    used: set[tuple[str, str]] = {(LISTENER, HTTP_LISTENER)}
    if not options.http_scopes:
        used.add((ROUTE, HTTP_ROUTES))
    elif domain.host.startswith("*."):
        for table in http_route_names(options):
            used |= {(ROUTE, table), (SCOPED_ROUTE, table)}
    else:
        scope = http_scope(domain.host, options.http_scopes)
        table = http_scope_routes(scope)
        used |= {(ROUTE, table), (SCOPED_ROUTE, table)}
    for name, _ in clusters:
        used |= {(CLUSTER, name), (ENDPOINT, name)}
    vhost = _virtual_host(domain, names)
    https_route = chain = sname = None
    if domain.tls is not None:
        sname = secret_name(domain.tls.secret)
        rname = https_routes(domain.host)
        https_route = _resource(
            rname, route_pb2.RouteConfiguration(name=rname, virtual_hosts=[vhost])
        )
        chain = _filter_chain(domain, options)
        used |= {(SECRET, sname), (LISTENER, HTTPS_LISTENER), (ROUTE, rname)}
        if domain.http_redirect_to_https:
            vhost = _redirect_host(domain, options.https_redirect_port)
    return DomainParts(
        domain=domain,
        http_vhost=_vhost_field(vhost),
        http_scope=scope,
        https_route=https_route,
        filter_chain=chain,
        clusters=clusters,
        remotes=remotes,
        secret=sname,
        deps=frozenset(used),
    )


def _same_parts(a: tuple[DomainParts, ...], b: tuple[DomainParts, ...]) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


class _Feed(NamedTuple):
    """A cluster's ClusterLoadAssignment and what it was built from."""

    key: BackendKey
    backend: c.BackendEndpoints | None
    remotes: tuple[c.RemoteBackend, ...]
    resource: Resource


def _assignment(
    name: str,
    key: BackendKey,
    backends: Mapping[BackendKey, c.BackendEndpoints],
    remotes: tuple[c.RemoteBackend, ...],
    options: BuildOptions,
) -> _Feed:
    found = backends.get(key)
    assignment = (
        _remote_load_assignment(name, found, list(remotes), options)
        if remotes
        else _load_assignment(name, found)
    )
    return _Feed(key, found, remotes, _resource(name, assignment))


def _secret_resource(
    name: str, material: SecretMaterial, known: tuple[SecretMaterial, Resource] | None
) -> tuple[SecretMaterial, Resource]:
    if known is not None and known[0] == material:
        return known
    return material, _resource(name, _secret(name, material))


@dataclass
class BuildCache:
    """What earlier builds made, for :func:`build_snapshot` to reuse: a domain's parts while it
    is the same ``DomainDesired`` object, a cluster by name, a cluster's endpoints while the same
    ``BackendEndpoints`` object (and remotes) feed it, a secret while its material is equal, and
    the shared route table and HTTPS listener while all their parts are the same. After a build
    it holds exactly what that build used."""

    options: BuildOptions | None = None
    domains: dict[str, DomainParts] = field(default_factory=dict)
    clusters: dict[tuple[str, bool], Resource] = field(default_factory=dict)
    endpoints: dict[str, _Feed] = field(default_factory=dict)
    secrets: dict[str, tuple[SecretMaterial, Resource]] = field(default_factory=dict)
    every: tuple[DomainParts, ...] | None = None
    """The parts of the last build, in host order."""
    http_routes: tuple[tuple[DomainParts, ...], Resource] | None = None
    """The one plain-HTTP table (http_scopes 0) and the parts it was built from."""
    http_tables: dict[str, tuple[tuple[DomainParts, ...], Resource]] = field(default_factory=dict)
    """Per plain-HTTP scope table: the parts in it and the table."""
    scopes: dict[str, Resource] = field(default_factory=dict)
    https_listener: tuple[tuple[DomainParts, ...], Resource] | None = None
    http_listener: Resource | None = None
    snapshot: Snapshot | None = None
    """The last build's result."""
    reused: int = 0
    """Domains whose parts the last build reused (tests and the benchmark read it)."""

    def reset(self, options: BuildOptions) -> None:
        """Everything built depends on the options: new options start from nothing."""
        fresh = BuildCache(options=options)
        for f in fields(self):
            setattr(self, f.name, getattr(fresh, f.name))


def build_snapshot(
    domains: Mapping[str, c.DomainDesired],
    backends: Mapping[BackendKey, c.BackendEndpoints],
    secrets: Mapping[str, SecretMaterial],
    options: BuildOptions,
    cache: BuildCache | None = None,
) -> Snapshot:
    """Resources for ``domains`` (already validated; TLS domains have their material in
    ``secrets``). Only clusters some domain uses are built: a backend nobody routes to costs
    Envoy nothing. With a ``cache`` the result is the same, built only where its inputs changed
    (a change costs in proportion to what it touches, plus assembling the shared resources)."""
    if cache is None:
        cache = BuildCache(options=options)
    elif cache.options != options:
        cache.reset(options)
    out: dict[str, dict[str, Resource]] = {t: {} for t in TYPES}
    hosts = sorted(domains)
    parts: list[DomainParts] = []
    reused = 0
    for host in hosts:
        domain = domains[host]
        known = cache.domains.get(host)
        if known is not None and known.domain is domain:
            reused += 1
            parts.append(known)
        else:
            parts.append(domain_parts(domain, options))
    every = tuple(parts)
    cache.reused = reused
    last = cache.snapshot
    if last is not None and cache.every is not None and _same_parts(cache.every, every):
        # The same domains: only endpoints and key material can differ.
        cache.snapshot = _refresh(last, backends, secrets, options, cache)
        return cache.snapshot
    clusters: dict[tuple[str, bool], Resource] = {}
    endpoints: dict[str, _Feed] = {}
    used_secrets: dict[str, tuple[SecretMaterial, Resource]] = {}
    for part in parts:
        remote = bool(part.remotes)
        for name, key in part.clusters:
            if name in out[CLUSTER]:
                continue
            cluster = cache.clusters.get((name, remote))
            if cluster is None:
                cluster = _resource(name, _cluster(name, options, remote))
            clusters[(name, remote)] = cluster
            out[CLUSTER][name] = cluster
            feed = cache.endpoints.get(name)
            if (
                feed is None
                or feed.backend is not backends.get(key)
                or feed.remotes != part.remotes
            ):
                feed = _assignment(name, key, backends, part.remotes, options)
            endpoints[name] = feed
            out[ENDPOINT][name] = feed.resource
        if part.secret is not None:
            assert part.https_route is not None
            out[ROUTE][part.https_route.name] = part.https_route
            if part.secret not in used_secrets:
                used = _secret_resource(
                    part.secret, secrets[part.secret], cache.secrets.get(part.secret)
                )
                used_secrets[part.secret] = used
                out[SECRET][part.secret] = used[1]
    if cache.http_listener is None:
        cache.http_listener = _resource(HTTP_LISTENER, _http_listener(options))
    out[LISTENER][HTTP_LISTENER] = cache.http_listener
    if not options.http_scopes:
        if cache.http_routes is None or not _same_parts(cache.http_routes[0], every):
            cache.http_routes = (every, _route_table(HTTP_ROUTES, [p.http_vhost for p in parts]))
        out[ROUTE][HTTP_ROUTES] = cache.http_routes[1]
    else:
        _scoped_tables(parts, options, cache, out)
    tls = tuple(p for p in parts if p.filter_chain is not None)
    if tls:
        # An HTTPS listener with no filter chain is invalid, so it exists only with a TLS domain.
        if cache.https_listener is None or not _same_parts(cache.https_listener[0], tls):
            chains = [p.filter_chain for p in tls if p.filter_chain is not None]
            listener = _resource(HTTPS_LISTENER, _https_listener(chains, options))
            cache.https_listener = (tls, listener)
        out[LISTENER][HTTPS_LISTENER] = cache.https_listener[1]
    else:
        cache.https_listener = None
    cache.every = every
    cache.domains = dict(zip(hosts, parts, strict=True))
    cache.clusters = clusters
    cache.endpoints = endpoints
    cache.secrets = used_secrets
    cache.snapshot = Snapshot(
        resources=out,
        generations={h: domains[h].generation for h in hosts},
        deps={p.domain.host: p.deps for p in parts},
    )
    return cache.snapshot


def _scoped_tables(
    parts: list[DomainParts],
    options: BuildOptions,
    cache: BuildCache,
    out: dict[str, dict[str, Resource]],
) -> None:
    """The plain-HTTP tables, one per scope, each rebuilt only when its parts changed. Hosts stay
    in sorted order within a table; a wildcard host is in every table."""
    members: list[list[DomainParts]] = [[] for _ in range(options.http_scopes)]
    for part in parts:
        if part.http_scope is None:
            for table in members:
                table.append(part)
        else:
            members[part.http_scope].append(part)
    tables: dict[str, tuple[tuple[DomainParts, ...], Resource]] = {}
    for scope, table_parts in enumerate(members):
        name = http_scope_routes(scope)
        these = tuple(table_parts)
        known = cache.http_tables.get(name)
        if known is None or not _same_parts(known[0], these):
            known = (these, _route_table(name, [p.http_vhost for p in these], scoped=True))
        tables[name] = known
        out[ROUTE][name] = known[1]
        if name not in cache.scopes:
            cache.scopes[name] = _scope(scope)
        out[SCOPED_ROUTE][name] = cache.scopes[name]
    cache.http_tables = tables


def _refresh(
    last: Snapshot,
    backends: Mapping[BackendKey, c.BackendEndpoints],
    secrets: Mapping[str, SecretMaterial],
    options: BuildOptions,
    cache: BuildCache,
) -> Snapshot:
    """``last`` with the endpoints and secrets of now: the rest depends on the domains alone.
    The endpoint-only fast path: one lookup per cluster, and ``last`` itself when nothing
    changed."""
    feeds: dict[str, Resource] = {}
    for name, feed in cache.endpoints.items():
        if backends.get(feed.key) is not feed.backend:
            fresh = _assignment(name, feed.key, backends, feed.remotes, options)
            cache.endpoints[name] = fresh
            feeds[name] = fresh.resource
    keys: dict[str, Resource] = {}
    for name, known in cache.secrets.items():
        used = _secret_resource(name, secrets[name], known)
        if used is not known:
            cache.secrets[name] = used
            keys[name] = used[1]
    if not feeds and not keys:
        return last
    resources = dict(last.resources)
    if feeds:
        resources[ENDPOINT] = {**resources[ENDPOINT], **feeds}
    if keys:
        resources[SECRET] = {**resources[SECRET], **keys}
    return Snapshot(resources=resources, generations=last.generations, deps=last.deps)


def snapshot_json(snapshot: Snapshot) -> str:
    return json.dumps(snapshot.to_json(), indent=2, sort_keys=True) + "\n"

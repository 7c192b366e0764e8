"""Kubernetes objects -> the catalogue's desired-state and admission events.

``normalize(objects, policy)`` is a pure function of everything the watcher knows. Its output is
the complete desired state, one event per key, each with the placeholder generation 1 (the plan
gives real generations). Every problem with a user object is reported on that object only: a bad
Ingress loses what is bad in it (a rule, a host, or all of it) and never touches any other.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from ingress_events import catalogue as c
from ingress_events.catalogue import Family
from pydantic import TypeAdapter, ValidationError

from .objects import (
    CLUSTER,
    SUMMARY,
    Age,
    Obj,
    Objects,
    ObjKey,
    annotations_of,
    labels_of,
    meta,
    name_of,
    namespace_of,
    object_generation,
    slice_endpoints,
    spec,
)
from .ownership import Issue, Ownership, issues_of, resolve
from .validate import (
    Annotations,
    Invalid,
    claim_host,
    ingress_host,
    ingress_path,
    parse_annotations,
)

StateKey = tuple[Family, tuple[str, ...]]
DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
_PLACEHOLDER = 1
_MAX_MESSAGE = 4000


@dataclass(frozen=True)
class Policy:
    controller: str = "ingress-domain.io/ingress-controller"
    """IngressClass ``spec.controller`` value that names this system."""
    lb_class: str = "ingress-domain.io/lb"
    lb_without_class: bool = True
    """Whether LoadBalancer Services without ``spec.loadBalancerClass`` are ours (as MetalLB)."""
    system_namespace: str = "ingress-domain"
    """Where BgpPeer password Secrets live when the reference names no namespace."""
    component: str = "ingress-watcher"


def key_of_event(event: c.Event) -> StateKey:
    return (event.family, event.key())


def _ref(kind: str, obj: Obj) -> c.ObjectRef:
    uid = meta(obj).get("uid")
    return c.ObjectRef(
        kind=kind,
        namespace=namespace_of(obj),
        name=name_of(obj),
        uid=str(uid) if uid else None,
    )


def _generation(obj: Obj) -> int | None:
    """metadata.generation when the object has one (manifests often do not)."""
    value = meta(obj).get("generation")
    return value if isinstance(value, int) and value >= 0 else None


def _winner(issue: Issue) -> c.ObjectRef | None:
    if issue.winner is None:
        return None
    kind, namespace, name = issue.winner
    try:
        return c.ObjectRef(kind=kind, namespace=namespace, name=name)
    except ValidationError:
        return None


def _problem(issue: Issue) -> c.Problem:
    return c.Problem(
        reason=issue.reason,
        field=issue.field[:256],
        message=issue.message[:_MAX_MESSAGE],
        host=issue.host[:512] if issue.host else None,
        path=issue.path[:2048] if issue.path else None,
        winner=_winner(issue),
    )


@dataclass
class _Out:
    policy: Policy
    events: dict[StateKey, c.Event] = field(default_factory=dict)
    problems: dict[tuple[str, str, str], list[Issue]] = field(
        default_factory=lambda: defaultdict(list)
    )
    checked: dict[tuple[str, str, str], Obj] = field(default_factory=dict)

    def add(self, event: c.Event) -> None:
        self.events[key_of_event(event)] = event

    def check(self, kind: str, obj: Obj) -> None:
        self.checked[(kind, namespace_of(obj), name_of(obj))] = obj

    def issue(self, kind: str, obj: Obj, issue: Issue) -> None:
        self.check(kind, obj)
        self.problems[(kind, namespace_of(obj), name_of(obj))].append(issue)

    def admissions(self) -> None:
        for (kind, _, _), obj in self.checked.items():
            try:
                ref = _ref(kind, obj)
            except ValidationError:
                continue  # sources drop objects with invalid names; nothing to key this by
            found = self.problems.get((kind, ref.namespace, ref.name))
            if found:
                self.add(
                    c.AdmissionRejected(
                        generation=_PLACEHOLDER,
                        component=self.policy.component,
                        object=ref,
                        observed_generation=object_generation(obj),
                        problems=[_problem(i) for i in found[:100]],
                    )
                )
            else:
                self.add(
                    c.AdmissionAccepted(
                        generation=_PLACEHOLDER,
                        component=self.policy.component,
                        object=ref,
                        observed_generation=object_generation(obj),
                    )
                )


# --------------------------------------------------------------------------- IngressClass


def our_classes(classes: Iterable[Obj], policy: Policy) -> tuple[frozenset[str], str | None]:
    """The names of our IngressClasses, and the cluster's default class if it is one of them."""
    ours: set[str] = set()
    defaults: list[tuple[Age, str]] = []
    for obj in classes:
        name = name_of(obj)
        if spec(obj).get("controller") == policy.controller:
            ours.add(name)
        if annotations_of(obj).get(DEFAULT_CLASS_ANNOTATION) == "true":
            defaults.append((Age.of(obj), name))
    # With several defaults the API server refuses new class-less Ingresses; for existing ones
    # the oldest default decides, so the answer does not flip with list order.
    default = min(defaults)[1] if defaults else None
    return frozenset(ours), default if default in ours else None


def ingress_class_of(obj: Obj, ours: frozenset[str], default: str | None) -> str | None:
    name = spec(obj).get("ingressClassName")
    if isinstance(name, str) and name:
        return name if name in ours else None
    return default


# --------------------------------------------------------------------------- Ingress


@dataclass(frozen=True)
class _Route:
    host: str
    path: str
    path_type: str
    backend: c.WeightedBackend
    source: c.ObjectRef
    age: Age
    ann: Annotations
    namespace: str
    field: str


@dataclass
class _Host:
    routes: dict[tuple[str, str], list[_Route]] = field(default_factory=dict)
    sources: dict[tuple[str, str], c.ObjectRef] = field(default_factory=dict)
    tls: tuple[Age, c.TlsConfig, Annotations] | None = None
    default: tuple[Age, c.WeightedBackend] | None = None
    vip: tuple[Age, Annotations] | None = None
    ingress_class: str | None = None


def _resolve_backend(
    backend: Mapping[str, Any], namespace: str, services: Mapping[tuple[str, str], Obj], where: str
) -> c.BackendRef:
    if "resource" in backend:
        raise Invalid("ResourceBackendUnsupported", f"{where}: only Service backends are served")
    svc = backend.get("service")
    if not isinstance(svc, Mapping) or not isinstance(svc.get("name"), str):
        raise Invalid("MissingService", f"{where}: the backend names no Service")
    name = svc["name"]
    service = services.get((namespace, name))
    if service is None:
        raise Invalid("ServiceNotFound", f"{where}: Service {namespace}/{name} does not exist")
    if spec(service).get("type") == "ExternalName":
        raise Invalid("ExternalNameUnsupported", f"{where}: Service {name} is an ExternalName")
    port = svc.get("port") if isinstance(svc.get("port"), Mapping) else {}
    assert isinstance(port, Mapping)
    ports = [p for p in spec(service).get("ports") or [] if isinstance(p, Mapping)]
    if isinstance(port.get("name"), str) and port["name"]:
        match = [p for p in ports if p.get("name") == port["name"]]
        if not match:
            raise Invalid(
                "ServicePortNotFound", f"{where}: Service {name} has no port named {port['name']}"
            )
        number = match[0].get("port")
    elif isinstance(port.get("number"), int):
        number = port["number"]
        if not any(p.get("port") == number for p in ports):
            raise Invalid("ServicePortNotFound", f"{where}: Service {name} has no port {number}")
    else:
        raise Invalid("MissingServicePort", f"{where}: the backend names no port of {name}")
    try:
        return c.BackendRef(namespace=namespace, service=name, port=number)
    except ValidationError as exc:
        raise Invalid("InvalidBackend", f"{where}: {exc.errors()[0]['msg']}") from exc


def _ingress(
    obj: Obj,
    class_name: str,
    objects: Objects,
    own: Ownership,
    hosts: dict[str, _Host],
    out: _Out,
) -> None:
    namespace = namespace_of(obj)
    ref = _ref("Ingress", obj)
    source = ref.model_copy(update={"generation": _generation(obj)})
    age = Age.of(obj)
    out.check("Ingress", obj)
    services = objects.get("Service", {})
    ann = parse_annotations(annotations_of(obj), kind="Ingress")
    for reason, name, message in ann.problems:
        out.issue("Ingress", obj, Issue(reason, f"metadata.annotations[{name}]", message))
    if ann.problems:
        # A half-understood Ingress would get a VIP, timeouts or weights the user did not ask
        # for: nothing of it is used until its annotations are fixed.
        return
    body = spec(obj)
    rules = [r for r in body.get("rules") or [] if isinstance(r, Mapping)]
    if not rules:
        out.issue(
            "Ingress",
            obj,
            Issue(
                "NoHost",
                "spec.rules",
                "an Ingress needs at least one rule with a host: a domain is what gets a VIP",
            ),
        )
        return
    candidates: list[_Route] = []
    rule_hosts: dict[str, int] = {}
    for i, rule in enumerate(rules):
        where = f"spec.rules[{i}]"
        raw_host = rule.get("host")
        if not isinstance(raw_host, str) or not raw_host:
            out.issue("Ingress", obj, Issue("NoHost", f"{where}.host", "a rule needs a host"))
            continue
        try:
            host = ingress_host(raw_host)
        except Invalid as exc:
            out.issue("Ingress", obj, Issue(exc.reason, f"{where}.host", exc.message, raw_host))
            continue
        rule_hosts.setdefault(host, i)
        http = rule.get("http") if isinstance(rule.get("http"), Mapping) else {}
        assert isinstance(http, Mapping)
        for j, item in enumerate(p for p in http.get("paths") or [] if isinstance(p, Mapping)):
            at = f"{where}.http.paths[{j}]"
            path_type = item.get("pathType") or "Prefix"
            if path_type not in ("Exact", "Prefix", "ImplementationSpecific"):
                out.issue(
                    "Ingress",
                    obj,
                    Issue("InvalidPathType", f"{at}.pathType", f"{path_type!r}", host),
                )
                continue
            # ImplementationSpecific is served as Prefix (documented): one meaning everywhere.
            path_type = "Exact" if path_type == "Exact" else "Prefix"
            raw_path = item.get("path")
            try:
                path = ingress_path(raw_path if isinstance(raw_path, str) else "", path_type)
                backend_raw = item.get("backend")
                backend = _resolve_backend(
                    backend_raw if isinstance(backend_raw, Mapping) else {},
                    namespace,
                    services,
                    f"{at}.backend",
                )
            except Invalid as exc:
                out.issue(
                    "Ingress",
                    obj,
                    Issue(exc.reason, at, exc.message, host, str(raw_path)[:2048]),
                )
                continue
            denied = own.check_route(namespace, host, path)
            if denied is not None:
                out.issue(
                    "Ingress",
                    obj,
                    Issue(denied.reason, at, denied.message, host, path),
                )
                continue
            weight = ann.canary_weight if ann.canary_weight is not None else 100
            candidates.append(
                _Route(
                    host,
                    path,
                    path_type,
                    c.WeightedBackend(backend=backend, weight=weight),
                    ref,
                    age,
                    ann,
                    namespace,
                    at,
                )
            )

    # TLS: a host served with a broken TLS reference would silently be plain HTTP only, so such
    # a host gets nothing from this Ingress.
    tls_for: dict[str, c.TlsConfig] = {}
    broken: set[str] = set()
    for k, entry in enumerate(t for t in body.get("tls") or [] if isinstance(t, Mapping)):
        where = f"spec.tls[{k}]"
        entry_hosts = [h for h in entry.get("hosts") or [] if isinstance(h, str)]
        if not entry_hosts:
            out.issue(
                "Ingress",
                obj,
                Issue("TlsHostsMissing", f"{where}.hosts", "a TLS entry names the hosts it covers"),
            )
            continue
        secret_name = entry.get("secretName")
        secret_problem: Issue | None = None
        config: c.TlsConfig | None = None
        if not isinstance(secret_name, str) or not secret_name:
            secret_problem = Issue("TlsSecretMissing", f"{where}.secretName", "no secretName")
        elif "/" in secret_name:
            secret_problem = Issue(
                "TlsSecretCrossNamespace",
                f"{where}.secretName",
                f"{secret_name!r}: an Ingress may only use Secrets of its own namespace "
                f"({namespace})",
            )
        else:
            secret = objects.get("Secret", {}).get((namespace, secret_name))
            summary = secret.get(SUMMARY) if secret is not None else None
            if not isinstance(summary, Mapping):
                secret_problem = Issue(
                    "TlsSecretNotFound",
                    f"{where}.secretName",
                    f"Secret {namespace}/{secret_name} does not exist",
                )
            elif summary.get("problem"):
                secret_problem = Issue(
                    "TlsSecretInvalid",
                    f"{where}.secretName",
                    f"Secret {namespace}/{secret_name}: {summary['problem']}",
                )
            else:
                assert secret is not None
                config = c.TlsConfig(
                    secret=_ref("Secret", secret), content_hash=str(summary["hash"])
                )
        for raw_host in entry_hosts:
            try:
                host = ingress_host(raw_host)
            except Invalid as exc:
                out.issue(
                    "Ingress", obj, Issue(exc.reason, f"{where}.hosts", exc.message, raw_host)
                )
                continue
            if host not in rule_hosts:
                out.issue(
                    "Ingress",
                    obj,
                    Issue(
                        "TlsHostNotInRules",
                        f"{where}.hosts",
                        f"{host} has no rule in this Ingress; TLS is only served for rule hosts",
                        host,
                    ),
                )
                continue
            if secret_problem is not None:
                out.issue(
                    "Ingress",
                    obj,
                    Issue(
                        secret_problem.reason,
                        secret_problem.field,
                        secret_problem.message + f"; {host} is not served from this Ingress",
                        host,
                    ),
                )
                broken.add(host)
            elif config is not None:
                tls_for[host] = config

    default: c.WeightedBackend | None = None
    raw_default = body.get("defaultBackend")
    if isinstance(raw_default, Mapping):
        try:
            default = c.WeightedBackend(
                backend=_resolve_backend(raw_default, namespace, services, "spec.defaultBackend")
            )
        except Invalid as exc:
            out.issue("Ingress", obj, Issue(exc.reason, "spec.defaultBackend", exc.message))

    for route in candidates:
        if route.host in broken:
            continue
        slot = hosts.setdefault(route.host, _Host())
        slot.routes.setdefault((route.path, route.path_type), []).append(route)
        slot.sources[(ref.namespace, ref.name)] = source
        slot.ingress_class = slot.ingress_class or class_name
    for host in rule_hosts:
        if host in broken:
            continue
        owner = own.owner_of(host)
        if owner is None or owner.grantee != namespace:
            if host in tls_for:
                out.issue(
                    "Ingress",
                    obj,
                    Issue(
                        "OwnershipDenied",
                        "spec.tls",
                        f"only the owner of {host} sets its TLS; this namespace holds paths only",
                        host,
                    ),
                )
            continue
        slot = hosts.setdefault(host, _Host())
        slot.ingress_class = slot.ingress_class or class_name
        if not any(r.host == host for r in candidates) and default is None and host not in tls_for:
            continue
        slot.sources[(ref.namespace, ref.name)] = source
        if host in tls_for:
            if slot.tls is None:
                slot.tls = (age, tls_for[host], ann)
            elif slot.tls[1] != tls_for[host]:
                out.issue(
                    "Ingress",
                    obj,
                    Issue(
                        "ClaimConflict",
                        "spec.tls",
                        f"TLS of {host} is set by the older Ingress "
                        f"{slot.tls[0].namespace}/{slot.tls[0].name} with Secret "
                        f"{slot.tls[1].secret.name}",
                        host,
                        winner=("Ingress", slot.tls[0].namespace, slot.tls[0].name),
                    ),
                )
        if default is not None:
            if slot.default is None:
                slot.default = (age, default)
            elif slot.default[1] != default:
                out.issue(
                    "Ingress",
                    obj,
                    Issue(
                        "ClaimConflict",
                        "spec.defaultBackend",
                        f"the default backend of {host} is set by the older Ingress "
                        f"{slot.default[0].namespace}/{slot.default[0].name}",
                        host,
                        winner=("Ingress", slot.default[0].namespace, slot.default[0].name),
                    ),
                )
        if ann.pool or ann.vips or ann.sharing_key or ann.dns_ttl:
            if slot.vip is None:
                slot.vip = (age, ann)
            elif (slot.vip[1].pool, slot.vip[1].vips, slot.vip[1].sharing_key) != (
                ann.pool,
                ann.vips,
                ann.sharing_key,
            ):
                out.issue(
                    "Ingress",
                    obj,
                    Issue(
                        "ClaimConflict",
                        "metadata.annotations",
                        f"the VIP of {host} is requested differently by the older Ingress "
                        f"{slot.vip[0].namespace}/{slot.vip[0].name}",
                        host,
                        winner=("Ingress", slot.vip[0].namespace, slot.vip[0].name),
                    ),
                )


def _route_event(primary: _Route, canaries: Sequence[_Route]) -> c.Route:
    ann = primary.ann
    canary_total = sum(r.backend.weight for r in canaries)
    backends = [primary.backend.model_copy(update={"weight": 100 - canary_total})]
    backends += [r.backend for r in canaries]
    timeouts = (
        c.RouteTimeouts(request_seconds=ann.request_timeout, idle_seconds=ann.idle_timeout)
        if ann.request_timeout or ann.idle_timeout
        else None
    )
    retries = (
        c.RetryPolicy(
            attempts=ann.retry_attempts, on=list(ann.retry_on) or ["connect-failure", "reset"]
        )
        if ann.retry_attempts is not None
        else None
    )
    rewrite = (
        c.Rewrite(host=ann.rewrite_host, prefix=ann.rewrite_prefix)
        if ann.rewrite_host or ann.rewrite_prefix
        else None
    )
    return c.Route(
        path=primary.path,
        path_type=cast(c.PathType, primary.path_type),
        backends=backends,
        source=primary.source,
        timeouts=timeouts,
        retries=retries,
        rewrite=rewrite,
    )


def _domains(
    hosts: dict[str, _Host], own: Ownership, out: _Out, ingresses: Mapping[Any, Obj]
) -> None:
    by_ref = {(namespace_of(o), name_of(o)): o for o in ingresses.values()}
    for host, slot in sorted(hosts.items()):
        routes: list[c.Route] = []
        contributors: list[_Route] = []
        for (path, path_type), cands in sorted(slot.routes.items()):
            cands = sorted(cands, key=lambda r: r.age)
            primaries = [r for r in cands if r.ann.canary_weight is None]
            canaries = [r for r in cands if r.ann.canary_weight is not None]
            if not primaries:
                for r in canaries:
                    out.issue(
                        "Ingress",
                        by_ref[(r.source.namespace, r.source.name)],
                        Issue(
                            "CanaryWithoutPrimary",
                            r.field,
                            f"no Ingress without canary-weight serves {host}{path} ({path_type})",
                            host,
                            path,
                        ),
                    )
                continue
            winner, losers = primaries[0], primaries[1:]
            for r in losers:
                out.issue(
                    "Ingress",
                    by_ref[(r.source.namespace, r.source.name)],
                    Issue(
                        "ClaimConflict",
                        r.field,
                        f"{host}{path} ({path_type}) is served by the older Ingress "
                        f"{winner.source.namespace}/{winner.source.name}",
                        host,
                        path,
                        winner=("Ingress", winner.source.namespace, winner.source.name),
                    ),
                )
            kept: list[_Route] = []
            for r in canaries:
                if sum(k.backend.weight for k in kept) + r.backend.weight > 100:
                    out.issue(
                        "Ingress",
                        by_ref[(r.source.namespace, r.source.name)],
                        Issue(
                            "CanaryWeightExceeded",
                            r.field,
                            f"canary weights of {host}{path} would exceed 100",
                            host,
                            path,
                        ),
                    )
                    continue
                kept.append(r)
            routes.append(_route_event(winner, kept))
            contributors += [winner, *kept]
        owner = own.owner_of(host)
        if owner is None or (not routes and slot.default is None):
            continue
        # Sources are the Ingresses that contribute something that is kept: a route that won, a
        # kept canary, the TLS, the default backend or the VIP request (a loser gets no VIP).
        kept_by = {(r.source.namespace, r.source.name) for r in contributors}
        for held in (slot.tls, slot.default, slot.vip):
            if held is not None:
                kept_by.add((held[0].namespace, held[0].name))
        sources = [ref for key, ref in slot.sources.items() if key in kept_by]
        vip_ann = slot.vip[1] if slot.vip else None
        tls = slot.tls[1] if slot.tls else None
        redirect = tls is not None and (slot.tls is None or slot.tls[2].ssl_redirect is not False)
        try:
            event = c.DomainDesired(
                generation=_PLACEHOLDER,
                host=host,
                owner_namespace=owner.grantee,
                ingress_class=slot.ingress_class or "",
                sources=sorted(sources, key=lambda r: (r.namespace, r.name)),
                routes=routes,
                default_backend=slot.default[1] if slot.default else None,
                tls=tls,
                http_redirect_to_https=redirect,
                vip=c.VipRequest(
                    pool=vip_ann.pool,
                    addresses=list(vip_ann.vips),
                    sharing_key=vip_ann.sharing_key,
                )
                if vip_ann
                else c.VipRequest(),
                dns=c.DnsOptions(ttl_seconds=vip_ann.dns_ttl if vip_ann else None),
            )
        except ValidationError as exc:
            for source in slot.sources.values():
                out.issue(
                    "Ingress",
                    by_ref[(source.namespace, source.name)],
                    Issue("InvalidDomain", "spec", f"{host}: {exc.errors()[0]['msg']}", host),
                )
            continue
        out.add(event)


# --------------------------------------------------------------------------- backends


_ENDPOINT_LIST = TypeAdapter(list[c.Endpoint])


def _validated_endpoints(candidates: list[dict[str, Any]]) -> list[c.Endpoint]:
    """All candidates validated in one call (100,000 endpoints at a watcher's start); when one
    is invalid (an address that is not an IP address), one by one, so only it is dropped."""
    try:
        return _ENDPOINT_LIST.validate_python(candidates)
    except ValidationError:
        valid = []
        for candidate in candidates:
            with contextlib.suppress(ValidationError):
                valid.append(c.Endpoint.model_validate(candidate))
        return valid


def _endpoints(port: Mapping[str, Any], slices: Sequence[Obj]) -> list[c.Endpoint]:
    port_name = port.get("name") or ""
    protocol = port.get("protocol") or "TCP"
    candidates: list[dict[str, Any]] = []
    for slice_obj in slices:
        if slice_obj.get("addressType") not in ("IPv4", "IPv6"):
            continue  # FQDN slices name hosts, not addresses a dataplane can forward to
        target = next(
            (
                p
                for p in slice_obj.get("ports") or []
                if isinstance(p, Mapping)
                and (p.get("name") or "") == port_name
                and (p.get("protocol") or "TCP") == protocol
            ),
            None,
        )
        if target is None or not isinstance(target.get("port"), int):
            continue
        for item in slice_endpoints(slice_obj):
            target_ref = (
                {"kind": item.target[0], "namespace": item.target[1], "name": item.target[2]}
                if item.target
                else None
            )
            for address in item.addresses:
                candidates.append(
                    {
                        "address": address,
                        "port": target["port"],
                        "ready": item.ready,
                        "serving": item.serving,
                        "terminating": item.terminating,
                        "node": item.node,
                        "zone": item.zone,
                        "target": target_ref,
                    }
                )
    merged: dict[tuple[str, int], c.Endpoint] = {}
    for endpoint in _validated_endpoints(candidates):
        known = merged.get((endpoint.address, endpoint.port))
        # The same address in two slices (during a slice rebalance): ready wins.
        if known is None or (endpoint.ready and not known.ready):
            merged[(endpoint.address, endpoint.port)] = endpoint
    return [merged[k] for k in sorted(merged)]


def _backends(refs: Iterable[tuple[str, str, int]], objects: Objects, out: _Out) -> None:
    slices_by_service: dict[tuple[str, str], list[Obj]] = defaultdict(list)
    for (namespace, _), slice_obj in objects.get("EndpointSlice", {}).items():
        service_name = labels_of(slice_obj).get(SERVICE_NAME_LABEL)
        if isinstance(service_name, str):
            slices_by_service[(namespace, service_name)].append(slice_obj)
    services = objects.get("Service", {})
    for namespace, name, number in sorted(set(refs)):
        service = services.get((namespace, name))
        if service is None:
            continue
        port = next(
            (
                p
                for p in spec(service).get("ports") or []
                if isinstance(p, Mapping) and p.get("port") == number
            ),
            None,
        )
        if port is None:
            continue
        slices = sorted(slices_by_service.get((namespace, name), []), key=name_of)
        out.add(
            c.BackendEndpoints(
                generation=_PLACEHOLDER,
                namespace=namespace,
                service=name,
                port=number,
                port_name=port.get("name") or None,
                protocol=port.get("protocol") or "TCP",
                app_protocol=port.get("appProtocol"),
                endpoints=_endpoints(port, slices),
            )
        )


# --------------------------------------------------------------------------- LB Services


def _validation_issues(exc: ValidationError, prefix: str) -> list[Issue]:
    issues = []
    for error in exc.errors()[:20]:
        where = ".".join(str(p) for p in error["loc"] if p != "generation")
        issues.append(Issue("InvalidSpec", f"{prefix}{where}"[:256], str(error["msg"])))
    return issues


def is_our_lb_service(obj: Obj, policy: Policy) -> bool:
    """A Service of type LoadBalancer of our loadBalancerClass (or of none, if so configured)."""
    body = spec(obj)
    if body.get("type") != "LoadBalancer":
        return False
    lb_class = body.get("loadBalancerClass")
    return lb_class == policy.lb_class or (lb_class is None and policy.lb_without_class)


def _lb_service(obj: Obj, policy: Policy, out: _Out) -> list[tuple[str, str, int]]:
    body = spec(obj)
    if not is_our_lb_service(obj, policy):
        return []
    out.check("Service", obj)
    ann = parse_annotations(annotations_of(obj), kind="Service")
    for reason, name, message in ann.problems:
        out.issue("Service", obj, Issue(reason, f"metadata.annotations[{name}]", message))
    if ann.problems:
        return []
    vips = list(ann.vips)
    if not vips and isinstance(body.get("loadBalancerIP"), str) and body["loadBalancerIP"]:
        vips = [body["loadBalancerIP"]]
    ports = [
        {"name": p.get("name"), "port": p.get("port"), "protocol": p.get("protocol") or "TCP"}
        for p in body.get("ports") or []
        if isinstance(p, Mapping)
    ]
    try:
        event = c.LoadBalancerServiceDesired(
            generation=_PLACEHOLDER,
            namespace=namespace_of(obj),
            service=name_of(obj),
            ports=ports,
            ip_families=body.get("ipFamilies") or ["IPv4"],
            ip_family_policy=body.get("ipFamilyPolicy") or "SingleStack",
            external_traffic_policy=body.get("externalTrafficPolicy") or "Cluster",
            vip=c.VipRequest(pool=ann.pool, addresses=vips, sharing_key=ann.sharing_key),
            observed_generation=_generation(obj),
        )
    except ValidationError as exc:
        for issue in _validation_issues(exc, "spec."):
            out.issue("Service", obj, issue)
        return []
    out.add(event)
    return [(event.namespace, event.service, p.port) for p in event.ports]


# --------------------------------------------------------------------------- VipPool, BgpPeer


def _hosts(values: object, where: str, obj: Obj, kind: str, out: _Out) -> list[str]:
    hosts: list[str] = []
    for i, value in enumerate(values if isinstance(values, list) else []):
        try:
            hosts.append(claim_host(str(value)))
        except Invalid as exc:
            out.issue(kind, obj, Issue(exc.reason, f"{where}[{i}]", exc.message))
    return hosts


def _pool(obj: Obj, out: _Out) -> None:
    out.check("VipPool", obj)
    body = spec(obj)
    announce = body.get("announce") if isinstance(body.get("announce"), Mapping) else None
    zones = _hosts(body.get("zones"), "spec.zones", obj, "VipPool", out)
    domains = _hosts(body.get("domains"), "spec.domains", obj, "VipPool", out)
    if out.problems.get(("VipPool", CLUSTER, name_of(obj))):
        return
    try:
        event = c.PoolDesired.model_validate(
            {
                "generation": _PLACEHOLDER,
                "pool": name_of(obj),
                "cidrs": body.get("cidrs") or [],
                "ranges": body.get("ranges") or [],
                "exclude": body.get("exclude") or [],
                "namespaces": body.get("namespaces") or [],
                "zones": zones,
                "domains": domains,
                "priority": body.get("priority", 0),
                "auto_assign": body.get("autoAssign", True),
                "default": body.get("default", False),
                "announce": None
                if announce is None
                else {
                    "communities": announce.get("communities") or [],
                    "large_communities": announce.get("largeCommunities") or [],
                    "local_preference": announce.get("localPreference"),
                },
                "observed_generation": _generation(obj),
            }
        )
    except ValidationError as exc:
        for issue in _validation_issues(exc, "spec."):
            out.issue("VipPool", obj, issue)
        return
    if not event.cidrs and not event.ranges:
        out.issue("VipPool", obj, Issue("EmptyPool", "spec", "a pool needs cidrs or ranges"))
        return
    out.add(event)


def _peer(obj: Obj, objects: Objects, policy: Policy, out: _Out) -> None:
    out.check("BgpPeer", obj)
    body = spec(obj)
    ref = (
        body.get("passwordSecretRef")
        if isinstance(body.get("passwordSecretRef"), Mapping)
        else None
    )
    password: dict[str, Any] | None = None
    password_hash: str | None = None
    if ref is not None:
        password = {
            "namespace": ref.get("namespace") or policy.system_namespace,
            "name": ref.get("name"),
            "key": ref.get("key") or "password",
        }
        secret = objects.get("Secret", {}).get((str(password["namespace"]), str(password["name"])))
        summary = secret.get(SUMMARY) if secret is not None else None
        key_hashes = summary.get("keyHashes") if isinstance(summary, Mapping) else None
        if isinstance(key_hashes, Mapping) and password["key"] in key_hashes:
            password_hash = str(key_hashes[password["key"]])
        else:
            # Still published: tearing a live session down because a Secret is briefly missing
            # would withdraw every route; bgp-speaker reports the session state.
            out.issue(
                "BgpPeer",
                obj,
                Issue(
                    "PasswordSecretNotFound",
                    "spec.passwordSecretRef",
                    f"Secret {password['namespace']}/{password['name']} has no key "
                    f"{password['key']}",
                ),
            )
    try:
        event = c.PeerDesired.model_validate(
            {
                "generation": _PLACEHOLDER,
                "peer": name_of(obj),
                "address": body.get("address"),
                "peer_asn": body.get("peerASN"),
                "local_asn": body.get("localASN"),
                "nodes": body.get("nodes") or [],
                "password": password,
                "password_hash": password_hash,
                "hold_time_seconds": body.get("holdTimeSeconds", 90),
                "keepalive_seconds": body.get("keepaliveSeconds"),
                "graceful_restart": body.get("gracefulRestart", True),
                "bfd": body.get("bfd", False),
                "max_prefixes": body.get("maxPrefixes"),
                "observed_generation": _generation(obj),
            }
        )
    except ValidationError as exc:
        for issue in _validation_issues(exc, "spec."):
            out.issue("BgpPeer", obj, issue)
        return
    out.add(event)


# --------------------------------------------------------------------------- everything


ServiceKey = tuple[str, str]
BackendKey = tuple[str, str, int]


def backend_index(desired: Iterable[StateKey]) -> dict[ServiceKey, tuple[StateKey, ...]]:
    """The backend keys of a full normalize, by (namespace, Service name)."""
    index: dict[ServiceKey, list[StateKey]] = defaultdict(list)
    for key in desired:
        family, parts = key
        if family is Family.BACKEND:
            index[(parts[0], parts[1])].append(key)
    return {service: tuple(keys) for service, keys in index.items()}


def normalize_backends(
    objects: Objects,
    policy: Policy,
    services: Iterable[ServiceKey],
    backends: Mapping[ServiceKey, Sequence[StateKey]],
    slices: Mapping[ServiceKey, Mapping[ObjKey, Obj]],
) -> dict[StateKey, c.Event]:
    """What :func:`normalize` gives for the backends of ``services``, after EndpointSlice changes
    only: a slice changes a backend's endpoints but never which backends exist (that follows
    from Ingresses and Services), so the backends are those of the last full normalize
    (``backends``, see :func:`backend_index`) and nothing else needs recomputing. ``slices``:
    the EndpointSlices of each Service (by their service-name label)."""
    refs = [
        (parts[0], parts[1], int(parts[2]))
        for service in set(services)
        for _, parts in backends.get(service, ())
    ]
    return normalize_backend_refs(objects, policy, refs, slices)


def normalize_backend_refs(
    objects: Objects,
    policy: Policy,
    refs: Iterable[BackendKey],
    slices: Mapping[ServiceKey, Mapping[ObjKey, Obj]],
) -> dict[StateKey, c.Event]:
    """The backend events of ``refs`` (those whose Service and port exist), reading only the
    EndpointSlices of their Services (``slices``: by the service-name label)."""
    wanted = sorted(set(refs))
    services = {(namespace, name) for namespace, name, _ in wanted}
    view = {
        "Service": objects.get("Service", {}),
        "EndpointSlice": {
            key: obj for service in services for key, obj in slices.get(service, {}).items()
        },
    }
    out = _Out(policy)
    _backends(wanted, view, out)
    return out.events


def normalize(objects: Objects, policy: Policy) -> dict[StateKey, c.Event]:
    return normalize_with_index(objects, policy)[0]


def normalize_with_index(
    objects: Objects, policy: Policy
) -> tuple[dict[StateKey, c.Event], IngressIndex]:
    """:func:`normalize`, and the index that lets later Ingress changes be normalized alone
    (:func:`normalize_ingresses`)."""
    events, index, refs = normalize_all_but_backends(objects, policy)
    out = _Out(policy)
    _backends(refs, objects, out)
    return {**events, **out.events}, index


def normalize_all_but_backends(
    objects: Objects, policy: Policy
) -> tuple[dict[StateKey, c.Event], IngressIndex, frozenset[BackendKey]]:
    """:func:`normalize_with_index` without the backend events, and the backends they need
    (give them to :func:`normalize_backend_refs`, in parts if need be: at 10,000 Services
    their 100,000 endpoint models take ~170 MB at once)."""
    out = _Out(policy)
    own = resolve(
        objects.get("Zone", {}).values(),
        objects.get("Domain", {}).values(),
        objects.get("PathClaim", {}).values(),
    )
    for kind in ("Zone", "Domain", "PathClaim"):
        for obj in objects.get(kind, {}).values():
            out.check(kind, obj)
            for issue in issues_of(own, kind, obj):
                out.issue(kind, obj, issue)

    ours, default = our_classes(objects.get("IngressClass", {}).values(), policy)
    hosts: dict[str, _Host] = {}
    ingresses = objects.get("Ingress", {})
    for obj in sorted(ingresses.values(), key=Age.of):
        class_name = ingress_class_of(obj, ours, default)
        if class_name is not None:
            _ingress(obj, class_name, objects, own, hosts, out)
    _domains(hosts, own, out, ingresses)

    refs: list[tuple[str, str, int]] = []
    for event in list(out.events.values()):
        if isinstance(event, c.DomainDesired):
            refs.extend(_refs_of(event))
    for obj in objects.get("Service", {}).values():
        refs.extend(_lb_service(obj, policy, out))

    for obj in objects.get("VipPool", {}).values():
        _pool(obj, out)
    for obj in objects.get("BgpPeer", {}).values():
        _peer(obj, objects, policy, out)
    out.admissions()
    index = IngressIndex.build(ingresses, out.events, own, (ours, default))
    return out.events, index, frozenset(refs)


# --------------------------------------------------------------------------- Ingress changes


def _refs_of(event: c.DomainDesired) -> frozenset[BackendKey]:
    refs = {
        (b.backend.namespace, b.backend.service, b.backend.port)
        for route in event.routes
        for b in route.backends
    }
    if event.default_backend is not None:
        b = event.default_backend.backend
        refs.add((b.namespace, b.service, b.port))
    return frozenset(refs)


def mentioned_hosts(obj: Obj) -> frozenset[str]:
    """Every valid host an Ingress names (rules and TLS): whatever it can contribute to."""
    body = spec(obj)
    raw: list[object] = [r.get("host") for r in body.get("rules") or [] if isinstance(r, Mapping)]
    for entry in body.get("tls") or []:
        if isinstance(entry, Mapping):
            raw.extend(entry.get("hosts") or [])
    found = set()
    for value in raw:
        if isinstance(value, str) and value:
            with contextlib.suppress(Invalid):
                found.add(ingress_host(value))
    return frozenset(found)


@dataclass
class IngressIndex:
    """Who touches which host, as of the last normalize, so that a change of a few Ingresses can
    be normalized alone. Valid while ownership objects, IngressClasses, Services and Secrets
    stay as they were (their changes take the full path, which rebuilds it)."""

    own: Ownership
    classes: tuple[frozenset[str], str | None]
    hosts_of: dict[ObjKey, frozenset[str]]
    """Ingress -> the hosts it names."""
    ingresses_of: dict[str, set[ObjKey]]
    """host -> the Ingresses that name it."""
    refs_of: dict[str, frozenset[BackendKey]]
    """host -> the backends its domain.desired routes to."""
    hosts_using: dict[BackendKey, set[str]]
    lb_refs: frozenset[BackendKey]
    """Backends that LoadBalancer Services serve (they keep a backend alive too)."""

    @classmethod
    def build(
        cls,
        ingresses: Mapping[ObjKey, Obj],
        events: Mapping[StateKey, c.Event],
        own: Ownership,
        classes: tuple[frozenset[str], str | None],
    ) -> IngressIndex:
        index = cls(own, classes, {}, defaultdict(set), {}, defaultdict(set), frozenset())
        for key, obj in ingresses.items():
            index._set_hosts(key, mentioned_hosts(obj))
        lb: set[BackendKey] = set()
        for event in events.values():
            if isinstance(event, c.DomainDesired):
                index._set_refs(event.host, _refs_of(event))
            elif isinstance(event, c.LoadBalancerServiceDesired):
                lb.update((event.namespace, event.service, p.port) for p in event.ports)
        index.lb_refs = frozenset(lb)
        return index

    def _set_hosts(self, key: ObjKey, hosts: frozenset[str] | None) -> None:
        for host in self.hosts_of.pop(key, frozenset()):
            self.ingresses_of[host].discard(key)
            if not self.ingresses_of[host]:
                del self.ingresses_of[host]
        if hosts:
            self.hosts_of[key] = hosts
            for host in hosts:
                self.ingresses_of[host].add(key)

    def _set_refs(self, host: str, refs: frozenset[BackendKey]) -> None:
        for ref in self.refs_of.pop(host, frozenset()):
            self.hosts_using[ref].discard(host)
            if not self.hosts_using[ref]:
                del self.hosts_using[ref]
        if refs:
            self.refs_of[host] = refs
            for ref in refs:
                self.hosts_using[ref].add(host)

    def scope(
        self, changed: Iterable[ObjKey], ingresses: Mapping[ObjKey, Obj]
    ) -> tuple[set[ObjKey], set[str]]:
        """The Ingresses and hosts a change reaches: every host the changed Ingresses name (now
        or before), every Ingress that names one of those hosts, and so on. Conflicts, canary
        weights and admission verdicts depend on every contributor of a host, so all of them
        are normalized together."""
        found: set[ObjKey] = set()
        hosts: set[str] = set()
        todo = list(changed)
        while todo:
            key = todo.pop()
            if key in found:
                continue
            found.add(key)
            named = set(self.hosts_of.get(key, frozenset()))
            obj = ingresses.get(key)
            if obj is not None:
                named |= mentioned_hosts(obj)
            for host in named - hosts:
                hosts.add(host)
                todo.extend(self.ingresses_of.get(host, ()))
        return found, hosts


def normalize_ingresses(
    objects: Objects,
    policy: Policy,
    changed: Iterable[ObjKey],
    index: IngressIndex,
    slices: Mapping[ServiceKey, Mapping[ObjKey, Obj]],
) -> tuple[dict[StateKey, c.Event], set[StateKey]]:
    """What :func:`normalize` gives after changes to Ingresses ``changed`` (created, edited or
    deleted), for the keys those changes can reach (returned as the scope; a key of the scope
    missing from the events is no longer desired). Updates ``index``. ``slices``: the
    EndpointSlices of each Service (by their service-name label)."""
    ingresses = objects.get("Ingress", {})
    keys, scope_hosts = index.scope(changed, ingresses)
    present = {k: ingresses[k] for k in keys if k in ingresses}
    out = _Out(policy)
    ours, default = index.classes
    hosts: dict[str, _Host] = {}
    for obj in sorted(present.values(), key=Age.of):
        class_name = ingress_class_of(obj, ours, default)
        if class_name is not None:
            _ingress(obj, class_name, objects, index.own, hosts, out)
    _domains(hosts, index.own, out, present)

    new_refs = {e.host: _refs_of(e) for e in out.events.values() if isinstance(e, c.DomainDesired)}
    wanted: set[BackendKey] = set().union(*new_refs.values()) if new_refs else set()
    dropped = {r for h in scope_hosts for r in index.refs_of.get(h, frozenset())} - wanted
    kept_elsewhere = {
        r for r in dropped if r in index.lb_refs or index.hosts_using.get(r, set()) - scope_hosts
    }
    services = {(ns, svc) for ns, svc, _ in wanted | kept_elsewhere}
    view = {
        "Service": objects.get("Service", {}),
        "EndpointSlice": {
            key: obj for service in services for key, obj in slices.get(service, {}).items()
        },
    }
    _backends(wanted | kept_elsewhere, view, out)
    out.admissions()

    scope: set[StateKey] = {(Family.DOMAIN, (host,)) for host in scope_hosts}
    scope |= {(Family.ADMISSION, (policy.component, "Ingress", ns, name)) for ns, name in keys}
    scope |= {(Family.BACKEND, (ns, svc, str(port))) for ns, svc, port in wanted | dropped}
    for key in keys:
        index._set_hosts(key, mentioned_hosts(present[key]) if key in present else None)
    for host in scope_hosts:
        index._set_refs(host, new_refs.get(host, frozenset()))
    return out.events, scope

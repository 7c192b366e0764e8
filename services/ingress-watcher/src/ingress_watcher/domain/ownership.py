"""The zone / domain / path ownership model, resolved from Zone, Domain and PathClaim objects.

* A **Zone** (cluster-scoped, made by cluster admins) names a DNS zone and the namespaces
  (names or globs) that may claim Domains directly under it.
* A **Domain** (namespaced) grants a host, and everything under it, to ``spec.namespace``
  (default: the Domain's own namespace). It is valid when its own namespace is entitled to the
  host: when the nearest granted ancestor belongs to that namespace (delegation, like an RBAC
  binding made by whoever holds the role), or, with no granted ancestor, when the covering Zone
  lists the namespace.
* A **PathClaim** (namespaced, made by the domain's owner) grants a path prefix of one host to
  ``spec.namespace``; that namespace may then add routes under the prefix, nothing else.

Two claims on one host (or host + path): the oldest (creationTimestamp, then namespace/name) wins,
the other gets ClaimConflict naming the winner. Hosts are compared after normalization.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass, field

from .objects import Age, Obj, name_of, namespace_of, spec
from .validate import Invalid, claim_host, ingress_path, path_covers


@dataclass(frozen=True)
class Issue:
    reason: str
    field: str
    message: str
    host: str | None = None
    path: str | None = None
    winner: tuple[str, str, str] | None = None
    """For ClaimConflict: (kind, namespace, name) of the object whose older claim holds it."""


@dataclass(frozen=True)
class ZoneGrant:
    zone: str
    namespaces: tuple[str, ...]
    age: Age

    def allows(self, namespace: str) -> bool:
        return any(fnmatch.fnmatchcase(namespace, pattern) for pattern in self.namespaces)


@dataclass(frozen=True)
class DomainGrant:
    host: str
    grantee: str
    age: Age

    @property
    def ref(self) -> str:
        return f"Domain {self.age.namespace}/{self.age.name}"


@dataclass(frozen=True)
class PathGrant:
    host: str
    path: str
    grantee: str
    age: Age

    @property
    def ref(self) -> str:
        return f"PathClaim {self.age.namespace}/{self.age.name}"


@dataclass
class Ownership:
    zones: dict[str, ZoneGrant] = field(default_factory=dict)
    domains: dict[str, DomainGrant] = field(default_factory=dict)
    paths: dict[str, list[PathGrant]] = field(default_factory=dict)
    issues: dict[tuple[str, str, str], list[Issue]] = field(default_factory=dict)
    """(kind, namespace, name) -> problems of that ownership object."""

    def owner_of(self, host: str) -> DomainGrant | None:
        """The most specific granted Domain covering ``host`` (``*.x`` lies under ``x``)."""
        labels = host.split(".")
        if labels[0] == "*":
            labels = labels[1:]
        for index in range(len(labels) - 1):
            grant = self.domains.get(".".join(labels[index:]))
            if grant is not None:
                return grant
        return None

    def zone_of(self, host: str) -> ZoneGrant | None:
        labels = host.split(".")
        for index in range(len(labels)):
            zone = self.zones.get(".".join(labels[index:]))
            if zone is not None:
                return zone
        return None

    def path_grant(self, host: str, path: str) -> PathGrant | None:
        """The longest granted prefix of ``host`` covering ``path``."""
        best: PathGrant | None = None
        for grant in self.paths.get(host, ()):
            if path_covers(grant.path, path) and (best is None or len(grant.path) > len(best.path)):
                best = grant
        return best

    def check_route(self, namespace: str, host: str, path: str) -> Issue | None:
        """None when ``namespace`` may route ``path`` on ``host``, else why not."""
        owner = self.owner_of(host)
        if owner is None:
            return Issue(
                "OwnershipDenied",
                "",
                f"no Domain grants {host} to any namespace (ask the zone's admins for one)",
                host=host,
            )
        grant = self.path_grant(host, path)
        if grant is not None:
            if grant.grantee == namespace:
                return None
            return Issue(
                "OwnershipDenied",
                "",
                f"path {grant.path} of {host} is granted to namespace {grant.grantee} "
                f"by {grant.ref}, not to {namespace}",
                host=host,
                path=path,
            )
        if owner.grantee == namespace:
            return None
        return Issue(
            "OwnershipDenied",
            "",
            f"{host} belongs to namespace {owner.grantee} ({owner.ref}); namespace {namespace} "
            f"holds no Domain or PathClaim for it",
            host=host,
            path=path,
        )


def _strings(value: object) -> tuple[str, ...]:
    if isinstance(value, list):
        return tuple(str(v) for v in value if isinstance(v, str))
    return ()


def _issue(own: Ownership, kind: str, obj: Obj, issue: Issue) -> None:
    own.issues.setdefault((kind, namespace_of(obj), name_of(obj)), []).append(issue)


def resolve(zones: Iterable[Obj], domains: Iterable[Obj], claims: Iterable[Obj]) -> Ownership:
    own = Ownership()
    for obj in sorted(zones, key=Age.of):
        raw = spec(obj).get("zone")
        try:
            zone = claim_host(str(raw)) if isinstance(raw, str) else claim_host("")
        except Invalid as exc:
            _issue(own, "Zone", obj, Issue(exc.reason, "spec.zone", exc.message))
            continue
        if zone in own.zones:
            held = own.zones[zone].age
            _issue(
                own,
                "Zone",
                obj,
                Issue(
                    "ClaimConflict",
                    "spec.zone",
                    f"zone {zone} is held by Zone {held.name}",
                    winner=("Zone", held.namespace, held.name),
                ),
            )
            continue
        own.zones[zone] = ZoneGrant(zone, _strings(spec(obj).get("namespaces")), Age.of(obj))

    parsed: list[tuple[int, Age, str, str, Obj]] = []
    for obj in domains:
        raw = spec(obj).get("host")
        try:
            host = claim_host(raw if isinstance(raw, str) else "")
        except Invalid as exc:
            _issue(own, "Domain", obj, Issue(exc.reason, "spec.host", exc.message))
            continue
        grantee = spec(obj).get("namespace") or namespace_of(obj)
        parsed.append((host.count("."), Age.of(obj), host, str(grantee), obj))
    # Parents before children, so entitlement always looks at settled ancestors.
    for _, age, host, grantee, obj in sorted(parsed, key=lambda p: (p[0], p[1])):
        holder = namespace_of(obj)
        parent = own.owner_of(host.split(".", 1)[1]) if "." in host else None
        if host in own.domains:
            winner = own.domains[host]
            _issue(
                own,
                "Domain",
                obj,
                Issue(
                    "ClaimConflict",
                    "spec.host",
                    f"{host} is already granted to namespace {winner.grantee} by the older "
                    f"{winner.ref}",
                    host=host,
                    winner=("Domain", winner.age.namespace, winner.age.name),
                ),
            )
            continue
        if parent is not None:
            if parent.grantee != holder:
                _issue(
                    own,
                    "Domain",
                    obj,
                    Issue(
                        "OwnershipDenied",
                        "spec.host",
                        f"{host} lies under {parent.host}, which belongs to namespace "
                        f"{parent.grantee} ({parent.ref}): only that namespace may grant it",
                        host=host,
                    ),
                )
                continue
        else:
            covering = own.zone_of(host)
            if covering is None or not covering.allows(holder):
                where = (
                    f"Zone {covering.age.name} ({covering.zone})"
                    if covering
                    else "no Zone covers it"
                )
                _issue(
                    own,
                    "Domain",
                    obj,
                    Issue(
                        "OwnershipDenied",
                        "spec.host",
                        f"namespace {holder} may not claim {host}: {where}"
                        + (" does not list it" if covering else ""),
                        host=host,
                    ),
                )
                continue
        own.domains[host] = DomainGrant(host, grantee, age)

    for obj in sorted(claims, key=Age.of):
        raw_host, raw_path = spec(obj).get("host"), spec(obj).get("path")
        try:
            host = claim_host(raw_host if isinstance(raw_host, str) else "")
        except Invalid as exc:
            _issue(own, "PathClaim", obj, Issue(exc.reason, "spec.host", exc.message))
            continue
        try:
            path = ingress_path(raw_path if isinstance(raw_path, str) else "", "Prefix")
        except Invalid as exc:
            _issue(own, "PathClaim", obj, Issue(exc.reason, "spec.path", exc.message, host=host))
            continue
        path = path.rstrip("/") or "/"
        holder = namespace_of(obj)
        owner = own.owner_of(host)
        if owner is None or owner.grantee != holder:
            who = f"namespace {owner.grantee}" if owner else "nobody"
            _issue(
                own,
                "PathClaim",
                obj,
                Issue(
                    "OwnershipDenied",
                    "spec.host",
                    f"{host} belongs to {who}; only its owner may grant paths on it",
                    host=host,
                    path=path,
                ),
            )
            continue
        taken = next((g for g in own.paths.get(host, ()) if g.path == path), None)
        if taken is not None:
            _issue(
                own,
                "PathClaim",
                obj,
                Issue(
                    "ClaimConflict",
                    "spec.path",
                    f"{host}{path} is already granted to namespace {taken.grantee} by the older "
                    f"{taken.ref}",
                    host=host,
                    path=path,
                    winner=("PathClaim", taken.age.namespace, taken.age.name),
                ),
            )
            continue
        grantee = str(spec(obj).get("namespace") or "")
        if not grantee:
            _issue(
                own,
                "PathClaim",
                obj,
                Issue(
                    "MissingField", "spec.namespace", "a PathClaim names the namespace it grants"
                ),
            )
            continue
        own.paths.setdefault(host, []).append(PathGrant(host, path, grantee, Age.of(obj)))
    return own


def issues_of(own: Ownership, kind: str, obj: Obj) -> list[Issue]:
    return own.issues.get((kind, namespace_of(obj), name_of(obj)), [])

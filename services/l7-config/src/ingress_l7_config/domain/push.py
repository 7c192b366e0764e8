"""What to send an Envoy next over an ADS stream, state of the world or delta. Pure.

* At most one response per type in flight (the next waits for the ACK or NACK), and types go
  out in the order clusters, endpoints, secrets, listeners, scopes, routes. Listeners, scopes
  and routes also wait while clusters or secrets are in flight (make before break: a route
  never points at a cluster the Envoy does not have yet, and a refused certificate is known
  before the routes of the same change go out). Endpoints are never held back and never hold
  anything back: Envoy delays its CDS ACK until the new clusters have warmed, i.e. until their
  endpoints have arrived, so an acknowledged cluster set is ready for routes whatever EDS is
  doing.
* Listeners and clusters are sent as the whole set (the SotW rule for LDS/CDS), and only when
  some member differs from what the Envoy ACKed. Over delta xDS they are sent as what changed:
  the members the Envoy lacks, and the names of those it holds that the snapshot dropped. A
  cluster the snapshot dropped stays until the Envoy holds the snapshot's listeners and routes,
  then is removed (make before break: the xDS protocol's "stale CDS clusters can then be
  removed"): over SotW it stays in the set, then a set without it follows; over delta its
  removal is held back until then. Endpoints,
  route configurations and secrets are sent per resource: only subscribed names whose content
  the Envoy does not have, so an endpoint change is one ClusterLoadAssignment and nothing else.
* A resource version the Envoy NACKed is not sent again: the next attempt is a different version.
* Each Envoy takes one snapshot whole (clusters, secrets, listeners, routes) before the next: the
  server pins it per stream until nothing of it is left to send or awaiting an ACK. Without the
  pin, clusters that change faster than an Envoy ACKs them (a busy fleet) would hold listeners
  and routes back forever, since each new cluster set goes out first. Endpoints come from the
  newest snapshot all the same: an Envoy asks only for the endpoints of clusters it has, so they
  are safe at any time, and an endpoint change never waits behind a route table.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from .resources import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    ROUTE,
    SCOPED_ROUTE,
    SECRET,
    TYPES,
    Resource,
    Snapshot,
)

WILDCARD_TYPES = frozenset({LISTENER, CLUSTER, SCOPED_ROUTE})
"""Types Envoy subscribes to whole (no resource names): SotW sends them as the set."""


@dataclass
class TypeState:
    """One resource type on one Envoy stream."""

    requested: bool = False
    incremental: bool = False
    """Delta xDS: listeners and clusters go out as their changes and removals, not as the set."""
    subscribed: set[str] = field(default_factory=set)
    acked: dict[str, tuple[str, int]] = field(default_factory=dict)
    """name -> (digest, snapshot sequence) of what the Envoy ACKed and holds."""
    rejected: dict[str, str] = field(default_factory=dict)
    """name -> digest the Envoy NACKed (not sent again)."""
    acked_sequence: int = 0
    acked_version: str = ""
    kept: dict[str, Resource] = field(default_factory=dict)
    """Clusters only: the resources of the cluster set the Envoy ACKed last, so that a cluster
    the newest snapshot dropped can be kept until no route of the Envoy may still use it."""
    settled: Mapping[str, Resource] | None = None
    """A snapshot's resources of this type of which the Envoy holds everything it wants: asking
    again for the same mapping costs nothing, and for a newer one only the resources that are
    not the same objects are examined (the incremental build keeps unchanged resources as the
    same objects). Forgotten whenever what the Envoy holds or wants shrinks."""

    def holds(self, name: str, digest: str) -> bool:
        held = self.acked.get(name)
        return held is not None and held[0] == digest


@dataclass(frozen=True)
class Push:
    type_url: str
    resources: tuple[Resource, ...]
    removed: tuple[str, ...] = ()
    """Delta xDS only: names the Envoy holds and is told to drop."""


def _wanted(type_url: str, snapshot: Snapshot, state: TypeState) -> Push | None:
    current: Mapping[str, Resource] = snapshot.resources.get(type_url, {})
    base = state.settled
    if base is current:
        return None
    changed: list[str] | None = None
    if base is not None:
        changed = [n for n, r in current.items() if base.get(n) is not r]
        if type_url in WILDCARD_TYPES and not changed and not base.keys() - current.keys():
            state.settled = current
            return None
    if type_url in WILDCARD_TYPES and state.incremental:
        push = _wanted_changes(type_url, current, state, changed, remove=True)
    elif type_url in WILDCARD_TYPES:
        push = _wanted_set(type_url, current, state)
    else:
        push = _wanted_names(type_url, current, state, changed)
    if push is None:
        state.settled = current
    return push


def _wanted_set(type_url: str, current: Mapping[str, Resource], state: TypeState) -> Push | None:
    same = set(current) == set(state.acked) and all(
        state.holds(n, r.digest) for n, r in current.items()
    )
    if same:
        return None
    # Every new member refused already: sending the set again would only be refused again.
    # (With no new member, the difference is a removal, which is always sent.)
    unheld = [(n, r) for n, r in current.items() if not state.holds(n, r.digest)]
    if unheld and all(state.rejected.get(n) == r.digest for n, r in unheld):
        return None
    return Push(type_url, tuple(current[n] for n in sorted(current)))


def _wanted_changes(
    type_url: str,
    current: Mapping[str, Resource],
    state: TypeState,
    examine: list[str] | None,
    remove: bool,
) -> Push | None:
    """Delta xDS: the members the Envoy lacks, among ``examine`` (None: all), and, if
    ``remove``, the held names the snapshot no longer has. A member refused already is not sent
    again, and does not hold the others back (each delta resource is applied on its own)."""
    candidates = current.keys() if examine is None else examine
    names = sorted(
        n
        for n in candidates
        if not state.holds(n, current[n].digest) and state.rejected.get(n) != current[n].digest
    )
    removed = sorted(n for n in state.acked if n not in current) if remove else []
    if not names and not removed:
        return None
    return Push(type_url, tuple(current[n] for n in names), tuple(removed))


def _wanted_names(
    type_url: str,
    current: Mapping[str, Resource],
    state: TypeState,
    examine: list[str] | None,
) -> Push | None:
    """Subscribed names whose content the Envoy lacks, among ``examine`` (None: all)."""
    candidates = state.subscribed if examine is None else state.subscribed.intersection(examine)
    names = sorted(
        n
        for n in candidates
        if n in current
        and not state.holds(n, current[n].digest)
        and state.rejected.get(n) != current[n].digest
    )
    if not names:
        return None
    return Push(type_url, tuple(current[n] for n in names))


BLOCKED_BY: Mapping[str, frozenset[str]] = {
    LISTENER: frozenset({CLUSTER, SECRET}),
    SCOPED_ROUTE: frozenset({CLUSTER, SECRET}),
    ROUTE: frozenset({CLUSTER, SECRET}),
}


def next_push(
    snapshot: Snapshot,
    states: Mapping[str, TypeState],
    in_flight: Collection[str],
    latest: Snapshot | None = None,
) -> Push | None:
    """The next response for one Envoy, or None when nothing can be sent now; ``in_flight`` are
    the types with a response awaiting its ACK. ``snapshot`` is the one pinned for this Envoy;
    endpoints come from ``latest`` (default: the same)."""
    for type_url in TYPES:
        state = states.get(type_url)
        if state is None or not state.requested or type_url in in_flight:
            continue
        if BLOCKED_BY.get(type_url, frozenset()) & set(in_flight):
            continue
        source = latest if latest is not None and type_url == ENDPOINT else snapshot
        if type_url == CLUSTER:
            push = _clusters(snapshot, states, in_flight)
        else:
            push = _wanted(type_url, source, state)
        if push is not None:
            return push
    return None


def _clusters(
    snapshot: Snapshot, states: Mapping[str, TypeState], in_flight: Collection[str]
) -> Push | None:
    """The cluster set, make before break: a cluster the snapshot dropped stays in the set the
    Envoy holds until its listeners and routes are the snapshot's (the routes it still serves
    may point at it; removing it first answers 503 until the new routes arrive, and forever
    for a change that Envoy then refuses)."""
    state = states[CLUSTER]
    current: Mapping[str, Resource] = snapshot.resources.get(CLUSTER, {})
    if state.incremental:
        if state.settled is current:
            return None
        # keys() views compare as sets, in C: this runs on every push of a change.
        if not state.acked.keys() <= current.keys() and not _routes_settled(
            snapshot, states, in_flight
        ):
            # Not settled: the held-back removal is still owed once the routes are the
            # snapshot's.
            return _wanted_changes(CLUSTER, current, state, None, remove=False)
        return _wanted(CLUSTER, snapshot, state)
    stale = {n: r for n, r in state.kept.items() if n not in current}
    if stale and not _routes_settled(snapshot, states, in_flight):
        union = {**stale, **current}
        return _wanted_set(CLUSTER, union, state)
    return _wanted(CLUSTER, snapshot, state)


def _routes_settled(
    snapshot: Snapshot, states: Mapping[str, TypeState], in_flight: Collection[str]
) -> bool:
    for type_url in (LISTENER, SCOPED_ROUTE, ROUTE):
        state = states.get(type_url)
        if state is None or not state.requested:
            continue
        if type_url in in_flight or _wanted(type_url, snapshot, state) is not None:
            return False
    return True


def after_ack(states: Mapping[str, TypeState], push: Push, sequence: int, version: str) -> None:
    """Record that the Envoy holds ``push``'s resources."""
    state = states[push.type_url]
    if state.incremental:
        for name in push.removed:
            state.acked.pop(name, None)
    elif push.type_url in WILDCARD_TYPES:
        # SotW: a listener or cluster missing from the set has been removed by the Envoy.
        state.acked = {}
        if push.type_url == CLUSTER:
            state.kept = {r.name: r for r in push.resources}
    for r in push.resources:
        previous = state.acked.get(r.name)
        state.acked[r.name] = (r.digest, sequence)
        state.rejected.pop(r.name, None)
        if push.type_url == CLUSTER and previous is not None and previous[0] != r.digest:
            # A changed cluster is rebuilt by the Envoy and waits for its endpoints again.
            states[ENDPOINT].acked.pop(r.name, None)
            states[ENDPOINT].settled = None
    state.acked_sequence = sequence
    state.acked_version = version


def after_nack(states: Mapping[str, TypeState], push: Push) -> list[str]:
    """Record a refusal; returns the names whose new content was refused (those that differ
    from what the Envoy still holds)."""
    state = states[push.type_url]
    changed = [r.name for r in push.resources if not state.holds(r.name, r.digest)]
    for r in push.resources:
        if r.name in changed:
            state.rejected[r.name] = r.digest
    return changed


def resubscribe(state: TypeState, names: set[str]) -> None:
    """A named type's subscription changed: a dropped name is forgotten by the Envoy, so it is
    sent again if it comes back."""
    if names == state.subscribed:
        return  # Envoy repeats its whole subscription with every request
    for gone in state.subscribed - names:
        state.acked.pop(gone, None)
    state.subscribed = names
    state.settled = None

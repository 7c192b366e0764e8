"""(desired, published) -> the events to publish.

Level-triggered: a key whose desired state equals what was last published gets nothing (a
converged reconcile publishes zero events); a changed key gets its full state with the next
generation; a key that was published and is no longer desired gets its tombstone, unless the
caller protects it (see :func:`suspicious_emptiness`). Admission results have no tombstone in
catalogue v1, so they are never deleted here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from ingress_events import catalogue as c
from ingress_events.catalogue import TOMBSTONES, Family

from .normalize import StateKey

_TOMBSTONE_OF: dict[Family, type[c.Event]] = {
    Family.DOMAIN: c.DomainDeleted,
    Family.BACKEND: c.BackendDeleted,
    Family.LBSERVICE: c.LoadBalancerServiceDeleted,
    Family.POOL: c.PoolDeleted,
    Family.PEER: c.PeerDeleted,
    Family.ADMISSION: c.AdmissionCleared,
}


def tombstone(key: StateKey, generation: int) -> c.Event | None:
    family, parts = key
    cls = _TOMBSTONE_OF.get(family)
    if cls is None:
        return None
    if family is Family.BACKEND:
        return c.BackendDeleted(
            generation=generation, namespace=parts[0], service=parts[1], port=int(parts[2])
        )
    if family is Family.ADMISSION:
        component, kind, namespace, name = parts
        return c.AdmissionCleared(
            generation=generation,
            component=component,
            object=c.ObjectRef(kind=kind, namespace=namespace, name=name),
        )
    if family is Family.LBSERVICE:
        return c.LoadBalancerServiceDeleted(
            generation=generation, namespace=parts[0], service=parts[1]
        )
    field_name = {Family.DOMAIN: "host", Family.POOL: "pool", Family.PEER: "peer"}[family]
    return cls.model_validate({"generation": generation, field_name: parts[0]})


@dataclass(frozen=True, slots=True)
class Stamp:
    """What the planner keeps of a published event in place of the event: its type, its
    generation and a digest of its state. At 10,000 Services the backends' 100,000 endpoint
    models took ~170 MB, kept between reconciles only to be compared."""

    kind: type[c.Event]
    generation: int
    digest: bytes

    @classmethod
    def of(cls, event: c.Event) -> Stamp:
        return cls(type(event), event.generation, state_digest(event))


Published = c.Event | Stamp
"""The last event of a key, or its stamp."""

STAMPED = frozenset({Family.DOMAIN, Family.BACKEND, Family.ADMISSION, Family.LBSERVICE})
"""The families whose published events are kept as stamps (see :class:`Stamp`): all but the
few pools and peers. (The app keeps the domains it published for the leader's status.)"""


def kept(event: c.Event) -> Published:
    """What to keep of a published event."""
    return Stamp.of(event) if event.family in STAMPED else event


def state_digest(event: c.Event) -> bytes:
    """A digest of everything but the generation (the JSON a model dumps is deterministic)."""
    body = event.model_dump_json(exclude={"generation"}).encode()
    return hashlib.blake2b(body, digest_size=16).digest()


def same_state(a: Published, b: c.Event) -> bool:
    if isinstance(a, Stamp):
        return a.kind is type(b) and a.digest == state_digest(b)
    if type(a) is not type(b):
        return False
    left = {k: v for k, v in a.__dict__.items() if k != "generation"}
    right = {k: v for k, v in b.__dict__.items() if k != "generation"}
    return left == right


def is_live(event: Published) -> bool:
    return (event.kind if isinstance(event, Stamp) else type(event)) not in TOMBSTONES


@dataclass
class Plan:
    publish: list[c.Event] = field(default_factory=list)
    held_deletes: list[StateKey] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.publish


RESOLVED_AGAINST = frozenset({Family.POOL, Family.PEER})
"""Families that other events are resolved against (a domain's VIP pool, a node's peers)."""


def plan(
    desired: Mapping[StateKey, c.Event],
    published: Mapping[StateKey, Published],
    now_us: int,
    protect: frozenset[StateKey] = frozenset(),
) -> Plan:
    """``published`` holds the last event of every key (tombstones included, for generations)."""
    out = Plan()
    for key, want in desired.items():
        last = published.get(key)
        if last is not None and same_state(last, want):
            continue
        generation = max((last.generation if last else 0) + 1, now_us)
        out.publish.append(want.model_copy(update={"generation": generation}))
    for key, last in published.items():
        if key in desired or not is_live(last):
            continue
        if key in protect:
            out.held_deletes.append(key)
            continue
        gone = tombstone(key, max(last.generation + 1, now_us))
        if gone is not None:
            out.publish.append(gone)
    # What the others resolve against goes out first: ipam refuses a domain whose pool it has
    # not seen yet, and in a 10,000-domain cold start ~1,400 domains were refused and retried
    # (a second round of events each) because their pool came later in the batch.
    out.publish.sort(key=lambda event: event.family not in RESOLVED_AGAINST)
    return out


def suspicious_emptiness(
    desired: Collection[StateKey], published: Mapping[StateKey, Published]
) -> frozenset[StateKey]:
    """The keys to protect when a whole family went from something to nothing at once.

    That is what a fresh bus, a wrong manifest directory or a bad relist looks like, and deleting
    on it would withdraw every VIP and DNS name. A real mass removal goes through once the family
    is non-empty again, or key by key from watch DELETED events, which callers never protect.
    """
    protect: set[StateKey] = set()
    for family in _TOMBSTONE_OF:
        if any(k[0] is family for k in desired):
            continue
        live = [k for k, e in published.items() if k[0] is family and is_live(e)]
        if len(live) > 1:
            protect.update(live)
    return frozenset(protect)

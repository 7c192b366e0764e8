"""What the planner works on: the desired values of a name, what the zone holds there, the plan.

Ownership follows external-dns's TXT registry, extended for federation: next to every name we
publish sits a registry name (``<prefix>.<fqdn>``) holding one TXT record per owner (a cluster's
writer). Each record names the owner, the resource and the exact values that owner published, so
each writer knows which A/AAAA values are its own, which belong to a federated peer, and which
belong to nobody we know (foreign: never touched).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Literal

RecordType = Literal["A", "AAAA"]
HERITAGE = "ingress-domain"


def record_type(value: str) -> RecordType:
    return "A" if ipaddress.ip_address(value).version == 4 else "AAAA"


@dataclass(frozen=True)
class OwnerRecord:
    """One owner's TXT record in the registry.

    ``region``, ``weight`` and ``ready`` are optional fields: a record without them (written
    before they existed, or by a writer without a region or weight) reads as region unknown,
    default weight, ready.
    """

    owner: str
    resource: str
    values: frozenset[str]
    region: str | None = None
    """The region (edge site) whose dataplane serves these values."""
    weight: int | None = None
    """The federation weight (``dns.weight`` of the domain); 0 = drained, None = default."""
    ready: bool = True
    """False when the values stay only because nothing better serves the name (all withdrawn)."""

    def to_text(self) -> str:
        values = "+".join(sorted(self.values, key=_address_order))
        text = f"heritage={HERITAGE},owner={self.owner},resource={self.resource}"
        if self.region is not None:
            text += f",region={self.region}"
        if self.weight is not None:
            text += f",weight={self.weight}"
        if not self.ready:
            text += ",ready=false"
        return f"{text},values={values}"

    @property
    def serves(self) -> bool:
        """Counts as a serving peer: ready and not drained."""
        return self.ready and self.weight != 0

    @staticmethod
    def parse(text: str) -> OwnerRecord | None:
        """The record, or None when the TXT is not one of ours (someone else's TXT: ignored)."""
        fields: dict[str, str] = {}
        for part in text.split(","):
            key, sep, value = part.partition("=")
            if not sep:
                return None
            fields[key] = value
        if fields.get("heritage") != HERITAGE or not fields.get("owner"):
            return None
        values = frozenset(v for v in fields.get("values", "").split("+") if v)
        try:
            values = frozenset(str(ipaddress.ip_address(v)) for v in values)
        except ValueError:
            return None
        weight: int | None = None
        if fields.get("weight"):
            try:
                weight = int(fields["weight"])
            except ValueError:
                return None
        return OwnerRecord(
            fields["owner"],
            fields.get("resource", ""),
            values,
            region=fields.get("region") or None,
            weight=weight,
            ready=fields.get("ready", "true") != "false",
        )


def _address_order(value: str) -> tuple[int, int]:
    address = ipaddress.ip_address(value)
    return (address.version, int(address))


@dataclass(frozen=True)
class NameState:
    """What the zone holds at one name and at its registry name (read from the server)."""

    addresses: frozenset[str] = frozenset()
    ttl: int | None = None
    """TTL of the address RRsets (Knot keeps one per RRset); None when there are none."""
    cname: bool = False
    owners: tuple[OwnerRecord, ...] = ()
    registry_texts: frozenset[str] = frozenset()
    """Every TXT string at the registry name, ours or not, exactly as stored."""

    def mine(self, owner: str) -> OwnerRecord | None:
        return next((o for o in self.owners if o.owner == owner), None)

    def claimed_by_others(self, owner: str) -> frozenset[str]:
        return frozenset(v for o in self.owners if o.owner != owner for v in o.values)

    def serving_peers(self, owner: str) -> tuple[OwnerRecord, ...]:
        """Other owners whose values the name holds now and that are ready and not drained."""
        return tuple(
            o for o in self.owners if o.owner != owner and o.serves and o.values & self.addresses
        )

    def foreign(self) -> frozenset[str]:
        claimed = frozenset(v for o in self.owners for v in o.values)
        return self.addresses - claimed


@dataclass(frozen=True)
class Desired:
    """This cluster's wish for one name."""

    fqdn: str
    zone: str
    resource: str
    assigned: frozenset[str]
    """Every VIP held for the name."""
    healthy: frozenset[str]
    """The assigned VIPs not withdrawn everywhere past the hold-down."""
    ttl: int
    generation: int
    region: str | None = None
    """The region of these VIPs (the cluster's region; see docs/dns-writer.md)."""
    weight: int | None = None
    """``dns.weight`` of the domain: 0 drains this cluster from the name while a peer serves."""


@dataclass(frozen=True)
class Change:
    op: Literal["add", "delete"]
    rtype: Literal["A", "AAAA", "TXT"]
    value: str
    ttl: int = 0


@dataclass(frozen=True)
class NamePlan:
    fqdn: str
    zone: str
    registry: str
    changes: tuple[Change, ...]
    absent: tuple[str, ...] = ()
    """RR types that must not exist when the update applies (RFC 2136 prerequisites)."""
    published: frozenset[str] = frozenset()
    """Our values once applied: what dns.published reports."""

    @property
    def empty(self) -> bool:
        return not self.changes


@dataclass(frozen=True)
class Rejection:
    fqdn: str
    reason: str
    message: str


@dataclass
class ZoneView:
    """A zone's address, CNAME and registry contents, keyed by absolute lower-case name."""

    zone: str
    serial: int | None = None
    names: dict[str, NameState] = field(default_factory=dict)

    def get(self, name: str) -> NameState:
        return self.names.get(name, NameState())

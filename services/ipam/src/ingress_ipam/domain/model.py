"""The values the allocator reasons about.

An address record is the unit of exclusivity: one per address, held by one owner or by several
owners that share it deliberately (same sharing key, same namespace, ports that do not clash). A
record with no holders is cooling down: nobody may take it before ``reusable_after``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Literal

OwnerKey = tuple[str, ...]
"""``VipOwner.key()``: ``("domain", host)`` or ``("service", namespace, service)``."""

IpFamily = Literal["IPv4", "IPv6"]
PortKey = tuple[int, str]
"""(port, protocol)."""

DOMAIN_PORTS: frozenset[PortKey] = frozenset({(80, "TCP"), (443, "TCP")})


def family_of(address: str) -> IpFamily:
    return "IPv4" if ipaddress.ip_address(address).version == 4 else "IPv6"


def owner_label(owner: OwnerKey) -> str:
    return "/".join(owner)


@dataclass(frozen=True)
class Holder:
    owner: OwnerKey
    namespace: str
    ports: frozenset[PortKey]
    sharing_key: str | None = None


@dataclass(frozen=True)
class AddressRecord:
    address: str
    pool: str
    holders: tuple[Holder, ...] = ()
    reusable_after: float | None = None
    """Epoch seconds; set while the address cools down after its last holder released it."""

    @property
    def cooling(self) -> bool:
        return not self.holders

    def held_by(self, owner: OwnerKey) -> bool:
        return any(h.owner == owner for h in self.holders)

    def free_at(self, now: float) -> bool:
        return self.cooling and (self.reusable_after is None or self.reusable_after <= now)


@dataclass(frozen=True)
class Request:
    """What one owner needs, built from its desired event."""

    owner: OwnerKey
    namespace: str
    host: str | None
    families: tuple[IpFamily, ...]
    """Wanted families, primary first."""
    require_all_families: bool
    ports: frozenset[PortKey]
    pool: str | None = None
    addresses: tuple[str, ...] = ()
    sharing_key: str | None = None
    indexed: tuple[str, ...] = field(default=())
    """What the owner index says the owner holds: preferred when several records name it."""

    def holder(self) -> Holder:
        return Holder(self.owner, self.namespace, self.ports, self.sharing_key)


PickMode = Literal["held", "new", "reclaim", "share"]


@dataclass(frozen=True)
class Pick:
    address: str
    mode: PickMode
    """held: already ours; new: create the record; reclaim: take over an expired cooling record;
    share: join the holders of a record with the same sharing key."""


@dataclass(frozen=True)
class Assign:
    pool: str
    picks: tuple[Pick, ...]
    release: tuple[str, ...] = ()
    """Addresses the owner holds but no longer needs."""

    @property
    def addresses(self) -> tuple[str, ...]:
        return tuple(p.address for p in self.picks)

    @property
    def writes(self) -> bool:
        return bool(self.release) or any(p.mode != "held" for p in self.picks)


@dataclass(frozen=True)
class Reject:
    """Nothing the owner already holds is released on a rejection: a bad edit loses nothing."""

    reason: str
    message: str


Decision = Assign | Reject

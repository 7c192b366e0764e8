"""The dataplane state, desired and current, in one shape for both dataplanes.

A virtual service is (VIP, protocol, port); its real servers carry a weight. Weight 0 means
"draining": established connections keep flowing, no new ones are scheduled to it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

Proto = Literal["TCP", "UDP", "SCTP"]
Forward = Literal["tunnel", "masq", "route", "nat"]
"""How packets reach a real server: IPVS tunnel (IP-in-IP), masq / route (IPVS), nat (nftables)."""


@dataclass(frozen=True, order=True)
class VsKey:
    vip: str
    protocol: Proto
    port: int

    def __str__(self) -> str:
        return f"{self.vip}:{self.port}/{self.protocol.lower()}"


@dataclass(frozen=True, order=True)
class Real:
    address: str
    port: int

    def __str__(self) -> str:
        return f"{self.address}:{self.port}"


@dataclass(frozen=True)
class VsSpec:
    scheduler: str
    reals: Mapping[Real, int] = field(default_factory=dict)
    """Real server -> weight (0 = kept but drained, e.g. a terminating endpoint)."""


@dataclass(frozen=True)
class DesiredState:
    services: Mapping[VsKey, VsSpec]
    addresses: frozenset[str]
    """VIPs to bind locally (the set this node serves)."""
    released: frozenset[str] = frozenset()
    """VIPs released by an explicit event: their services and address go. Nothing else is ever
    deleted wholesale, so an empty or partial desired state cannot wipe the node."""


@dataclass(frozen=True)
class CurrentDest:
    weight: int
    forward: Forward
    active: int = 0
    inactive: int = 0


@dataclass(frozen=True)
class CurrentVs:
    scheduler: str
    dests: Mapping[Real, CurrentDest] = field(default_factory=dict)


@dataclass(frozen=True)
class KernelState:
    services: Mapping[VsKey, CurrentVs]
    addresses: frozenset[str]
    """VIPs bound on this system's own interface (the mark of what it created)."""


EMPTY_KERNEL = KernelState(services={}, addresses=frozenset())


# ----------------------------------------------------------------------------- writes


@dataclass(frozen=True)
class AddAddress:
    vip: str


@dataclass(frozen=True)
class DelAddress:
    vip: str


@dataclass(frozen=True)
class AddService:
    key: VsKey
    scheduler: str


@dataclass(frozen=True)
class SetService:
    key: VsKey
    scheduler: str


@dataclass(frozen=True)
class DelService:
    key: VsKey


@dataclass(frozen=True)
class AddDest:
    key: VsKey
    real: Real
    weight: int
    forward: Forward


@dataclass(frozen=True)
class SetDest:
    key: VsKey
    real: Real
    weight: int
    forward: Forward


@dataclass(frozen=True)
class DelDest:
    key: VsKey
    real: Real


Op = AddAddress | DelAddress | AddService | SetService | DelService | AddDest | SetDest | DelDest


def describe(op: Op) -> str:
    """One stable line per write: used in logs and in the golden plans."""
    match op:
        case AddAddress(vip) | DelAddress(vip):
            return f"{type(op).__name__} {vip}"
        case AddService(key, scheduler) | SetService(key, scheduler):
            return f"{type(op).__name__} {key} sched={scheduler}"
        case DelService(key):
            return f"DelService {key}"
        case AddDest(key, real, weight, forward) | SetDest(key, real, weight, forward):
            return f"{type(op).__name__} {key} -> {real} weight={weight} fwd={forward}"
        case DelDest(key, real):
            return f"DelDest {key} -> {real}"
    raise AssertionError(op)  # pragma: no cover


def apply_ops(state: KernelState, ops: Sequence[Op]) -> KernelState:
    """The kernel state after ``ops``: what a correct dataplane ends in. The in-memory fake is
    this function; the nftables dataplane renders its result as one atomic batch."""
    services: dict[VsKey, dict[Real, CurrentDest]] = {
        k: dict(v.dests) for k, v in state.services.items()
    }
    schedulers = {k: v.scheduler for k, v in state.services.items()}
    addresses = set(state.addresses)
    for op in ops:
        match op:
            case AddAddress(vip):
                addresses.add(vip)
            case DelAddress(vip):
                addresses.discard(vip)
            case AddService(key, scheduler) | SetService(key, scheduler):
                services.setdefault(key, {})
                schedulers[key] = scheduler
            case DelService(key):
                services.pop(key, None)
                schedulers.pop(key, None)
            case AddDest(key, real, weight, forward) | SetDest(key, real, weight, forward):
                old = services[key].get(real)
                services[key][real] = CurrentDest(
                    weight,
                    forward,
                    old.active if old else 0,
                    old.inactive if old else 0,
                )
            case DelDest(key, real):
                services[key].pop(real, None)
    return KernelState(
        services={k: CurrentVs(schedulers[k], dests) for k, dests in services.items()},
        addresses=frozenset(addresses),
    )

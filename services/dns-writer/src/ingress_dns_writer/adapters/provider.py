"""The DNS provider interface and its errors, and an in-memory fake with the same behaviour.

A provider reads what a zone holds (whole zone, or a few names), applies a batch of name plans
atomically, reports the zone's serial, and resolves names the way clients will. Another backend
(PowerDNS HTTP API, a cloud DNS) implements these six methods: see docs/dns-writer.md.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ..domain import NamePlan, NameState, OwnerRecord, ZoneView, apply_to_state


class ProviderError(Exception):
    """A provider failure, with a machine-readable reason for logs, readiness and backoff."""

    reason = "ProviderError"
    retry_whole_batch = True
    """False when the batch must be split so that one name's failure leaves the others alone."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class AuthRejected(ProviderError):
    """TSIG refused: fail closed, write nothing, retry with backoff until the key is fixed."""

    reason = "TsigRejected"


class NotAuthoritative(ProviderError):
    reason = "NotAuthoritative"


class Refused(ProviderError):
    reason = "Refused"


class Unavailable(ProviderError):
    reason = "ServerUnavailable"


class PrerequisiteFailed(ProviderError):
    """The zone changed under us (a name gained a record since we read it): re-read, re-plan."""

    reason = "PrerequisiteFailed"
    retry_whole_batch = False


class DnsProvider(Protocol):
    name: str

    async def read(self, zone: str, names: Collection[str] | None = None) -> ZoneView:
        """Every managed name of ``zone`` (``names`` None: the whole zone) with its registry."""
        ...

    async def apply(self, zone: str, plans: Sequence[NamePlan]) -> None:
        """Apply the plans as one atomic update, or raise a :class:`ProviderError`."""
        ...

    async def serial(self, zone: str) -> int: ...

    async def resolve(self, fqdn: str) -> frozenset[str]:
        """The A and AAAA values a client gets for ``fqdn`` from this provider."""
        ...

    async def resolve_many(self, fqdns: Sequence[str]) -> dict[str, frozenset[str]]:
        """:meth:`resolve` for several names at once (one resolver for a whole batch)."""
        ...

    async def close(self) -> None: ...


@dataclass
class FakeProvider:
    """In memory, with the same contract: atomic batches, prerequisites, serial bumps, failures
    injected with ``fail_next``."""

    name: str = "fake"
    zones: dict[str, dict[str, NameState]] = field(default_factory=dict)
    serials: dict[str, int] = field(default_factory=dict)
    fail_next: list[ProviderError] = field(default_factory=list)
    applied: list[tuple[str, tuple[NamePlan, ...]]] = field(default_factory=list)

    def seed(self, zone: str, fqdn: str, state: NameState) -> None:
        self.zones.setdefault(zone, {})[fqdn] = state
        self.serials[zone] = self.serials.get(zone, 1) + 1

    async def read(self, zone: str, names: Collection[str] | None = None) -> ZoneView:
        held = self.zones.get(zone, {})
        wanted = held.keys() if names is None else [n for n in names if n in held]
        return ZoneView(zone, self.serials.get(zone, 1), {n: held[n] for n in wanted})

    async def apply(self, zone: str, plans: Sequence[NamePlan]) -> None:
        if self.fail_next:
            raise self.fail_next.pop(0)
        held = self.zones.setdefault(zone, {})
        for plan in plans:
            state = held.get(plan.fqdn, NameState())
            present = {"A" if ":" not in v else "AAAA" for v in state.addresses}
            if state.cname:
                present.add("CNAME")
            if present & set(plan.absent):
                raise PrerequisiteFailed(f"{plan.fqdn}: {sorted(present & set(plan.absent))}")
        for plan in plans:
            held[plan.fqdn] = apply_to_state(held.get(plan.fqdn, NameState()), plan)
        self.serials[zone] = self.serials.get(zone, 1) + 1
        self.applied.append((zone, tuple(plans)))

    async def serial(self, zone: str) -> int:
        return self.serials.get(zone, 1)

    async def resolve(self, fqdn: str) -> frozenset[str]:
        for names in self.zones.values():
            if fqdn in names:
                return names[fqdn].addresses
        return frozenset()

    async def resolve_many(self, fqdns: Sequence[str]) -> dict[str, frozenset[str]]:
        return {fqdn: await self.resolve(fqdn) for fqdn in fqdns}

    async def close(self) -> None:
        return None

    def owners(self, zone: str, fqdn: str) -> tuple[OwnerRecord, ...]:
        return self.zones.get(zone, {}).get(fqdn, NameState()).owners

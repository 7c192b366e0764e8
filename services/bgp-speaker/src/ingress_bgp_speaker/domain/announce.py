"""Announce after ready, withdraw at once, re-announce only after a hold-down.

A VIP is *ready* on this node when the VIP is assigned, this node's l4-programmer reports it
programmed, and at least one of its virtual services has a ready real server (so the L7 pool
behind it has ready endpoints). Withdrawal is immediate because a route to a node that cannot
serve blackholes traffic; announcement after a withdrawal waits ``hold_down`` seconds so that a
flapping backend does not flap the route at the ToR (and every router behind it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ingress_events import catalogue as c

from .model import PoolConfig, PoolMembership

# Why a VIP is not announced (Reason strings of route.withdrawn).
NOT_PROGRAMMED = "L4NotProgrammed"
NO_READY_BACKENDS = "NoReadyBackends"
L4_NOT_READY = "L4NotReady"
L4_REMOVED = "L4Removed"
RELEASED = "VipReleased"
OUTSIDE_POOLS = "VipOutsidePools"
HOLD_DOWN = "HoldDown"
SHUTDOWN = "Shutdown"


@dataclass(frozen=True)
class Readiness:
    ready: bool
    reason: str | None
    """Why not, when not ready."""


READY = Readiness(True, None)


def readiness_of(
    vip: str,
    assigned: bool,
    state: c.L4Programmed | c.L4NotReady | c.L4Removed | None,
    in_pools: PoolMembership,
) -> Readiness | None:
    """One VIP's readiness; None for a VIP this node no longer knows (not assigned, no l4)."""
    if not assigned:
        return None if state is None else Readiness(False, RELEASED)
    if vip not in in_pools:
        return Readiness(False, OUTSIDE_POOLS)
    if state is None:
        return Readiness(False, NOT_PROGRAMMED)
    if isinstance(state, c.L4Removed):
        return Readiness(False, L4_REMOVED)
    if isinstance(state, c.L4NotReady):
        return Readiness(False, L4_NOT_READY)
    for service in state.services:
        if service.ready_real_servers > 0:
            return READY
    return Readiness(False, NO_READY_BACKENDS)


def vip_readiness(
    assigned: Iterable[str],
    l4: Mapping[str, c.L4Programmed | c.L4NotReady | c.L4Removed],
    pools: Iterable[PoolConfig] | PoolMembership,
) -> dict[str, Readiness]:
    """Readiness of every VIP this node knows about (assigned, or with l4 state)."""
    in_pools = pools if isinstance(pools, PoolMembership) else PoolMembership(pools)
    assigned_set = set(assigned)
    out: dict[str, Readiness] = {}
    for vip in assigned_set | l4.keys():
        readiness = readiness_of(vip, vip in assigned_set, l4.get(vip), in_pools)
        if readiness is not None:
            out[vip] = readiness
    return out


@dataclass(frozen=True)
class RouteState:
    announced: bool
    withdrawn_at: float | None = None
    """When it was last withdrawn (start of the hold-down), None if never."""


@dataclass(frozen=True)
class AnnouncePlan:
    state: dict[str, RouteState]
    reasons: dict[str, str]
    """Why each VIP that is not announced is not."""
    wake_at: float | None
    """The earliest moment a hold-down ends (the caller plans again then)."""

    @property
    def announced(self) -> frozenset[str]:
        return frozenset(v for v, s in self.state.items() if s.announced)


def plan_announcements(
    readiness: Mapping[str, Readiness],
    previous: Mapping[str, RouteState],
    now: float,
    hold_down: float,
) -> AnnouncePlan:
    return _plan(readiness, previous, {}, {}, readiness.keys() | previous.keys(), now, hold_down)


def replan_announcements(
    readiness: Mapping[str, Readiness],
    previous: AnnouncePlan,
    changed: Iterable[str],
    now: float,
    hold_down: float,
) -> AnnouncePlan:
    """``plan_announcements(readiness, previous.state, now, hold_down)``, planning again only
    the VIPs that can come out differently: those whose readiness changed since ``previous``
    was planned (the caller names them) and those in a hold-down (withdrawn, not announced: the
    only plans that depend on the time). Any other VIP planned again with the same readiness
    gets the same state and reason, so it keeps them; at 10,000 VIPs planning all of them was a
    good part of every pass."""
    # A VIP neither ready nor planned before is no VIP of this node any more: nothing to plan.
    again = {vip for vip in changed if vip in readiness or vip in previous.state}
    again.update(
        vip
        for vip, route in previous.state.items()
        if route.withdrawn_at is not None and not route.announced
    )
    state = dict(previous.state)
    # A VIP the previous plan dropped (released, hold-down over) has a reason there and no state;
    # planned from that plan it is not looked at at all, so it has no reason either.
    reasons = {
        vip: reason
        for vip, reason in previous.reasons.items()
        if vip in previous.state or vip in readiness
    }
    for vip in again:
        state.pop(vip, None)
        reasons.pop(vip, None)
    return _plan(readiness, previous.state, state, reasons, again, now, hold_down)


def _plan(
    readiness: Mapping[str, Readiness],
    previous: Mapping[str, RouteState],
    state: dict[str, RouteState],
    reasons: dict[str, str],
    vips: Iterable[str],
    now: float,
    hold_down: float,
) -> AnnouncePlan:
    """Plan ``vips`` into ``state`` and ``reasons`` (which hold the plan of every other VIP)."""
    wake_at: float | None = None
    for vip in vips:
        ready = readiness.get(vip, Readiness(False, RELEASED))
        before = previous.get(vip, RouteState(False))
        if ready.ready:
            if before.announced:
                state[vip] = before
                continue
            release = None if before.withdrawn_at is None else before.withdrawn_at + hold_down
            if release is None or now >= release:
                state[vip] = RouteState(True, before.withdrawn_at)
            else:
                state[vip] = before
                reasons[vip] = HOLD_DOWN
                wake_at = release if wake_at is None else min(wake_at, release)
            continue
        reasons[vip] = ready.reason or NOT_PROGRAMMED
        if before.announced:
            state[vip] = RouteState(False, now)
        elif before.withdrawn_at is not None and now <= before.withdrawn_at + hold_down:
            # Kept only while its hold-down runs, so that a quick return still waits.
            state[vip] = before
        elif vip in readiness:
            state[vip] = RouteState(False, None)
    return AnnouncePlan(state=state, reasons=reasons, wake_at=wake_at)

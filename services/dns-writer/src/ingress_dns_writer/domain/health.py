"""Route health of VIPs: a new VIP enters DNS once a node announces it; a VIP withdrawn on
every node leaves DNS only after a hold-down.

A new VIP is *pending* until its first route event: a name that resolves before the VIP is
routable sends a client's SYN into the void, and TCP retries it only after a second (measured:
bench/e2e/report.md). So it is left out of what is published until a node announces it, or until
``wait`` seconds passed with no route event at all (a setup without BGP still gets its names).
Once a VIP has route events it is healthy unless withdrawn everywhere past the hold-down.
Time is a parameter (monotonic seconds), so this stays pure.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping


def withdrawn_everywhere(announced_per_node: Iterable[bool]) -> bool:
    states = list(announced_per_node)
    return bool(states) and not any(states)


def next_withdrawn_since(previous: float | None, withdrawn: bool, now: float) -> float | None:
    """When the VIP became withdrawn everywhere: kept while it stays so, cleared on return."""
    if not withdrawn:
        return None
    return previous if previous is not None else now


def healthy_vips(
    assigned: Iterable[str],
    withdrawn_since: Mapping[str, float],
    now: float,
    hold_down: float,
) -> tuple[frozenset[str], float | None]:
    """The VIPs still publishable, and the earliest time a pending hold-down expires."""
    healthy: set[str] = set()
    wake: float | None = None
    for vip in assigned:
        since = withdrawn_since.get(vip)
        if since is None:
            healthy.add(vip)
            continue
        expires = since + hold_down
        if now < expires:
            healthy.add(vip)
            wake = expires if wake is None else min(wake, expires)
    return frozenset(healthy), wake


def pending_vips(
    addresses: Iterable[str],
    routed: Collection[str],
    assigned_at: Mapping[str, float],
    now: float,
    wait: float,
) -> tuple[frozenset[str], float | None]:
    """The VIPs not to publish yet (no route event since their assignment, within ``wait``),
    and when the first of them stops waiting."""
    pending: set[str] = set()
    wake: float | None = None
    for vip in addresses:
        if vip in routed:
            continue
        until = assigned_at.get(vip, now) + wait
        if now < until:
            pending.add(vip)
            wake = until if wake is None else min(wake, until)
    return frozenset(pending), wake

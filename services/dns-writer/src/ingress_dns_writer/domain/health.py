"""Route health of VIPs: a VIP withdrawn on every node leaves DNS only after a hold-down.

A VIP nobody has announced or withdrawn yet counts as healthy: bgp-speaker announces only after
the VIP is programmed, and DNS must not wait for that (the name would flap at every creation).
Time is a parameter (monotonic seconds), so this stays pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


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

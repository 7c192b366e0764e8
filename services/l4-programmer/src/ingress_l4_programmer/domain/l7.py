"""The L7-node role: which VIPs an L7 pod binds on its decapsulating device. Pure.

IPVS tunnel mode delivers the client's packet inside IP-in-IP to the L7 pod, which must own the
VIP for the inner packet to be local (see ``adapters/l7.py``). An L7 pod binds every VIP of an
ingress domain (LoadBalancer Service VIPs go to that Service's own pods, never to the L7 pool).
Deletes come only from explicit events, as everywhere: a VIP is unbound when it is released,
never because the bus (fresh, or replaying from nothing) does not mention it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ingress_events import catalogue as c


@dataclass(frozen=True)
class L7Plan:
    bind: tuple[str, ...]
    unbind: tuple[str, ...]

    @property
    def empty(self) -> bool:
        return not self.bind and not self.unbind


def plan_l7(
    bound: Iterable[str],
    assigned: Iterable[c.VipAssigned],
    released: Iterable[c.VipReleased],
) -> L7Plan:
    """``bound``: what the device holds now; ``assigned`` / ``released``: the newest event of
    each VIP owner."""
    have = set(bound)
    wanted = {
        address for event in assigned if event.owner.kind == "domain" for address in event.addresses
    }
    gone = {
        address
        for event in released
        if event.owner.kind == "domain"
        for address in event.addresses
        if address not in wanted  # released by one owner, still assigned to another (shared)
    }
    return L7Plan(bind=tuple(sorted(wanted - have)), unbind=tuple(sorted(gone & have)))

"""(desired, current kernel state) -> the fewest writes, with graceful drain.

Ownership: a kernel virtual service is ours only when its VIP is one we serve (desired) or one
released by an explicit event. Services on any other address, and addresses on other
interfaces, are never read into a write. A converged node plans zero writes.

Drain: a real server that is no longer wanted first goes to weight 0 (IPVS stops scheduling new
connections to it, established ones keep flowing); it is deleted once it holds no active
connection or once ``drain_timeout`` has passed since the drain began. The drain start times are
an input and an output, so time stays a parameter. After a restart the start times are unknown:
a weight-0 leftover simply starts its clock again, which never cuts a connection early.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from .model import (
    AddAddress,
    AddDest,
    AddService,
    CurrentVs,
    DelAddress,
    DelDest,
    DelService,
    DesiredState,
    Forward,
    KernelState,
    Op,
    Real,
    SetDest,
    SetService,
    VsKey,
)

DrainKey = tuple[VsKey, Real]


@dataclass(frozen=True)
class Plan:
    ops: list[Op]
    drains: Mapping[DrainKey, float] = field(default_factory=dict)
    """Real servers draining after this plan, with the time their drain began."""

    @property
    def writes(self) -> int:
        return len(self.ops)


def plan(
    desired: DesiredState,
    current: KernelState,
    *,
    forward: Forward,
    now: float,
    drains: Mapping[DrainKey, float] | None = None,
    drain_timeout: float = 300.0,
) -> Plan:
    drains = drains or {}
    next_drains: dict[DrainKey, float] = {}
    head: list[Op] = []
    body: list[Op] = []
    tail: list[Op] = []

    # Addresses first (the kernel drops traffic to a VIP it does not own), removals last.
    for vip in sorted(desired.addresses - current.addresses):
        head.append(AddAddress(vip))

    for key in sorted(desired.services):
        spec = desired.services[key]
        have = current.services.get(key)
        if have is None:
            body.append(AddService(key, spec.scheduler))
            have = CurrentVs(spec.scheduler, {})
        elif have.scheduler != spec.scheduler:
            body.append(SetService(key, spec.scheduler))
        for real in sorted(spec.reals):
            weight = spec.reals[real]
            dest = have.dests.get(real)
            if dest is None:
                body.append(AddDest(key, real, weight, forward))
            elif dest.weight != weight or dest.forward != forward:
                body.append(SetDest(key, real, weight, forward))
        for real in sorted(set(have.dests) - set(spec.reals)):
            dest = have.dests[real]
            if dest.weight > 0:
                body.append(SetDest(key, real, 0, dest.forward))
                next_drains[(key, real)] = now
                continue
            started = drains.get((key, real), now)
            if dest.active == 0 or now - started >= drain_timeout:
                body.append(DelDest(key, real))
            else:
                next_drains[(key, real)] = started

    served = desired.addresses
    for key in sorted(current.services):
        if key in desired.services:
            continue
        if key.vip in desired.released and key.vip not in served:
            tail.append(DelService(key))
        elif key.vip in served:
            # A port dropped from a VIP we still serve (a newer vip.assigned said so).
            tail.append(DelService(key))

    for vip in sorted((desired.released & current.addresses) - served):
        tail.append(DelAddress(vip))
    return Plan(ops=head + body + tail, drains=next_drains)


def scope(
    desired: DesiredState,
    current: KernelState,
    keys: Collection[VsKey],
    vips: Collection[str] = (),
) -> tuple[DesiredState, KernelState]:
    """``desired`` and ``current`` cut down to the virtual services ``keys`` and the VIPs
    ``vips`` (plus those of ``keys``), in time proportional to them, not to the table: an
    incremental change plans only what it touched. The caller passes every key of a changed VIP
    that exists on either side."""
    vips = {k.vip for k in keys} | set(vips)
    return (
        DesiredState(
            services={k: desired.services[k] for k in keys if k in desired.services},
            addresses=frozenset(v for v in vips if v in desired.addresses),
            released=frozenset(v for v in vips if v in desired.released),
        ),
        KernelState(
            services={k: current.services[k] for k in keys if k in current.services},
            addresses=frozenset(v for v in vips if v in current.addresses),
        ),
    )

"""(desired, current) -> plan for one name. Pure: no I/O, no clock.

The rules a plan never breaks:
* it deletes only values this owner's TXT record claims and no other owner claims;
* it refuses a name holding a CNAME or address values no registry record claims (foreign);
* it never leaves a name empty because of route health: a name whose every value would be
  withdrawn keeps serving (nothing better exists); only an explicit removal empties a name;
  it steps aside only for a peer that is ready (its registry record says so) and not drained;
* at a provider of another region it stands by while an owner of that region serves the name
  (regional preference), and publishes as a fallback when none does;
* a name already as desired plans no change at all.
"""

from __future__ import annotations

from .model import (
    Change,
    Desired,
    NamePlan,
    NameState,
    OwnerRecord,
    Rejection,
    record_type,
)
from .names import registry_name


def publish_values(
    desired: Desired, current: NameState, owner: str, provider_region: str | None = None
) -> tuple[frozenset[str], bool]:
    """Which of our VIPs the name should carry at a provider of ``provider_region`` (None: a
    provider without a region, which carries every cluster's VIPs), and whether they are ready.
    The hold-down is already applied upstream (``desired.healthy``)."""
    peers = current.serving_peers(owner)
    home = provider_region is None or desired.region in (None, provider_region)
    if not home and any(p.region == provider_region for p in peers):
        # The provider's own region serves the name: its clients get only its VIPs.
        return frozenset(), False
    if desired.weight == 0 and peers:
        # Drained (weight 0) while a peer with a weight serves: step aside.
        return frozenset(), False
    if desired.healthy:
        return desired.healthy, True
    if peers:
        # Another cluster still serves the name and is ready: step aside until our routes return.
        return frozenset(), False
    mine = current.mine(owner)
    kept = (mine.values & desired.assigned) if mine else frozenset()
    # Nobody else serves it: keep the last values rather than turn the name into NXDOMAIN, and
    # say in the registry that they are not ready, so that a fallback may take over.
    return kept or desired.assigned, False


def plan_publish(
    desired: Desired,
    current: NameState,
    owner: str,
    prefix: str,
    provider_region: str | None = None,
) -> NamePlan | Rejection:
    if current.cname:
        return Rejection(
            desired.fqdn,
            "CnameAtName",
            f"{desired.fqdn} holds a CNAME record; an address record cannot sit beside it",
        )
    foreign = current.foreign()
    if foreign:
        return Rejection(
            desired.fqdn,
            "NameHeldByForeignRecord",
            f"{desired.fqdn} already has address records no ingress-domain writer owns "
            f"({', '.join(sorted(foreign))}); they are left untouched",
        )
    values, ready = publish_values(desired, current, owner, provider_region)
    record = OwnerRecord(owner, desired.resource, values, desired.region, desired.weight, ready)
    return _plan(desired.fqdn, desired.zone, record, desired.ttl, current, owner, prefix)


def plan_remove(
    fqdn: str, zone: str, current: NameState, owner: str, prefix: str, *, upsert_only: bool
) -> NamePlan:
    """An explicit delete (vip.released, domain.deleted): take our values and record away."""
    registry = registry_name(fqdn, prefix)
    if upsert_only:
        return NamePlan(fqdn, zone, registry, ())
    return _plan(fqdn, zone, OwnerRecord(owner, "", frozenset()), 0, current, owner, prefix)


def _plan(
    fqdn: str,
    zone: str,
    record: OwnerRecord,
    ttl: int,
    current: NameState,
    owner: str,
    prefix: str,
) -> NamePlan:
    registry = registry_name(fqdn, prefix)
    values = record.values
    mine = current.mine(owner)
    mine_values = mine.values if mine else frozenset()
    others = current.claimed_by_others(owner)
    changes: list[Change] = []

    adds = values - current.addresses
    if values and current.ttl is not None and current.ttl != ttl:
        # Re-adding an existing value with a new TTL is how RFC 2136 changes an RRset's TTL.
        adds = values
    deletes = (mine_values & current.addresses) - values - others
    for value in sorted(deletes):
        changes.append(Change("delete", record_type(value), value))
    for value in sorted(adds):
        changes.append(Change("add", record_type(value), value, ttl))

    wanted_text = record.to_text() if values else None
    my_texts = {
        text
        for text in current.registry_texts
        if (parsed := OwnerRecord.parse(text)) is not None and parsed.owner == owner
    }
    for text in sorted(my_texts - {wanted_text} if wanted_text else my_texts):
        changes.append(Change("delete", "TXT", text))
    if wanted_text is not None and (wanted_text not in my_texts or current.ttl != ttl):
        changes.append(Change("add", "TXT", wanted_text, ttl))

    absent: list[str] = []
    if adds:
        absent.append("CNAME")
        present_types = {record_type(v) for v in current.addresses}
        # A name with no address records when we looked must still have none: a record created
        # meanwhile by someone else is theirs, and the update must fail rather than join it.
        absent.extend(sorted({record_type(v) for v in adds} - present_types))
    return NamePlan(fqdn, zone, registry, tuple(changes), tuple(absent), values)


def apply_to_state(state: NameState, plan: NamePlan) -> NameState:
    """What the name holds after ``plan`` applied (used by the fake provider and by tests)."""
    addresses = set(state.addresses)
    texts = set(state.registry_texts)
    ttl = state.ttl
    for change in plan.changes:
        target = texts if change.rtype == "TXT" else addresses
        if change.op == "delete":
            target.discard(change.value)
        else:
            target.add(change.value)
            if change.rtype != "TXT":
                ttl = change.ttl
    owners = tuple(o for t in sorted(texts) if (o := OwnerRecord.parse(t)) is not None)
    return NameState(
        addresses=frozenset(addresses),
        ttl=ttl if addresses else None,
        cname=state.cname,
        owners=owners,
        registry_texts=frozenset(texts),
    )

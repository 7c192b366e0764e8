"""The allocator: (request, pools, address records, now) -> assign or reject. Pure.

Rules, in order:
* an address the owner already holds is kept while the request still allows it (same pool when
  one is named, same sharing terms): restarts, redeploys and pool edits never move a VIP, and a
  pool shrunk under an allocation keeps it;
* requested addresses are honoured when they lie in a pool the owner may use and are free (or
  shareable with the same sharing key);
* otherwise a new address comes from the first eligible pool (default pools first, then higher
  priority, then name), scanning from a point derived from the owner so that replicas working on
  different owners rarely race for the same address;
* an address whose last holder released it is cooling down until ``reusable_after``.

The allocator never writes: the caller turns each pick into a compare-and-set on the address's
record, so a stale view can only cost a retry, never a duplicate.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Mapping
from datetime import UTC, datetime

from .model import (
    AddressRecord,
    Assign,
    Decision,
    Holder,
    IpFamily,
    Pick,
    Reject,
    Request,
    family_of,
)
from .pools import Pool


def start_index(owner: tuple[str, ...]) -> int:
    digest = hashlib.sha256("/".join(owner).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def compatible(record: AddressRecord, holder: Holder) -> bool:
    """Whether ``holder`` may sit on ``record`` next to its other holders: a deliberate share
    (same sharing key, same namespace, so no tenant can attach itself to another's VIP) and no
    port served twice. Domains all serve 80/443 and share safely: Envoy routes by host."""
    for other in record.holders:
        if other.owner == holder.owner:
            continue
        if holder.sharing_key is None or other.sharing_key != holder.sharing_key:
            return False
        if other.namespace != holder.namespace:
            return False
        both_domains = other.owner[0] == "domain" and holder.owner[0] == "domain"
        if not both_domains and other.ports & holder.ports:
            return False
    return True


def eligible_pools(request: Request, pools: Mapping[str, Pool]) -> list[Pool] | Reject:
    allowed = {n: p for n, p in pools.items() if p.allows(request.namespace, request.host)}
    if request.pool is not None:
        if request.pool not in pools:
            return Reject(
                "PoolNotFound", f"VipPool {request.pool!r} does not exist or was not accepted"
            )
        if request.pool not in allowed:
            return Reject("PoolNotAllowed", _not_allowed(request, request.pool))
        return [allowed[request.pool]]
    return sorted(
        (p for p in allowed.values() if p.auto_assign),
        key=lambda p: (not p.default, -p.priority, p.name),
    )


def _not_allowed(request: Request, pool: str) -> str:
    who = f"namespace {request.namespace!r}"
    if request.host is not None:
        who += f" (host {request.host!r})"
    return f"{who} may not draw from VipPool {pool!r}: its namespaces, zones or domains exclude it"


def _pick_new(
    pool: Pool,
    family: IpFamily,
    request: Request,
    records: Mapping[str, AddressRecord],
    shareable: Iterable[AddressRecord],
    now: float,
    reserved: Collection[str],
) -> Pick | None:
    holder = request.holder()
    if request.sharing_key is not None:
        for record in sorted(shareable, key=lambda r: r.address):
            if (
                record.pool == pool.name
                and record.holders
                and family_of(record.address) == family
                and record.address not in reserved
                and compatible(record, holder)
            ):
                return Pick(record.address, "share")
    for address in pool.scan(family, start_index(request.owner)):
        if address in reserved:
            continue
        existing = records.get(address)
        if existing is None:
            return Pick(address, "new")
        if existing.free_at(now):
            return Pick(address, "reclaim")
    return None


def _exhausted(
    pools: list[Pool], families: Iterable[IpFamily], records: Mapping[str, AddressRecord]
) -> Reject:
    if not pools:
        return Reject("NoPoolAvailable", "no VipPool with auto-assign serves this owner")
    wanted = "/".join(families)
    parts = []
    for pool in pools:
        held = sum(1 for r in records.values() if r.pool == pool.name and r.holders)
        cooling = sum(1 for r in records.values() if r.pool == pool.name and not r.holders)
        parts.append(f"{pool.name}: {pool.size()} total, {held} held, {cooling} cooling down")
    return Reject("PoolExhausted", f"no free {wanted} address in " + "; ".join(parts))


def _plan_requested(
    request: Request,
    pools: Mapping[str, Pool],
    records: Mapping[str, AddressRecord],
    held: list[AddressRecord],
    now: float,
) -> Decision:
    families = [family_of(a) for a in request.addresses]
    if len(set(families)) != len(families):
        return Reject("InvalidVipRequest", "at most one requested address per IP family")
    held_addresses = {r.address: r for r in held}
    holder = request.holder()
    picks: list[Pick] = []
    pool_names: set[str] = set()
    for address in request.addresses:
        found = records.get(address)
        containing = [p for p in pools.values() if p.contains(address)]
        if address in held_addresses and compatible(held_addresses[address], holder):
            # Kept even when its pool has since shrunk away from it: nothing held is lost.
            picks.append(Pick(address, "held"))
            pool_names.add(held_addresses[address].pool)
            continue
        if not containing:
            return Reject("AddressNotInPool", f"{address} is not in any accepted VipPool")
        pool = containing[0]
        if request.pool is not None and pool.name != request.pool:
            return Reject(
                "AddressNotInPool", f"{address} is in VipPool {pool.name!r}, not {request.pool!r}"
            )
        if not pool.allows(request.namespace, request.host):
            return Reject("AddressNotAllowed", _not_allowed(request, pool.name))
        pool_names.add(pool.name)
        if found is None:
            picks.append(Pick(address, "new"))
        elif found.free_at(now):
            picks.append(Pick(address, "reclaim"))
        elif found.cooling:
            assert found.reusable_after is not None
            return Reject(
                "AddressCoolingDown",
                f"{address} was released recently and is reusable after "
                f"{_when(found.reusable_after)}",
            )
        elif compatible(found, holder):
            picks.append(Pick(address, "share"))
        else:
            return Reject("AddressInUse", f"{address} is already assigned to another owner")
    if len(pool_names) > 1:
        return Reject(
            "AddressesInDifferentPools",
            "the requested addresses lie in different VipPools: " + ", ".join(sorted(pool_names)),
        )
    wanted = set(request.addresses)
    release = tuple(sorted(r.address for r in held if r.address not in wanted))
    return Assign(pool_names.pop(), tuple(picks), release)


def plan(
    request: Request,
    pools: Mapping[str, Pool],
    records: Mapping[str, AddressRecord],
    held: Iterable[AddressRecord],
    shareable: Iterable[AddressRecord] = (),
    *,
    now: float,
    reserved: Collection[str] = frozenset(),
) -> Decision:
    """Decide the owner's addresses. ``held``: the records naming the owner; ``shareable``: the
    records held under the request's sharing key in its namespace; ``reserved``: addresses
    another in-flight allocation of this process is about to take."""
    held_list = sorted(held, key=lambda r: (r.address not in request.indexed, r.address))
    candidates = eligible_pools(request, pools)
    if request.addresses:
        if isinstance(candidates, Reject) and request.pool is not None:
            return candidates
        return _plan_requested(request, pools, records, held_list, now)

    holder = request.holder()
    kept: dict[IpFamily, AddressRecord] = {}
    for record in held_list:
        family = family_of(record.address)
        if family not in request.families or family in kept:
            continue
        if request.pool is not None and record.pool != request.pool:
            continue
        if kept and next(iter(kept.values())).pool != record.pool:
            continue
        if compatible(record, holder):
            kept[family] = record
    primary = request.families[0]
    required = request.families if request.require_all_families else (primary,)

    def finish(pool: str, picks: list[Pick]) -> Assign:
        chosen = {p.address for p in picks}
        release = tuple(sorted(r.address for r in held_list if r.address not in chosen))
        order = {f: i for i, f in enumerate(request.families)}
        picks.sort(key=lambda p: order[family_of(p.address)])
        return Assign(pool, tuple(picks), release)

    shareable = list(shareable)
    if kept:
        pool_name = next(iter(kept.values())).pool
        picks = [Pick(r.address, "held") for r in kept.values()]
        missing = [f for f in request.families if f not in kept]
        pool = pools.get(pool_name)
        for family in missing:
            pick = None
            if pool is not None and family in pool.families():
                pick = _pick_new(pool, family, request, records, shareable, now, reserved)
            if pick is not None:
                picks.append(pick)
            elif family in required:
                return Reject(
                    "FamilyUnavailable",
                    f"the owner holds an address in VipPool {pool_name!r}, which has no free "
                    f"{family} address for the second family",
                )
        return finish(pool_name, picks)

    if isinstance(candidates, Reject):
        return candidates
    for pool in candidates:
        if not set(required) <= pool.families():
            continue
        picks = []
        for family in request.families:
            if family not in pool.families():
                continue
            pick = _pick_new(pool, family, request, records, shareable, now, reserved)
            if pick is not None:
                picks.append(pick)
            elif family in required:
                break
        else:
            if picks:
                return finish(pool.name, picks)
    usable = [p for p in candidates if set(required) <= p.families()]
    if candidates and not usable:
        return Reject(
            "FamilyUnavailable",
            f"no VipPool this owner may use has {'/'.join(required)} addresses",
        )
    return _exhausted(usable, required, records)

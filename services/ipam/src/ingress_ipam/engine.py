"""The allocator at work: the pure planner over a cached view of the store, with every write a
compare-and-set. A write that loses means the view was stale: the key is re-read and the owner
planned again, so several replicas (each with its own view) never hand one address to two
owners. Callers serialize work per owner; different owners may be allocated concurrently.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from ingress_events.bus import CasConflict, KeyExists, RevisionMismatch

from .adapters.store import ADDRESS_PREFIX, AllocationStore, OwnerRecord
from .domain.allocator import plan
from .domain.model import AddressRecord, Assign, OwnerKey, Reject, Request
from .domain.pools import Pool

log = logging.getLogger("ingress_ipam.engine")
_ADDRESS_HEAD = ADDRESS_PREFIX + "."


class ConflictStorm(Exception):
    """Compare-and-set kept losing: the handler fails and the message is retried later."""


@dataclass(frozen=True)
class Held:
    pool: str
    addresses: tuple[str, ...]
    writes: int
    """How many KV writes this call made: zero when the owner was already converged."""


@dataclass(frozen=True)
class Released:
    addresses: tuple[str, ...]
    reusable_after: float | None
    writes: int


class Allocator:
    def __init__(
        self,
        store: AllocationStore,
        clock: Callable[[], float],
        cooldown_seconds: float,
        max_attempts: int = 32,
    ) -> None:
        self.store = store
        self._clock = clock
        self._cooldown = cooldown_seconds
        self._max_attempts = max_attempts
        self.records: dict[str, AddressRecord] = {}
        self._revisions: dict[str, int] = {}
        self.owners: dict[OwnerKey, OwnerRecord] = {}
        self._owner_revisions: dict[OwnerKey, int] = {}
        self._by_owner: dict[OwnerKey, set[str]] = defaultdict(set)
        self._by_share: dict[tuple[str, str], set[str]] = defaultdict(set)
        self._reserved: set[str] = set()
        self.conflicts = 0

    # ------------------------------------------------------------------ the cached view

    async def load(self) -> None:
        snapshot = await self.store.load()
        for record, revision in snapshot.addresses.values():
            self._put(record, revision)
        for owner, (orecord, revision) in snapshot.owners.items():
            self.owners[owner] = orecord
            self._owner_revisions[owner] = revision

    def _put(self, record: AddressRecord, revision: int) -> None:
        self._drop(record.address)
        self.records[record.address] = record
        self._revisions[record.address] = revision
        for h in record.holders:
            self._by_owner[h.owner].add(record.address)
            if h.sharing_key is not None:
                self._by_share[(h.namespace, h.sharing_key)].add(record.address)

    def _drop(self, address: str) -> None:
        old = self.records.pop(address, None)
        self._revisions.pop(address, None)
        if old is None:
            return
        for h in old.holders:
            self._by_owner[h.owner].discard(address)
            if not self._by_owner[h.owner]:
                del self._by_owner[h.owner]
            if h.sharing_key is not None:
                self._by_share[(h.namespace, h.sharing_key)].discard(address)

    async def _refresh_address(self, address: str) -> None:
        found = await self.store.get_address(address)
        if found is None:
            self._drop(address)
        else:
            self._put(*found)

    async def _refresh_owner(self, owner: OwnerKey) -> None:
        found = await self.store.get_owner(owner)
        if found is None:
            self.owners.pop(owner, None)
            self._owner_revisions.pop(owner, None)
        else:
            self.owners[owner], self._owner_revisions[owner] = found
        # Another replica may have moved this owner: re-read every address either view names.
        names = set(self._by_owner.get(owner, ())) | set(found[0].addresses if found else ())
        for address in names:
            await self._refresh_address(address)

    def held_by(self, owner: OwnerKey) -> list[AddressRecord]:
        return [self.records[a] for a in sorted(self._by_owner.get(owner, ()))]

    # ------------------------------------------------------------------ allocation

    async def ensure(
        self,
        request: Request,
        pools: Mapping[str, Pool],
        observed_generation: int,
        *,
        confirm: bool = False,
    ) -> Held | Reject:
        """Make the store say the owner holds what the planner decides. With ``confirm``, a call
        that writes nothing still re-reads the owner index, so a decision about to be published
        is never based on a view another replica has overtaken."""
        writes = 0
        confirmed = False
        for _ in range(self._max_attempts):
            indexed = self.owners.get(request.owner)
            request = replace(request, indexed=indexed.addresses if indexed else ())
            shareable = (
                [self.records[a] for a in self._by_share.get((request.namespace, key), ())]
                if (key := request.sharing_key) is not None
                else []
            )
            decision = plan(
                request,
                pools,
                self.records,
                self.held_by(request.owner),
                shareable,
                now=self._clock(),
                reserved=self._reserved,
            )
            if isinstance(decision, Reject):
                return decision
            fresh = [p.address for p in decision.picks if p.mode != "held"]
            self._reserved.update(fresh)
            try:
                current = self.owners.get(request.owner)
                reindex = current is None or (current.addresses, current.pool) != (
                    decision.addresses,
                    decision.pool,
                )
                writes += await self._take(request, decision, verify_held=reindex)
                indexed_now = await self._index(request.owner, decision, observed_generation)
                writes += indexed_now
                if indexed_now:
                    await self._verify(decision)
                old = set(indexed.addresses) if indexed else set()
                for address in decision.release:
                    writes += await self._release_address(
                        address, request.owner, cool=address in old
                    )
            except CasConflict as exc:
                self.conflicts += 1
                log.debug("compare-and-set lost; planning again", extra={"key": str(exc)})
                if not (isinstance(exc, KeyExists) and str(exc).startswith(_ADDRESS_HEAD)):
                    # Only an update or an index write that lost says this owner moved
                    # elsewhere. A create of a fresh address that lost says the address is
                    # taken (almost always by another owner): re-reading it is enough, and a
                    # stale view of this owner still loses at the owner index's own CAS.
                    await self._refresh_owner(request.owner)
                for address in fresh:
                    await self._refresh_address(address)
                continue
            finally:
                self._reserved.difference_update(fresh)
            if writes == 0 and confirm and not confirmed:
                confirmed = True
                revision = self._owner_revisions.get(request.owner)
                found = await self.store.get_owner(request.owner)
                if (found[1] if found else None) != revision:
                    await self._refresh_owner(request.owner)
                    continue
            return Held(decision.pool, decision.addresses, writes)
        raise ConflictStorm(f"gave up on {'/'.join(request.owner)} after repeated CAS conflicts")

    async def _take(self, request: Request, decision: Assign, *, verify_held: bool) -> int:
        """Write the picks. Before the owner index changes, even addresses the view says are
        already ours are rewritten on their revision: a view that missed another replica's
        release must lose here, not leave an index naming an address the owner no longer has."""
        holder = request.holder()
        writes = 0
        for pick in decision.picks:
            current = self.records.get(pick.address)
            if pick.mode == "new":
                record = AddressRecord(pick.address, decision.pool, (holder,))
                self._put(record, await self.store.create_address(record))
            elif pick.mode == "reclaim":
                assert current is not None
                record = AddressRecord(pick.address, decision.pool, (holder,))
                revision = self._revisions[pick.address]
                self._put(record, await self.store.update_address(record, revision))
            else:
                assert current is not None
                others = tuple(h for h in current.holders if h.owner != holder.owner)
                if holder in current.holders and not verify_held:
                    continue  # converged: no write
                record = replace(current, holders=(*others, holder))
                revision = self._revisions[pick.address]
                self._put(record, await self.store.update_address(record, revision))
            writes += 1
        return writes

    async def _verify(self, decision: Assign) -> None:
        """After the owner index changed, check that no replica released one of the addresses
        meanwhile. A release reads the index after releasing the addresses, so either it saw
        (and deletes) this index, or its address write is visible here and the owner is planned
        again: the index never names an address its owner does not hold."""
        for address in decision.addresses:
            if await self.store.get_address_revision(address) != self._revisions.get(address):
                raise RevisionMismatch(address)

    async def _index(self, owner: OwnerKey, decision: Assign, observed_generation: int) -> int:
        current = self.owners.get(owner)
        wanted = OwnerRecord(owner, decision.addresses, decision.pool, observed_generation)
        if current is not None and (current.addresses, current.pool) == (
            wanted.addresses,
            wanted.pool,
        ):
            return 0  # a newer generation alone is not worth a write
        if current is None:
            revision = await self.store.create_owner(wanted)
        else:
            revision = await self.store.update_owner(wanted, self._owner_revisions[owner])
        self.owners[owner] = wanted
        self._owner_revisions[owner] = revision
        return 1

    async def _release_address(self, address: str, owner: OwnerKey, *, cool: bool) -> int:
        """Take ``owner`` off the record. The last holder leaves a cooling record behind when the
        address may have been published (stale DNS caches); one that never was is deleted."""
        current = self.records.get(address)
        if current is None or not current.held_by(owner):
            return 0
        revision = self._revisions[address]
        others = tuple(h for h in current.holders if h.owner != owner)
        if others:
            record = replace(current, holders=others)
            self._put(record, await self.store.update_address(record, revision))
        elif cool and self._cooldown > 0:
            record = AddressRecord(address, current.pool, (), self._clock() + self._cooldown)
            self._put(record, await self.store.update_address(record, revision))
        else:
            await self.store.delete_address(address, revision)
            self._drop(address)
        return 1

    async def release(self, owner: OwnerKey) -> Released:
        """The owner is gone: every address it holds cools down (or goes to its co-holders)."""
        writes = 0
        # The index in the store, not this replica's view: another replica may have allocated.
        await self._refresh_owner(owner)
        released: set[str] = set()
        for _ in range(self._max_attempts):
            addresses = tuple(sorted(self._by_owner.get(owner, ())))
            try:
                for address in addresses:
                    writes += await self._release_address(address, owner, cool=True)
                    released.add(address)
                if owner in self.owners:
                    await self.store.delete_owner(owner, self._owner_revisions[owner])
                    del self.owners[owner]
                    del self._owner_revisions[owner]
                    writes += 1
                # Read the index after the addresses were released. An allocation writes the
                # index and then re-reads its addresses (Allocator._verify): of two such racing
                # sequences at least one sees the other's write, so either that allocation
                # plans again or this release finds its index here and releases it too.
                if await self.store.get_owner(owner) is not None:
                    self.conflicts += 1
                    await self._refresh_owner(owner)
                    continue
            except CasConflict:
                self.conflicts += 1
                await self._refresh_owner(owner)
                continue
            after = [self.records[a].reusable_after for a in released if a in self.records]
            cooling = [t for t in after if t is not None]
            return Released(tuple(sorted(released)), max(cooling) if cooling else None, writes)
        raise ConflictStorm(f"gave up releasing {'/'.join(owner)} after repeated CAS conflicts")

    async def sweep(self) -> int:
        """Delete cooling records whose time has passed: the address becomes absent again and
        the next taker creates it (JetStream's create on a deleted key is still exclusive)."""
        now = self._clock()
        expired = [
            a
            for a, r in self.records.items()
            if r.cooling and r.reusable_after is not None and r.reusable_after <= now
        ]
        deleted = 0
        for address in expired:
            try:
                await self.store.delete_address(address, self._revisions[address])
                self._drop(address)
                deleted += 1
            except CasConflict:
                await self._refresh_address(address)
        return deleted

"""Where allocations live: one KV key per address (the unit of exclusivity) and an owner index.

Layout of the bucket (keys built with ingress_events.keys.encode_key):

* ``addr.<address>``: the address record: its pool, its holders (owner, namespace, ports,
  sharing key) or, once released, when it may be reused. Taking a free address is ``create``,
  which JetStream performs only when the key is absent (or deleted): two replicas that pick the
  same address cannot both win. Sharing, reclaiming and releasing are ``update`` / ``delete``
  on the revision the writer read.
* ``owner.<kind>.<key...>``: what the owner holds, with the generation of the desired event it
  answers; written after the address records, so it never names an address the owner lacks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Protocol

from ingress_events.bus import KeyExists, KvStore, RevisionMismatch
from ingress_events.keys import decode_key, encode_key

from ..domain.model import AddressRecord, Holder, OwnerKey

ADDRESS_PREFIX = "addr"
OWNER_PREFIX = "owner"
_ADDRESS_HEAD = ADDRESS_PREFIX + "."
_OWNER_HEAD = OWNER_PREFIX + "."


@dataclass(frozen=True)
class OwnerRecord:
    owner: OwnerKey
    addresses: tuple[str, ...]
    pool: str
    observed_generation: int


@dataclass
class Snapshot:
    addresses: dict[str, tuple[AddressRecord, int]] = field(default_factory=dict)
    owners: dict[OwnerKey, tuple[OwnerRecord, int]] = field(default_factory=dict)


def address_key(address: str) -> str:
    return encode_key((ADDRESS_PREFIX, address))


def owner_key(owner: OwnerKey) -> str:
    return encode_key((OWNER_PREFIX, *owner))


def encode_address(record: AddressRecord) -> bytes:
    body: dict[str, Any] = {
        "address": record.address,
        "pool": record.pool,
        "holders": [
            {
                "owner": list(h.owner),
                "namespace": h.namespace,
                "ports": sorted([p, proto] for p, proto in h.ports),
                "sharing_key": h.sharing_key,
            }
            for h in record.holders
        ],
        "reusable_after": record.reusable_after,
    }
    return json.dumps(body, separators=(",", ":")).encode()


def decode_address(data: bytes) -> AddressRecord:
    body = json.loads(data)
    return AddressRecord(
        address=body["address"],
        pool=body["pool"],
        holders=tuple(
            Holder(
                owner=tuple(h["owner"]),
                namespace=h["namespace"],
                ports=frozenset((int(p), str(proto)) for p, proto in h["ports"]),
                sharing_key=h["sharing_key"],
            )
            for h in body["holders"]
        ),
        reusable_after=body["reusable_after"],
    )


def encode_owner(record: OwnerRecord) -> bytes:
    body = {
        "owner": list(record.owner),
        "addresses": list(record.addresses),
        "pool": record.pool,
        "observed_generation": record.observed_generation,
    }
    return json.dumps(body, separators=(",", ":")).encode()


def decode_owner(data: bytes) -> OwnerRecord:
    body = json.loads(data)
    return OwnerRecord(
        owner=tuple(body["owner"]),
        addresses=tuple(body["addresses"]),
        pool=body["pool"],
        observed_generation=int(body["observed_generation"]),
    )


class AllocationStore(Protocol):
    """Compare-and-set storage. ``create_*`` raises KeyExists when the key is live; ``update_*``
    and ``delete_*`` raise RevisionMismatch when somebody wrote since ``revision``."""

    async def load(self) -> Snapshot: ...

    async def get_address(self, address: str) -> tuple[AddressRecord, int] | None: ...

    async def get_address_revision(self, address: str) -> int | None:
        """The address key's current revision (None when absent), without decoding it."""
        ...

    async def create_address(self, record: AddressRecord) -> int: ...

    async def update_address(self, record: AddressRecord, revision: int) -> int: ...

    async def delete_address(self, address: str, revision: int) -> None: ...

    async def get_owner(self, owner: OwnerKey) -> tuple[OwnerRecord, int] | None: ...

    async def create_owner(self, record: OwnerRecord) -> int: ...

    async def update_owner(self, record: OwnerRecord, revision: int) -> int: ...

    async def delete_owner(self, owner: OwnerKey, revision: int) -> None: ...


class NatsAllocationStore:
    """The allocation store in a JetStream KV bucket (history 1: only the current value)."""

    def __init__(self, kv: KvStore) -> None:
        self._kv = kv

    async def load(self) -> Snapshot:
        # The values name their address or owner: decoding 20,000 keys as well would cost a
        # third of the rebuild.
        snapshot = Snapshot()
        for entry in await self._kv.entries():
            if entry.key.startswith(_ADDRESS_HEAD):
                record = decode_address(entry.value)
                snapshot.addresses[record.address] = (record, entry.revision)
            elif entry.key.startswith(_OWNER_HEAD):
                owner = decode_owner(entry.value)
                snapshot.owners[owner.owner] = (owner, entry.revision)
        return snapshot

    async def get_address(self, address: str) -> tuple[AddressRecord, int] | None:
        entry = await self._kv.get(address_key(address))
        return None if entry is None else (decode_address(entry.value), entry.revision)

    async def get_address_revision(self, address: str) -> int | None:
        entry = await self._kv.get(address_key(address))
        return None if entry is None else entry.revision

    async def create_address(self, record: AddressRecord) -> int:
        return await self._kv.create(address_key(record.address), encode_address(record))

    async def update_address(self, record: AddressRecord, revision: int) -> int:
        return await self._kv.update(address_key(record.address), encode_address(record), revision)

    async def delete_address(self, address: str, revision: int) -> None:
        await self._kv.delete(address_key(address), revision)

    async def get_owner(self, owner: OwnerKey) -> tuple[OwnerRecord, int] | None:
        entry = await self._kv.get(owner_key(owner))
        return None if entry is None else (decode_owner(entry.value), entry.revision)

    async def create_owner(self, record: OwnerRecord) -> int:
        return await self._kv.create(owner_key(record.owner), encode_owner(record))

    async def update_owner(self, record: OwnerRecord, revision: int) -> int:
        return await self._kv.update(owner_key(record.owner), encode_owner(record), revision)

    async def delete_owner(self, owner: OwnerKey, revision: int) -> None:
        await self._kv.delete(owner_key(owner), revision)


class InMemoryAllocationStore:
    """The same compare-and-set semantics in a dict, with one revision counter for the bucket
    as JetStream has (the stream sequence)."""

    def __init__(self) -> None:
        self._data: dict[str, tuple[bytes, int]] = {}
        self._sequence = 0
        self.writes = 0

    def _write(self, key: str, value: bytes) -> int:
        self._sequence += 1
        self.writes += 1
        self._data[key] = (value, self._sequence)
        return self._sequence

    def _create(self, key: str, value: bytes) -> int:
        if key in self._data:
            raise KeyExists(key)
        return self._write(key, value)

    def _update(self, key: str, value: bytes, revision: int) -> int:
        if key not in self._data or self._data[key][1] != revision:
            raise RevisionMismatch(key)
        return self._write(key, value)

    def _delete(self, key: str, revision: int) -> None:
        if key not in self._data or self._data[key][1] != revision:
            raise RevisionMismatch(key)
        self._sequence += 1
        self.writes += 1
        del self._data[key]

    async def load(self) -> Snapshot:
        snapshot = Snapshot()
        for key, (value, revision) in self._data.items():
            parts = decode_key(key)
            if parts[0] == ADDRESS_PREFIX:
                snapshot.addresses[parts[1]] = (decode_address(value), revision)
            else:
                snapshot.owners[parts[1:]] = (decode_owner(value), revision)
        return snapshot

    async def get_address(self, address: str) -> tuple[AddressRecord, int] | None:
        found = self._data.get(address_key(address))
        return None if found is None else (decode_address(found[0]), found[1])

    async def get_address_revision(self, address: str) -> int | None:
        found = self._data.get(address_key(address))
        return None if found is None else found[1]

    async def create_address(self, record: AddressRecord) -> int:
        return self._create(address_key(record.address), encode_address(record))

    async def update_address(self, record: AddressRecord, revision: int) -> int:
        return self._update(address_key(record.address), encode_address(record), revision)

    async def delete_address(self, address: str, revision: int) -> None:
        self._delete(address_key(address), revision)

    async def get_owner(self, owner: OwnerKey) -> tuple[OwnerRecord, int] | None:
        found = self._data.get(owner_key(owner))
        return None if found is None else (decode_owner(found[0]), found[1])

    async def create_owner(self, record: OwnerRecord) -> int:
        return self._create(owner_key(record.owner), encode_owner(record))

    async def update_owner(self, record: OwnerRecord, revision: int) -> int:
        return self._update(owner_key(record.owner), encode_owner(record), revision)

    async def delete_owner(self, owner: OwnerKey, revision: int) -> None:
        self._delete(owner_key(owner), revision)

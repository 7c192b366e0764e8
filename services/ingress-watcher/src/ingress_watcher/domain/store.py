"""The watcher's view of the cluster: every object it watches, by kind and (namespace, name)."""

from __future__ import annotations

from collections.abc import Iterable

from .objects import KINDS, Obj, ObjKey, key_of


class ObjectStore:
    def __init__(self) -> None:
        self.objects: dict[str, dict[ObjKey, Obj]] = {kind: {} for kind in KINDS}

    def upsert(self, kind: str, obj: Obj) -> None:
        self.objects.setdefault(kind, {})[key_of(obj, kind)] = obj

    def delete(self, kind: str, key: ObjKey) -> bool:
        return self.objects.setdefault(kind, {}).pop(key, None) is not None

    def replace(self, kind: str, items: Iterable[Obj]) -> list[ObjKey]:
        """Install a complete list of one kind; returns the keys that vanished (the deletes a
        relist synthesizes for objects whose DELETED event was missed)."""
        fresh = {key_of(obj, kind): obj for obj in items}
        gone = [k for k in self.objects.get(kind, {}) if k not in fresh]
        self.objects[kind] = fresh
        return gone

    def count(self) -> int:
        return sum(len(v) for v in self.objects.values())

"""The watcher's view of the cluster: every object it watches, by kind and (namespace, name).

It also remembers what changed since :meth:`take_changes` was last called, so that a reconcile
after EndpointSlice events only (the common churn) can recompute just the backends of the
Services those slices belong to."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from .objects import KINDS, Obj, ObjKey, key_of, labels_of, stored

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
STATUS_KINDS = frozenset({"Ingress", "Service"})
"""The kinds that carry status: a change of one of them needs its own status recomputed."""
EVERY_STATUS_KINDS = frozenset({"IngressClass"})
"""A change of one of these may change which objects are ours: every status is recomputed."""


@dataclass
class Changes:
    kinds: set[str] = field(default_factory=set)
    """Kinds with a single-object change (watch event)."""
    wholesale: bool = False
    """A complete list replaced a kind (a sync or relist): anything may have changed."""
    slice_services: set[tuple[str, str]] = field(default_factory=set)
    """(namespace, Service name) of every changed EndpointSlice, before and after the change."""
    ingresses: set[ObjKey] = field(default_factory=set)
    """Every Ingress created, changed or deleted."""

    @property
    def endpoint_slices_only(self) -> bool:
        return not self.wholesale and self.kinds == {"EndpointSlice"}

    @property
    def ingresses_only(self) -> bool:
        return not self.wholesale and self.kinds == {"Ingress"}


def _slice_service(kind: str, obj: Obj | None) -> tuple[str, str] | None:
    if kind != "EndpointSlice" or obj is None:
        return None
    name = labels_of(obj).get(SERVICE_NAME_LABEL)
    return (key_of(obj, kind)[0], name) if isinstance(name, str) else None


class ObjectStore:
    """Objects are kept in their :func:`~.objects.stored` form."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[ObjKey, Obj]] = {kind: {} for kind in KINDS}
        self.slices: dict[tuple[str, str], dict[ObjKey, Obj]] = {}
        """EndpointSlices by (namespace, Service name) of their service-name label."""
        self._changes = Changes()
        self._status_touched: set[tuple[str, ObjKey]] = set()
        self._status_everything = True

    def _index(self, kind: str, key: ObjKey, old: Obj | None, new: Obj | None) -> None:
        if kind != "EndpointSlice":
            return
        before, after = _slice_service(kind, old), _slice_service(kind, new)
        if before is not None:
            bucket = self.slices.get(before, {})
            bucket.pop(key, None)
            if not bucket:
                self.slices.pop(before, None)
        if after is not None and new is not None:
            self.slices.setdefault(after, {})[key] = new

    def _changed(self, kind: str, *objs: Obj | None) -> None:
        self._changes.kinds.add(kind)
        if kind in STATUS_KINDS:
            self._status_touched.update((kind, key_of(o, kind)) for o in objs if o is not None)
        elif kind in EVERY_STATUS_KINDS:
            self._status_everything = True
        if kind == "Ingress":
            self._changes.ingresses.update(key_of(o, kind) for o in objs if o is not None)
        for obj in objs:
            service = _slice_service(kind, obj)
            if service is not None:
                self._changes.slice_services.add(service)

    def upsert(self, kind: str, obj: Obj) -> None:
        obj = stored(kind, obj)
        key = key_of(obj, kind)
        bucket = self.objects.setdefault(kind, {})
        old = bucket.get(key)
        self._changed(kind, old, obj)
        self._index(kind, key, old, obj)
        bucket[key] = obj

    def delete(self, kind: str, key: ObjKey) -> bool:
        old = self.objects.setdefault(kind, {}).pop(key, None)
        self._changed(kind, old)
        self._index(kind, key, old, None)
        return old is not None

    def replace(self, kind: str, items: Iterable[Obj]) -> list[ObjKey]:
        """Install a complete list of one kind; returns the keys that vanished (the deletes a
        relist synthesizes for objects whose DELETED event was missed)."""
        fresh = {key_of(obj, kind): stored(kind, obj) for obj in items}
        gone = [k for k in self.objects.get(kind, {}) if k not in fresh]
        self.objects[kind] = fresh
        self._changes.wholesale = True
        if kind in STATUS_KINDS or kind in EVERY_STATUS_KINDS:
            self._status_everything = True
        if kind == "EndpointSlice":
            self.slices = {}
            for key, obj in fresh.items():
                self._index(kind, key, None, obj)
        return gone

    def take_changes(self) -> Changes:
        """What changed since the last call (and forget it)."""
        changes, self._changes = self._changes, Changes()
        return changes

    def take_status_changes(self) -> tuple[bool, set[tuple[str, ObjKey]]]:
        """(everything, the (kind, key) of every Ingress and Service changed) since the last
        call: what the status writer must recompute. Separate from :meth:`take_changes`, as the
        leader's status rounds and the reconciles run at their own pace."""
        everything, touched = self._status_everything, self._status_touched
        self._status_everything, self._status_touched = False, set()
        return everything, touched

    def count(self) -> int:
        return sum(len(v) for v in self.objects.values())

"""Plain views of Kubernetes objects, as the API serves them (JSON dicts), and their identity.

The watcher keeps objects as the dicts the API (or a YAML manifest) gave it: typed client models
cost time and memory at 10,000 Ingresses and would hide fields we must validate ourselves.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

Obj = Mapping[str, Any]
ObjKey = tuple[str, str]
"""(namespace, name); namespace is ``-`` for cluster-scoped kinds."""
Objects = Mapping[str, Mapping[ObjKey, Obj]]
"""kind -> (namespace, name) -> object."""

CLUSTER = "-"
SUMMARY = "ingressDomainSummary"
"""Where a Secret's hash replaces its data: the material never enters the watcher's state."""

KINDS = (
    "Ingress",
    "IngressClass",
    "Service",
    "EndpointSlice",
    "Secret",
    "Zone",
    "Domain",
    "PathClaim",
    "VipPool",
    "BgpPeer",
)
CLUSTER_SCOPED = frozenset({"IngressClass", "Zone", "VipPool", "BgpPeer"})
# A creationTimestamp that sorts after every real one: an object without one is the youngest.
_NO_TIMESTAMP = "9999-12-31T23:59:59Z"


def meta(obj: Obj) -> Mapping[str, Any]:
    value = obj.get("metadata")
    return value if isinstance(value, Mapping) else {}


def spec(obj: Obj) -> Mapping[str, Any]:
    value = obj.get("spec")
    return value if isinstance(value, Mapping) else {}


def name_of(obj: Obj) -> str:
    return str(meta(obj).get("name") or "")


def namespace_of(obj: Obj) -> str:
    return str(meta(obj).get("namespace") or CLUSTER)


def key_of(obj: Obj, kind: str) -> ObjKey:
    if kind in CLUSTER_SCOPED:
        return (CLUSTER, name_of(obj))
    return (str(meta(obj).get("namespace") or "default"), name_of(obj))


def annotations_of(obj: Obj) -> dict[str, str]:
    raw = meta(obj).get("annotations")
    return dict(raw) if isinstance(raw, Mapping) else {}


def labels_of(obj: Obj) -> Mapping[str, Any]:
    raw = meta(obj).get("labels")
    return raw if isinstance(raw, Mapping) else {}


@dataclass(frozen=True, order=True)
class Age:
    """Orders claims: the oldest creationTimestamp wins, then namespace/name."""

    created: str
    namespace: str
    name: str

    @classmethod
    def of(cls, obj: Obj) -> Age:
        created = meta(obj).get("creationTimestamp")
        return cls(str(created) if created else _NO_TIMESTAMP, namespace_of(obj), name_of(obj))


def object_generation(obj: Obj) -> int:
    value = meta(obj).get("generation")
    return value if isinstance(value, int) and value >= 0 else 0


def summarize_secret(obj: Obj) -> dict[str, Any]:
    """A Secret without its data: metadata, type, and the sha256 of tls.crt + tls.key (or why
    there is none). Sources call this before the object enters the watcher's state."""
    data = obj.get("data") if isinstance(obj.get("data"), Mapping) else {}
    string_data = obj.get("stringData") if isinstance(obj.get("stringData"), Mapping) else {}
    assert isinstance(data, Mapping) and isinstance(string_data, Mapping)
    material: list[bytes] = []
    problem: str | None = None
    for item in ("tls.crt", "tls.key"):
        if isinstance(string_data.get(item), str):
            material.append(string_data[item].encode())
        elif isinstance(data.get(item), str):
            try:
                material.append(base64.b64decode(data[item], validate=True))
            except (binascii.Error, ValueError):
                problem = f"{item} is not valid base64"
        else:
            problem = f"the Secret has no {item}"
    secret_type = str(obj.get("type") or "Opaque")
    if problem is None and secret_type != "kubernetes.io/tls":
        problem = f"the Secret is of type {secret_type}, not kubernetes.io/tls"
    if problem is None and not all(material):
        problem = "tls.crt or tls.key is empty"
    key_hashes: dict[str, str] = {}
    for item, value in data.items():
        with contextlib.suppress(binascii.Error, ValueError, TypeError):
            key_hashes[str(item)] = hashlib.sha256(
                base64.b64decode(value, validate=True)
            ).hexdigest()
    for item, value in string_data.items():
        if isinstance(value, str):
            key_hashes[str(item)] = hashlib.sha256(value.encode()).hexdigest()
    summary: dict[str, Any] = {
        "type": secret_type,
        "problem": problem,
        "hash": None,
        # Per-key hashes (a BGP password's, for one) let consumers notice a rotation.
        "keyHashes": key_hashes,
    }
    if problem is None:
        summary["hash"] = hashlib.sha256(b"".join(material)).hexdigest()
    keep = {k: v for k, v in meta(obj).items() if k not in ("managedFields",)}
    annotations = keep.get("annotations")
    if isinstance(annotations, Mapping):
        # kubectl's last-applied annotation is a full copy of the Secret, data included.
        keep["annotations"] = {
            k: v
            for k, v in annotations.items()
            if k != "kubectl.kubernetes.io/last-applied-configuration"
        }
    return {"apiVersion": "v1", "kind": "Secret", "metadata": keep, SUMMARY: summary}


# --------------------------------------------------------------------------- stored form


class SliceEndpoint(NamedTuple):
    """One endpoint of an EndpointSlice, as the watcher keeps it: the fields normalize reads,
    with the API's defaults applied. Endpoints are the bulk of the watcher's state (100,000 at
    10,000 Services): ~1.1 KB each as the API's JSON dicts, ~0.45 KB as this tuple with
    the repeated strings shared. Values are kept as given (an address that is not an IP is
    dropped by the event's validation, as before)."""

    addresses: tuple[Any, ...]
    ready: bool
    serving: bool
    terminating: bool
    node: Any
    zone: Any
    target: tuple[str, str, str] | None
    """(kind, namespace, name) of the targetRef, if it names something."""


def _shared(value: Any) -> Any:
    # Node names, zones, kinds and namespaces repeat across thousands of endpoints.
    return sys.intern(value) if isinstance(value, str) else value


def _slice_endpoint(item: Mapping[str, Any], namespace: str) -> SliceEndpoint:
    raw_conditions = item.get("conditions")
    conditions: Mapping[str, Any] = raw_conditions if isinstance(raw_conditions, Mapping) else {}
    # EndpointSlice API: an unknown (nil) ready or serving condition means ready.
    ready = conditions.get("ready") is not False
    serving = conditions.get("serving", ready) is not False
    terminating = conditions.get("terminating") is True
    ref = item.get("targetRef")
    target = None
    if isinstance(ref, Mapping) and ref.get("name"):
        target = (
            _shared(str(ref.get("kind") or "Pod")),
            _shared(str(ref.get("namespace") or namespace)),
            str(ref.get("name")),
        )
    addresses = item.get("addresses")
    return SliceEndpoint(
        addresses=tuple(addresses) if isinstance(addresses, list | tuple) else (),
        ready=ready,
        serving=serving,
        terminating=terminating,
        node=_shared(item.get("nodeName")),
        zone=_shared(item.get("zone")),
        target=target,
    )


def slice_endpoints(obj: Obj) -> tuple[SliceEndpoint, ...]:
    """The endpoints of an EndpointSlice, stored (see :func:`stored`) or as the API gave it."""
    endpoints = obj.get("endpoints")
    if isinstance(endpoints, tuple):
        return endpoints
    namespace = namespace_of(obj)
    return tuple(
        _slice_endpoint(item, namespace) for item in endpoints or [] if isinstance(item, Mapping)
    )


def stored(kind: str, obj: Obj) -> Obj:
    """The form the watcher keeps an object in: without managedFields (the server's record of
    who set which field, often larger than the object, read by nothing here), and an
    EndpointSlice's endpoints as :class:`SliceEndpoint` tuples. Idempotent, and the object
    itself when it is in that form already (sources compare what they hold with what they
    read: a copy of every object at every poll would be a change of every object)."""
    metadata = obj.get("metadata")
    strip = isinstance(metadata, Mapping) and "managedFields" in metadata
    compact = kind == "EndpointSlice" and not isinstance(obj.get("endpoints"), tuple)
    if not strip and not compact:
        return obj
    slim: dict[str, Any] = dict(obj)
    if strip and isinstance(metadata, Mapping):
        slim["metadata"] = {k: v for k, v in metadata.items() if k != "managedFields"}
    if compact:
        slim["endpoints"] = slice_endpoints(obj)
    return slim

"""File mode: the snapshot rendered as Envoy's path-based xDS files, and as Kubernetes objects
(one ConfigMap per Ingress domain). Pure: the same snapshot gives byte-identical files, so an
unchanged file is never rewritten and Envoy never reloads it for nothing.

Each file is a ``DiscoveryResponse`` in JSON (``version_info`` = the content digest). The snapshot
must have been built with ``BuildOptions(files=layout)`` so that listeners and clusters point at
these paths instead of ADS. See :mod:`.layout` for the groups.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from google.protobuf import json_format  # type: ignore[import-untyped, unused-ignore]

from .layout import (
    CDS_FILE,
    CORE,
    DOMAINS,
    ENDPOINTS,
    HTTP_RDS_FILE,
    LDS_FILE,
    SECRETS,
    FileLayout,
)
from .resources import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET, Resource, Snapshot

WRITE_ORDER = (
    ENDPOINTS,
    f"{CORE}/{CDS_FILE}",
    SECRETS,
    DOMAINS,
    f"{CORE}/{HTTP_RDS_FILE}",
    f"{CORE}/{LDS_FILE}",
)
"""Make before break, as over ADS: endpoints before the clusters that read them, clusters and
secrets before the routes and listeners that use them. Files that disappear are removed only
after everything else is written."""


JsonCache = dict[tuple[str, str], dict[str, Any]]
"""(type, digest) -> the resource as JSON: a resource is converted once, not on every render."""


def _response(type_url: str, resources: list[Resource], cache: JsonCache) -> bytes:
    version = hashlib.sha256("".join(r.digest for r in resources).encode()).hexdigest()[:16]
    items = []
    for r in resources:
        item = cache.get((type_url, r.digest))
        if item is None:
            item = {
                "@type": type_url,
                **json_format.MessageToDict(r.message, preserving_proto_field_name=True),
            }
            cache[(type_url, r.digest)] = item
        items.append(item)
    body: dict[str, Any] = {"version_info": version, "type_url": type_url, "resources": items}
    return (json.dumps(body, indent=1, sort_keys=True) + "\n").encode()


def render_files(
    snapshot: Snapshot, layout: FileLayout, cache: JsonCache | None = None
) -> dict[str, bytes]:
    """Relative path (``<group>/<file>``) -> content, for every resource of ``snapshot``.
    ``cache`` (optional, kept by the caller across renders) ends up holding exactly the
    snapshot's resources."""
    files: dict[str, bytes] = {}
    previous = cache if cache is not None else {}
    used: JsonCache = {}

    def put(where: tuple[str, str], type_url: str, resources: list[Resource]) -> None:
        for r in resources:
            key = (type_url, r.digest)
            if key in previous:
                used[key] = previous[key]
        files[f"{where[0]}/{where[1]}"] = _response(type_url, resources, used)

    for type_url, file in ((LISTENER, LDS_FILE), (CLUSTER, CDS_FILE)):
        members = snapshot.resources.get(type_url, {})
        put((CORE, file), type_url, [members[n] for n in sorted(members)])
    for name, resource in snapshot.resources.get(ROUTE, {}).items():
        put(layout.route(name), ROUTE, [resource])
    for name, resource in snapshot.resources.get(ENDPOINT, {}).items():
        put(layout.endpoints(name), ENDPOINT, [resource])
    for name, resource in snapshot.resources.get(SECRET, {}).items():
        put(layout.secret(name), SECRET, [resource])
    if cache is not None:
        cache.clear()
        cache.update(used)
    return dict(sorted(files.items()))


def write_rank(path: str) -> int:
    """Position of ``path`` in :data:`WRITE_ORDER`."""
    for rank, prefix in enumerate(WRITE_ORDER):
        if path == prefix or path.startswith(prefix + "/"):
            return rank
    return len(WRITE_ORDER)


def _object_name(group: str) -> str:
    if group.startswith(DOMAINS + "/"):
        host = group.removeprefix(DOMAINS + "/")
        # Hosts can be longer than a ConfigMap name allows and hold '_': name by digest, label
        # by host.
        return f"l7-domain-{hashlib.sha256(host.encode()).hexdigest()[:16]}"
    return f"l7-{group}"


def kubernetes_objects(
    files: Mapping[str, bytes], namespace: str, labels: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """The file set as Kubernetes objects: a ConfigMap per group (``l7-core``,
    ``l7-endpoints``, ``l7-domain-<digest>`` for each Ingress domain), and a Secret
    ``l7-secrets`` for key material. Each is mounted at ``<root>/<group>``; the kubelet's
    atomic ``..data`` swap is the move Envoy's ``watched_directory`` reacts to."""
    groups: dict[str, dict[str, str]] = {}
    for path, content in files.items():
        group, _, name = path.rpartition("/")
        groups.setdefault(group, {})[name] = content.decode()
    objects: list[dict[str, Any]] = []
    for group in sorted(groups, key=lambda g: (write_rank(g), g)):
        meta: dict[str, Any] = {
            "name": _object_name(group),
            "namespace": namespace,
            "labels": {
                "app.kubernetes.io/part-of": "ingress-domain",
                "ingress-domain.io/l7-files": group.partition("/")[0],
                **(labels or {}),
            },
            "annotations": {"ingress-domain.io/mount-path": group},
        }
        if group.startswith(DOMAINS + "/"):
            meta["annotations"]["ingress-domain.io/host"] = group.removeprefix(
                DOMAINS + "/"
            ).replace("_", "*")
        if group == SECRETS:
            objects.append(
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": meta,
                    "type": "Opaque",
                    "stringData": dict(sorted(groups[group].items())),
                }
            )
        else:
            objects.append(
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": meta,
                    "data": dict(sorted(groups[group].items())),
                }
            )
    return objects

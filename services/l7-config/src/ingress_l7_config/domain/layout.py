"""Where each resource lives in file mode (Envoy's path-based xDS). Pure naming, no I/O.

The file set is split into groups, each a directory (one ConfigMap, or a Secret for key
material, in Kubernetes):

* ``core/``: ``lds.json``, ``cds.json`` and ``rds-http.json``. Envoy takes exactly one LDS and
  one CDS path, and the plain-HTTP listener has a single route table (HTTP has no SNI to split
  on), so these are shared.
* ``domains/<host>/``: one per Ingress domain, ``rds-https.json`` (its HTTPS route table).
  ``*`` of a wildcard host is written ``_`` (never part of a canonical hostname).
* ``endpoints/``: one ``<namespace>_<service>_<port>[_at_<host>].json`` per cluster, so an
  endpoint change rewrites one small file (the endpoint-only fast path of file mode).
* ``secrets/``: one ``<namespace>_<name>.json`` per TLS Secret (key material: a Kubernetes
  Secret, never a ConfigMap).

Every name maps to a ConfigMap-safe key (``[-._a-zA-Z0-9]``), and different resource names never
share a file: namespaces, Service names and hosts contain no ``_``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

CORE = "core"
ENDPOINTS = "endpoints"
SECRETS = "secrets"
DOMAINS = "domains"
LDS_FILE = "lds.json"
CDS_FILE = "cds.json"
HTTP_RDS_FILE = "rds-http.json"
HTTPS_RDS_FILE = "rds-https.json"


def host_dir(host: str) -> str:
    return host.replace("*", "_")


def cluster_file(cluster: str) -> str:
    base, _, host = cluster.partition("@")
    slug = base.replace("/", "_")
    return f"{slug}_at_{host_dir(host)}.json" if host else f"{slug}.json"


def secret_file(secret: str) -> str:
    return secret.replace("/", "_") + ".json"


@dataclass(frozen=True)
class FileLayout:
    """The file set's root as Envoy sees it (a mount point in Kubernetes)."""

    root: str

    def group_dir(self, group: str) -> str:
        return f"{self.root.rstrip('/')}/{group}"

    def route(self, name: str) -> tuple[str, str]:
        """(group, file) of a route configuration: ``http`` or ``https/<host>``."""
        if name.startswith("https/"):
            return f"{DOMAINS}/{host_dir(name.removeprefix('https/'))}", HTTPS_RDS_FILE
        return CORE, HTTP_RDS_FILE

    def endpoints(self, cluster: str) -> tuple[str, str]:
        return ENDPOINTS, cluster_file(cluster)

    def secret(self, name: str) -> tuple[str, str]:
        return SECRETS, secret_file(name)

    def path(self, where: tuple[str, str]) -> str:
        return f"{self.group_dir(where[0])}/{where[1]}"

    def dynamic_resources(self) -> dict[str, Any]:
        """The ``dynamic_resources`` of an Envoy bootstrap reading this file set."""
        core = self.group_dir(CORE)

        def source(file: str) -> dict[str, Any]:
            return {
                "path_config_source": {
                    "path": f"{core}/{file}",
                    "watched_directory": {"path": core},
                },
                "resource_api_version": "V3",
            }

        return {"lds_config": source(LDS_FILE), "cds_config": source(CDS_FILE)}

"""The watcher's manifest directory for the local topology: examples/ mirrored, adapted.

examples/ stays the one place a user edits. Every second its ``*.yaml`` files and ``secrets/``
are mirrored into an overlay directory that ingress-watcher reads, with two rewrites that make
the manifests fit the namespaces of this run:

* every VipPool gets the topology's VIP range (the examples' pool lies on loopback, which no
  ToR can route to); the pool's name, announcement settings and the rest stay as written;
* every BgpPeer points at the ToR's address on the L4 link (ASNs, password, timers kept).

One file of our own is added: the L7 pool, i.e. the Envoy this run started, as the Service
``ingress-domain/envoy`` with an EndpointSlice on the root side of the L4 link; l4-programmer
DNATs the VIPs' ports 80/443 to it.
"""

from __future__ import annotations

import contextlib
import filecmp
import os
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .addresses import AddressPlan

OWN_FILE = "zz-ingress-local-topology.yaml"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
L7_POOL_NAMESPACE = "ingress-domain"
L7_POOL_SERVICE = "envoy"
L7_POOL_NO_VIP = "ingress-local-l7-pool-has-no-vip"
"""The pool named by the L7 pool Service: no such VipPool exists, so it never gets a VIP."""


@dataclass(frozen=True)
class L7Pool:
    address: str
    http_port: int
    https_port: int


# libyaml's safe loader when available: the examples directory may hold 10,000 Ingresses.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _docs(text: str) -> list[Any]:
    return [d for d in yaml.load_all(text, Loader=_LOADER) if d is not None]


def adapt(doc: Any, plan: AddressPlan) -> Any:
    """One manifest document as the topology needs it (pure; unknown shapes pass through)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("spec"), dict):
        return doc
    kind = doc.get("kind")
    if kind == "VipPool":
        spec = {k: v for k, v in doc["spec"].items() if k not in ("cidrs", "ranges", "exclude")}
        spec["cidrs"] = [str(plan.vip_pool)]
        spec["exclude"] = [plan.vip_exclude]
        return {**doc, "spec": spec}
    if kind == "BgpPeer":
        return {**doc, "spec": {**doc["spec"], "address": plan.tor_up_addr}}
    return doc


def adapt_text(text: str, plan: AddressPlan) -> str:
    docs = _docs(text)
    return yaml.safe_dump_all([adapt(d, plan) for d in docs], sort_keys=False)


def l7_pool_manifests(pool: L7Pool) -> str:
    """The Envoy this run started, as the L7 pool Service and its EndpointSlice.

    The Service is of type LoadBalancer only because ingress-watcher publishes
    ``backend.endpoints`` for Services that an Ingress or a LoadBalancer Service references;
    it names a pool that does not exist, so ipam gives it no VIP (vip.rejected PoolNotFound).
    """
    meta = {"name": L7_POOL_SERVICE, "namespace": L7_POOL_NAMESPACE}
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {**meta, "annotations": {"ingress-domain.io/pool": L7_POOL_NO_VIP}},
        "spec": {
            "type": "LoadBalancer",
            "ports": [
                {"name": "http", "port": 80, "targetPort": pool.http_port, "protocol": "TCP"},
                {"name": "https", "port": 443, "targetPort": pool.https_port, "protocol": "TCP"},
            ],
        },
    }
    endpoint_slice = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{L7_POOL_SERVICE}-local",
            "namespace": L7_POOL_NAMESPACE,
            "labels": {SERVICE_NAME_LABEL: L7_POOL_SERVICE},
        },
        "addressType": "IPv4",
        "ports": [
            {"name": "http", "port": pool.http_port, "protocol": "TCP"},
            {"name": "https", "port": pool.https_port, "protocol": "TCP"},
        ],
        "endpoints": [{"addresses": [pool.address], "conditions": {"ready": True}}],
    }
    header = "# Written by ingress-local: the Envoy of this run (the L7 pool). Do not edit.\n"
    return header + yaml.safe_dump_all([service, endpoint_slice], sort_keys=False)


def _write_if_changed(path: Path, text: str) -> bool:
    if path.exists() and path.read_text() == text:
        return False
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return True


def _sync_tree(source: Path, target: Path) -> bool:
    """Mirror ``source`` (files only) into ``target``; True when anything changed."""
    changed = False
    if not source.is_dir():
        if target.exists():
            shutil.rmtree(target)
            return True
        return False
    wanted = {p.relative_to(source) for p in source.rglob("*") if p.is_file()}
    for rel in sorted(wanted):
        src, dst = source / rel, target / rel
        if dst.is_file() and filecmp.cmp(src, dst, shallow=False):
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        changed = True
    if target.is_dir():
        for path in sorted(target.rglob("*"), reverse=True):
            if path.is_file() and path.relative_to(target) not in wanted:
                path.unlink()
                changed = True
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()
    return changed


class Overlay:
    def __init__(self, source: Path, target: Path, plan: AddressPlan, pool: L7Pool) -> None:
        self.source = source
        self.target = target
        self.plan = plan
        self.pool = pool
        self.errors: dict[str, str] = {}
        self._source_docs: dict[str, list[Any]] = {}
        self._source_stamps: dict[str, tuple[int, int]] = {}
        self._adapted: dict[str, tuple[tuple[int, int], str, str]] = {}
        """Source file -> (its stamp, the adapted text, its parse error) of the last pass."""

    @property
    def secrets_dir(self) -> Path:
        return self.target / "secrets"

    def sync(self) -> bool:
        """One mirroring pass; True when the overlay changed. A file that does not parse is
        copied as it is (the watcher keeps its last good content and logs why)."""
        self.target.mkdir(parents=True, exist_ok=True)
        changed = _write_if_changed(self.target / OWN_FILE, l7_pool_manifests(self.pool))
        wanted = {OWN_FILE}
        sources = sorted(self.source.glob("*.yaml")) if self.source.is_dir() else []
        self.errors.clear()
        for src in sources:
            if src.name == OWN_FILE:
                continue
            wanted.add(src.name)
            try:
                stat = src.stat()
                stamp = (stat.st_mtime_ns, stat.st_size)
                cached = self._adapted.get(src.name)
                if cached is not None and cached[0] == stamp and (self.target / src.name).exists():
                    if cached[2]:
                        self.errors[src.name] = cached[2]
                    continue  # unchanged since its last pass (parsing is the expensive part)
                text = src.read_text()
            except OSError:
                continue  # vanished between glob and read: the next pass removes it
            error = ""
            try:
                out = adapt_text(text, self.plan)
            except yaml.YAMLError as exc:
                error = self.errors[src.name] = str(exc).splitlines()[0]
                out = text
            self._adapted[src.name] = (stamp, out, error)
            changed |= _write_if_changed(self.target / src.name, out)
        for name in set(self._adapted) - wanted:
            del self._adapted[name]
        for path in self.target.glob("*.yaml"):
            if path.name not in wanted:
                path.unlink()
                changed = True
        changed |= _sync_tree(self.source / "secrets", self.secrets_dir)
        return changed

    def source_documents(self) -> Iterator[Mapping[str, Any]]:
        """The documents of the source directory as they are now (what the overlay will hold
        after the next ``sync``); a file that does not parse keeps its last good documents,
        as the watcher does."""
        sources = sorted(self.source.glob("*.yaml")) if self.source.is_dir() else []
        seen = set()
        for src in sources:
            if src.name == OWN_FILE:
                continue
            seen.add(src.name)
            with contextlib.suppress(yaml.YAMLError, OSError):
                stat = src.stat()
                stamp = (stat.st_mtime_ns, stat.st_size)
                # Parsed again only when it changed: this runs every sync interval, and a file
                # of 10,000 Ingresses takes a second to parse.
                if self._source_stamps.get(src.name) != stamp:
                    self._source_docs[src.name] = _docs(src.read_text())
                    self._source_stamps[src.name] = stamp
            for doc in self._source_docs.get(src.name, []):
                if isinstance(doc, Mapping):
                    yield doc
        for gone in set(self._source_docs) - seen:
            del self._source_docs[gone]
            self._source_stamps.pop(gone, None)

    def documents(self) -> Iterator[Mapping[str, Any]]:
        for path in sorted(self.target.glob("*.yaml")):
            with contextlib.suppress(yaml.YAMLError, OSError):
                for doc in _docs(path.read_text()):
                    if isinstance(doc, Mapping):
                        yield doc


@dataclass(frozen=True)
class BackendAddress:
    service: str
    """namespace/name of the Service the EndpointSlice belongs to."""
    address: str
    port: int


def backend_addresses(docs: Iterator[Mapping[str, Any]]) -> set[BackendAddress]:
    """Every loopback address:port the EndpointSlices point at (the backends this machine
    runs as echo servers); other addresses are not ours to bind."""
    out: set[BackendAddress] = set()
    for doc in docs:
        if doc.get("kind") != "EndpointSlice" or doc.get("addressType", "IPv4") != "IPv4":
            continue
        meta = doc.get("metadata") or {}
        service = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
        namespace = meta.get("namespace") or "default"
        if not isinstance(service, str):
            continue
        ports = [p.get("port") for p in doc.get("ports") or [] if isinstance(p, Mapping)]
        for endpoint in doc.get("endpoints") or []:
            if not isinstance(endpoint, Mapping):
                continue
            for address in endpoint.get("addresses") or []:
                if not (isinstance(address, str) and address.startswith("127.")):
                    continue
                for port in ports:
                    if isinstance(port, int) and 0 < port < 65536:
                        out.add(BackendAddress(f"{namespace}/{service}", address, port))
    return out


def zones(docs: Iterator[Mapping[str, Any]]) -> list[str]:
    """The DNS zones of the Zone objects (what knotd serves and dns-writer manages)."""
    found = set()
    for doc in docs:
        if doc.get("kind") == "Zone":
            zone = (doc.get("spec") or {}).get("zone")
            if isinstance(zone, str) and zone:
                found.add(zone.lower().rstrip("."))
    return sorted(found)

"""The local source: a directory of YAML manifests (the embedded default's configuration).

Every ``*.yaml`` / ``*.yml`` file under the directory is read, except ``secrets/``, where
``secrets/<namespace>/<name>/<key>`` files form Secrets (a mounted Secret volume's layout).
Changes are found by polling modification times and sizes. A file that fails to parse keeps its
last good content, so saving a half-edited file never deletes what it declared.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..domain.objects import (
    CLUSTER_SCOPED,
    KINDS,
    Obj,
    key_of,
    name_of,
    stored,
    summarize_secret,
)
from ..domain.store import ObjectStore
from .source import Notify

log = logging.getLogger("ingress_watcher.manifests")
_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_MAX_FILE = 16 * 1024 * 1024
# libyaml's loader when PyYAML was built with it: the same safe subset, ~10x faster on a file of
# 10,000 Ingresses.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

Fingerprint = tuple[tuple[str, int, int], ...]


@dataclass
class ManifestDirectory:
    root: Path
    _parsed: dict[Path, tuple[tuple[int, int], list[tuple[str, Obj]]]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def fingerprint(self) -> Fingerprint:
        out: list[tuple[str, int, int]] = []
        if not self.root.is_dir():
            return ()
        for path in sorted(self.root.rglob("*")):
            if path.is_file():
                stat = path.stat()
                out.append((str(path), stat.st_mtime_ns, stat.st_size))
        return tuple(out)

    def _manifest_files(self) -> list[Path]:
        secrets = self.root / "secrets"
        return sorted(
            p
            for p in self.root.rglob("*")
            if p.is_file() and p.suffix in (".yaml", ".yml") and secrets not in p.parents
        )

    def _parse(self, path: Path) -> list[tuple[str, Obj]]:
        if path.stat().st_size > _MAX_FILE:
            raise ValueError(f"larger than {_MAX_FILE} bytes")
        out: list[tuple[str, Obj]] = []
        for index, doc in enumerate(yaml.load_all(path.read_text(), Loader=_LOADER)):
            if doc is None:
                continue
            if not isinstance(doc, Mapping):
                raise ValueError(f"document {index} is not a mapping")
            kind = doc.get("kind")
            if kind not in KINDS:
                log.info(
                    "manifest kind not watched; skipped",
                    extra={"file": str(path), "document": index, "kind": str(kind)},
                )
                continue
            name = name_of(doc)
            metadata = doc.get("metadata")
            namespace = metadata.get("namespace") if isinstance(metadata, Mapping) else None
            if not _NAME_RE.match(name) or len(name) > 253:
                raise ValueError(f"document {index}: metadata.name {name!r} is not a valid name")
            if kind not in CLUSTER_SCOPED and not (
                isinstance(namespace, str) and _NAME_RE.match(namespace) and len(namespace) <= 63
            ):
                raise ValueError(f"document {index}: {kind} {name} needs a valid namespace")
            obj: dict[str, Any] = dict(doc)
            # In the store's form, so that an unchanged object compares equal to the stored one.
            out.append(
                (str(kind), summarize_secret(obj) if kind == "Secret" else stored(str(kind), obj))
            )
        return out

    def _secrets(self) -> list[Obj]:
        out: list[Obj] = []
        base = self.root / "secrets"
        if not base.is_dir():
            return out
        for ns_dir in sorted(p for p in base.iterdir() if p.is_dir()):
            for secret_dir in sorted(p for p in ns_dir.iterdir() if p.is_dir()):
                if not (_NAME_RE.match(ns_dir.name) and _NAME_RE.match(secret_dir.name)):
                    self.errors[str(secret_dir)] = "directory names must be Kubernetes names"
                    continue
                data = {
                    f.name: base64.b64encode(f.read_bytes()).decode()
                    for f in sorted(secret_dir.iterdir())
                    if f.is_file() and re.fullmatch(r"[-._a-zA-Z0-9]{1,253}", f.name)
                }
                tls = "tls.crt" in data and "tls.key" in data
                out.append(
                    summarize_secret(
                        {
                            "kind": "Secret",
                            "type": "kubernetes.io/tls" if tls else "Opaque",
                            "metadata": {"name": secret_dir.name, "namespace": ns_dir.name},
                            "data": data,
                        }
                    )
                )
        return out

    def load(self) -> dict[str, list[Obj]]:
        """Every object of the directory by kind; files that fail keep their last good parse."""
        self.errors.clear()
        by_kind: dict[str, list[Obj]] = {kind: [] for kind in KINDS}
        files = self._manifest_files()
        for path in list(self._parsed):
            if path not in files:
                del self._parsed[path]
        for path in files:
            stat = path.stat()
            stamp = (stat.st_mtime_ns, stat.st_size)
            cached = self._parsed.get(path)
            if cached is None or cached[0] != stamp:
                try:
                    self._parsed[path] = (stamp, self._parse(path))
                except (OSError, ValueError, yaml.YAMLError) as exc:
                    self.errors[str(path)] = str(exc)[:500]
                    log.warning(
                        "manifest file rejected; its last good content stays",
                        extra={"file": str(path), "error": str(exc)[:500]},
                    )
                    if cached is None:
                        continue
            for kind, obj in self._parsed[path][1]:
                by_kind[kind].append(obj)
        by_kind["Secret"].extend(self._secrets())
        return by_kind


def apply_difference(store: ObjectStore, kind: str, items: list[Obj]) -> bool:
    """Bring ``kind`` in ``store`` to ``items`` object by object (an edit of one file is then a
    change of the objects in it, which the watcher normalizes alone). False, after installing
    the whole list instead, when the kind would go from several objects to none at once: that
    looks like a broken directory rather than intent, and the full path holds such deletes."""
    held = store.objects.get(kind, {})
    if not items and len(held) > 1:
        store.replace(kind, items)
        return False
    fresh = {key_of(obj, kind): obj for obj in items}
    for key in [k for k in held if k not in fresh]:
        store.delete(kind, key)
    for key, obj in fresh.items():
        if held.get(key) != obj:
            store.upsert(kind, obj)
    return True


class ManifestSource:
    """Polls the directory; the first load installs complete lists of every kind, every later
    change only the objects that differ."""

    def __init__(self, root: Path, poll_interval: float) -> None:
        self.directory = ManifestDirectory(root)
        self._interval = poll_interval

    async def run(self, store: ObjectStore, notify: Notify) -> None:
        seen: Fingerprint | None = None
        warned = False
        while True:
            if not self.directory.root.is_dir():
                if not warned:
                    log.error(
                        "manifest directory does not exist; set INGRESS_WATCHER_MANIFESTS_DIR",
                        extra={"manifests_dir": str(self.directory.root.resolve())},
                    )
                    warned = True
            else:
                warned = False
                current = await asyncio.to_thread(self.directory.fingerprint)
                if current != seen:
                    loaded = await asyncio.to_thread(self.directory.load)
                    if seen is None:
                        for kind, items in loaded.items():
                            store.replace(kind, items)
                        full = True
                    else:
                        # Every kind is brought up to date, whatever the others do.
                        applied = [apply_difference(store, k, items) for k, items in loaded.items()]
                        full = not all(applied)
                    seen = current
                    await notify(full)
            await asyncio.sleep(self._interval)

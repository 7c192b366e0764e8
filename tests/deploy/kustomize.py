"""A small kustomize renderer for the features deploy/ uses, so CI can validate the rendered
overlays offline (no kustomize binary ships in Debian 12 or on PyPI).

Supported, exactly: ``resources`` (files and directories with a kustomization.yaml),
``configMapGenerator`` with ``files`` and ``disableNameSuffixHash``, and ``patches`` given inline
as JSON 6902 operations (``add``, ``replace``, ``remove``) with a ``target`` of kind and a name
regex. Anything else raises, so deploy/ cannot drift into features this renderer would silently
ignore.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml

Obj = dict[str, Any]
_KNOWN_KEYS = {"apiVersion", "kind", "resources", "configMapGenerator", "patches"}


class UnsupportedKustomization(ValueError):
    pass


def load_documents(path: Path) -> list[Obj]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _pointer(path: str) -> list[str]:
    return [p.replace("~1", "/").replace("~0", "~") for p in path.lstrip("/").split("/")]


def _apply_op(doc: Obj, op: Obj) -> None:
    parts = _pointer(op["path"])
    parent: Any = doc
    for part in parts[:-1]:
        parent = parent[int(part)] if isinstance(parent, list) else parent[part]
    last = parts[-1]
    kind = op["op"]
    if kind == "replace":
        if isinstance(parent, list):
            parent[int(last)] = op["value"]
        else:
            if last not in parent:
                raise KeyError(f"replace of missing {op['path']}")
            parent[last] = op["value"]
    elif kind == "add":
        if isinstance(parent, list):
            parent.insert(len(parent) if last == "-" else int(last), op["value"])
        else:
            parent[last] = op["value"]
    elif kind == "remove":
        del parent[int(last) if isinstance(parent, list) else last]
    else:
        raise UnsupportedKustomization(f"patch op {kind!r}")


def build(directory: Path) -> list[Obj]:
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(spec) - _KNOWN_KEYS
    if unknown:
        raise UnsupportedKustomization(f"{directory}: {sorted(unknown)}")
    out: list[Obj] = []
    for ref in spec.get("resources", []):
        target = (directory / ref).resolve()
        if target.is_dir():
            out.extend(build(target))
        elif directory.resolve() in target.parents:
            out.extend(load_documents(target))
        else:
            # kustomize's load restrictor refuses files outside the kustomization's root.
            raise UnsupportedKustomization(f"{ref}: a file outside {directory}")
    for generator in spec.get("configMapGenerator", []):
        if not generator.get("options", {}).get("disableNameSuffixHash"):
            raise UnsupportedKustomization("configMapGenerator without disableNameSuffixHash")
        data = {}
        for entry in generator["files"]:
            file = (directory / entry).resolve()
            if directory.resolve() not in file.parents:
                raise UnsupportedKustomization(f"{entry}: kustomize refuses files outside the root")
            data[file.name] = file.read_text()
        out.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": generator["name"], "namespace": generator["namespace"]},
                "data": data,
            }
        )
    for patch in spec.get("patches", []):
        target = patch["target"]
        if set(target) - {"kind", "name"}:
            raise UnsupportedKustomization(f"patch target {target}")
        name_re = re.compile(f"^(?:{target['name']})$")
        matched = [
            o for o in out if o["kind"] == target["kind"] and name_re.match(o["metadata"]["name"])
        ]
        if not matched:
            raise ValueError(f"{directory}: patch target {target} matches nothing")
        for obj in matched:
            for op in yaml.safe_load(patch["patch"]):
                _apply_op(obj, op)
    return [copy.deepcopy(o) for o in out]

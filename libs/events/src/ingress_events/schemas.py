"""JSON Schemas of the catalogue, and the compatibility rule within a major version.

The committed schemas (libs/events/schemas/v<major>/<type>.json) are the contract. A change to a
model is compatible when every committed property still exists with the same type, nothing that
was optional became required, and no new required property appeared. ``ingress-events schemas
--write`` refuses to write an incompatible change: that needs a new major version.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .catalogue import ALL_EVENTS, CATALOGUE_VERSION, Event
from .envelope import dataschema_uri

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas" / f"v{CATALOGUE_VERSION}"


def schema_for(cls: type[Event]) -> dict[str, Any]:
    schema = cls.model_json_schema(mode="serialization")
    schema["$id"] = dataschema_uri(cls)
    schema["title"] = cls.ce_type()
    schema["description"] = (cls.__doc__ or cls.summary).strip().split("\n\n")[0].replace("\n", " ")
    schema["x-ce-type"] = cls.ce_type()
    schema["x-producer"] = cls.producer
    return schema


def generated() -> dict[str, dict[str, Any]]:
    return {f"{cls.event_type()}.json": schema_for(cls) for cls in ALL_EVENTS}


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def committed(directory: Path = SCHEMA_DIR) -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))}


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].split("/")[-1]
        schema = root.get("$defs", {})[name]
    return schema


def _type_signature(schema: dict[str, Any], root: dict[str, Any]) -> Any:
    schema = _resolve(schema, root)
    if "anyOf" in schema:
        return sorted(json.dumps(_type_signature(s, root), sort_keys=True) for s in schema["anyOf"])
    if "enum" in schema or "const" in schema:
        # Consumers parse strictly, so adding a value breaks them as much as removing one does.
        return ("enum", sorted(map(str, schema.get("enum", [schema.get("const")]))))
    kind = schema.get("type")
    if kind == "array":
        return ("array", _type_signature(schema.get("items", {}), root))
    if kind == "object" or "properties" in schema:
        return "object"
    return kind


def breaking_changes(
    old: dict[str, Any],
    new: dict[str, Any],
    where: str = "",
    old_root: dict[str, Any] | None = None,
    new_root: dict[str, Any] | None = None,
) -> list[str]:
    """Every way ``new`` would break a consumer or producer written against ``old``."""
    old_root = old_root or old
    new_root = new_root or new
    old = _resolve(old, old_root)
    new = _resolve(new, new_root)
    problems: list[str] = []
    old_props: dict[str, Any] = old.get("properties", {})
    new_props: dict[str, Any] = new.get("properties", {})
    old_required = set(old.get("required", []))
    new_required = set(new.get("required", []))
    for name, old_schema in old_props.items():
        path = f"{where}.{name}" if where else name
        if name not in new_props:
            problems.append(f"{path}: removed or renamed")
            continue
        if _type_signature(old_schema, old_root) != _type_signature(new_props[name], new_root):
            problems.append(f"{path}: type changed")
            continue
        problems.extend(
            breaking_changes(old_schema, new_props[name], path, old_root, new_root)
            if "properties" in _resolve(old_schema, old_root)
            else []
        )
        old_items = _resolve(old_schema, old_root).get("items")
        new_items = _resolve(new_props[name], new_root).get("items")
        if isinstance(old_items, dict) and isinstance(new_items, dict):
            problems.extend(breaking_changes(old_items, new_items, f"{path}[]", old_root, new_root))
    for name in sorted(new_required - old_required):
        path = f"{where}.{name}" if where else name
        problems.append(
            f"{path}: new required field" if name not in old_props else f"{path}: became required"
        )
    return problems


def compatibility_report(directory: Path = SCHEMA_DIR) -> dict[str, list[str]]:
    """Breaking changes of the models against the committed schemas, by file."""
    new = generated()
    report: dict[str, list[str]] = {}
    for name, old_schema in committed(directory).items():
        if name not in new:
            report[name] = ["event type removed"]
            continue
        problems = breaking_changes(old_schema, new[name])
        if problems:
            report[name] = problems
    return report


def drift(directory: Path = SCHEMA_DIR) -> list[str]:
    """Files whose committed text differs from what the models generate."""
    new = {name: render(schema) for name, schema in generated().items()}
    have = {p.name: p.read_text() for p in directory.glob("*.json")}
    return sorted(name for name in set(new) | set(have) if new.get(name) != have.get(name))


def write(directory: Path = SCHEMA_DIR) -> list[str]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in generated().items():
        path = directory / name
        text = render(schema)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            written.append(name)
    return written

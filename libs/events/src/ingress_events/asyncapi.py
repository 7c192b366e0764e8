"""The AsyncAPI 3.0 document and the Markdown catalogue of every event, generated from the models.

CI regenerates both and fails when the committed copies in docs/events/ drift.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from .catalogue import ALL_EVENTS, CATALOGUE_VERSION, CONSUMERS, KEY_PARTS, Event, Family
from .envelope import REQUIRED_HEADERS
from .schemas import schema_for
from .subjects import DEFAULT_ROOT, Subjects

DOCS_DIR = Path(__file__).resolve().parents[4] / "docs" / "events"

_HEADERS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": [*REQUIRED_HEADERS, "Nats-Msg-Id", "content-type"],
    "properties": {
        "ce-specversion": {"type": "string", "const": "1.0"},
        "ce-id": {"type": "string", "description": "uuid5 of type, subject, generation and body"},
        "ce-source": {"type": "string", "description": "//ingress-domain/<cluster>/<service>"},
        "ce-type": {"type": "string", "description": "io.ingress-domain.<family>.<name>.v<major>"},
        "ce-time": {"type": "string", "format": "date-time"},
        "ce-subject": {"type": "string", "description": "The key, parts joined by '/'"},
        "ce-dataschema": {"type": "string", "format": "uri"},
        "content-type": {"type": "string", "const": "application/json"},
        "Nats-Msg-Id": {"type": "string", "description": "= ce-id (JetStream dedupe)"},
        "traceparent": {"type": "string", "description": "W3C trace context"},
        "tracestate": {"type": "string"},
    },
}


def _channel_variants(family: Family) -> list[tuple[str, str, list[str]]]:
    """(channel id, address, parameter names) for each key shape of the family."""
    subjects = Subjects(DEFAULT_ROOT)
    out = []
    for shape in KEY_PARTS[family]:
        fixed = [p.split("=", 1)[1] for p in shape if "=" in p]
        params = [p for p in shape if "=" not in p]
        tokens = [*fixed, *[f"{{{p}}}" for p in params]]
        channel_id = "-".join([family.value, *fixed])
        out.append((channel_id, f"{subjects.prefix}.{family.value}.{'.'.join(tokens)}", params))
    return out


def _hoist_defs(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    schema = copy.deepcopy(schema)
    for name, definition in schema.pop("$defs", {}).items():
        defs[name] = definition

    def rewrite(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                k: (v.replace("#/$defs/", "#/components/schemas/") if k == "$ref" else rewrite(v))
                for k, v in node.items()
            }
        if isinstance(node, list):
            return [rewrite(v) for v in node]
        return node

    for name in list(defs):
        defs[name] = rewrite(defs[name])
    return dict(rewrite(schema))


def document() -> dict[str, Any]:
    schemas: dict[str, Any] = {"CloudEventsHeaders": _HEADERS_SCHEMA}
    messages: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    by_family: dict[Family, list[type[Event]]] = {}
    for cls in ALL_EVENTS:
        by_family.setdefault(cls.family, []).append(cls)
        message_id = cls.event_type().replace(".", "_").replace("-", "_")
        payload_id = cls.__name__
        schemas[payload_id] = _hoist_defs(schema_for(cls), schemas)
        messages[message_id] = {
            "name": cls.ce_type(),
            "title": cls.__name__,
            "summary": cls.summary,
            "contentType": "application/json",
            "headers": {"$ref": "#/components/schemas/CloudEventsHeaders"},
            "payload": {"$ref": f"#/components/schemas/{payload_id}"},
        }
    for family, classes in by_family.items():
        refs = {
            c.event_type().replace(".", "_").replace("-", "_"): {
                "$ref": "#/components/messages/"
                + c.event_type().replace(".", "_").replace("-", "_")
            }
            for c in classes
        }
        for channel_id, address, params in _channel_variants(family):
            channels[channel_id] = {
                "address": address,
                "description": f"State of one {family.value} key; the stream keeps the last one.",
                "parameters": {
                    p: {"description": f"{p}, encoded as a subject token"} for p in params
                },
                "messages": refs,
            }
            producers = sorted({c.producer for c in classes})
            for producer in producers:
                operations[f"{producer}-sends-{channel_id}"] = {
                    "action": "send",
                    "channel": {"$ref": f"#/channels/{channel_id}"},
                    "messages": [
                        {"$ref": f"#/channels/{channel_id}/messages/{m}"}
                        for m, c in zip(refs, classes, strict=True)
                        if c.producer == producer
                    ],
                }
            for consumer in CONSUMERS[family]:
                operations[f"{consumer}-receives-{channel_id}"] = {
                    "action": "receive",
                    "channel": {"$ref": f"#/channels/{channel_id}"},
                }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Ingress Domain events",
            "version": f"{CATALOGUE_VERSION}.0.0",
            "description": (
                "Every event of the Ingress Domain pipeline. CloudEvents 1.0 in binary mode over "
                "NATS headers; level-triggered (each event is the full state of its key, with a "
                "generation); one JetStream stream per family keeps the last message per subject. "
                "Generated from libs/events; do not edit by hand."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {"local": {"host": "127.0.0.1:4222", "protocol": "nats"}},
        "channels": channels,
        "operations": operations,
        "components": {"schemas": schemas, "messages": messages},
    }


def render_asyncapi() -> str:
    return yaml.safe_dump(document(), sort_keys=False, width=100, allow_unicode=True)


def render_catalogue() -> str:
    subjects = Subjects(DEFAULT_ROOT)
    lines = [
        "# Event catalogue (v1)",
        "",
        "Generated by `ingress-events write` from libs/events; do not edit by hand.",
        "Machine-readable: [asyncapi.yaml](asyncapi.yaml) and the JSON Schemas in",
        "[libs/events/schemas/v1](../../libs/events/schemas/v1).",
        "Naming rules: [naming.md](naming.md).",
        "",
        "| family | subject | stream | events (producer) | consumed by |",
        "|---|---|---|---|---|",
    ]
    by_family: dict[Family, list[type[Event]]] = {}
    for cls in ALL_EVENTS:
        by_family.setdefault(cls.family, []).append(cls)
    for family, classes in by_family.items():
        addresses = "<br>".join(f"`{a}`" for _, a, _ in _channel_variants(family))
        events = "<br>".join(f"`{c.event_type()}` ({c.producer})" for c in classes)
        lines.append(
            f"| {family.value} | {addresses} | `{subjects.stream(family)}` | {events} | "
            f"{', '.join(CONSUMERS[family])} |"
        )
    lines += ["", "## Events", ""]
    for cls in ALL_EVENTS:
        lines += [f"### `{cls.ce_type()}`", "", cls.summary, ""]
        lines += ["| field | type | required | description |", "|---|---|---|---|"]
        schema = schema_for(cls)
        required = set(schema.get("required", []))
        for name, prop in schema.get("properties", {}).items():
            kind = prop.get("type") or (
                prop.get("$ref", "").split("/")[-1]
                or " or ".join(
                    str(p.get("type") or p.get("$ref", "").split("/")[-1])
                    for p in prop.get("anyOf", [])
                )
            )
            if kind == "array":
                item = prop.get("items", {})
                kind = f"list of {item.get('type') or item.get('$ref', '').split('/')[-1]}"
            desc = str(prop.get("description", "")).replace("\n", " ").replace("|", "\\|")
            lines.append(f"| `{name}` | {kind} | {'yes' if name in required else ''} | {desc} |")
        lines.append("")
    return "\n".join(lines)


def outputs() -> dict[Path, str]:
    from .permissions import render_authorization

    return {
        DOCS_DIR / "asyncapi.yaml": render_asyncapi(),
        DOCS_DIR / "catalogue.md": render_catalogue(),
        DOCS_DIR.parents[1] / "deploy" / "nats" / "authorization.conf": render_authorization(),
    }

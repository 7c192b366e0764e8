"""CloudEvents (binary content mode) over NATS headers.

Headers: ``ce-specversion``, ``ce-id``, ``ce-source``, ``ce-type`` (with the major version),
``ce-time``, ``ce-subject``, ``ce-dataschema``, ``content-type``, ``Nats-Msg-Id`` (= ``ce-id``, for
JetStream's duplicate window) and W3C ``traceparent`` / ``tracestate``. The body is the event model
as JSON.

``ce-id`` is derived from the type, the key, the generation and the body, so a retried or
republished identical event is dropped by JetStream's dedupe window, while a changed one never is.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Generic, TypeVar

from pydantic import ValidationError

from .catalogue import CE_TYPE_PREFIX, EVENTS_BY_CE_TYPE, Event

E = TypeVar("E", bound=Event)

SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/json"
_CE_TYPE_RE = re.compile(rf"^{re.escape(CE_TYPE_PREFIX)}\.(?P<short>[a-z0-9.-]+)\.v(?P<major>\d+)$")
REQUIRED_HEADERS = ("ce-specversion", "ce-id", "ce-source", "ce-type", "ce-time")


class EnvelopeError(Exception):
    """An incoming message that is not a valid event. ``reason`` goes on the dead letter."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.detail = message


def dataschema_uri(event_cls: type[Event]) -> str:
    return f"urn:ingress-domain:schema:{event_cls.event_type()}:v{event_cls.version}"


def event_id(event: Event, subject: str, body: bytes) -> str:
    """Derived from what the event is, so an identical republish is a JetStream duplicate."""
    digest = hashlib.sha256(
        b"|".join(
            (event.ce_type().encode(), subject.encode(), str(event.generation).encode(), body)
        )
    ).hexdigest()
    return digest[:32]


@dataclass(frozen=True)
class Envelope(Generic[E]):
    event: E
    id: str
    source: str
    type: str
    time: datetime
    subject: str
    nats_subject: str
    traceparent: str | None = None
    tracestate: str | None = None
    extra_headers: dict[str, str] = field(default_factory=dict)


def encode(
    event: Event,
    *,
    nats_subject: str,
    source: str,
    trace_headers: dict[str, str] | None = None,
    now: datetime | None = None,
) -> tuple[dict[str, str], bytes]:
    body = event.model_dump_json(exclude_none=False).encode()
    ce_id = event_id(event, nats_subject, body)
    headers = {
        "ce-specversion": SPEC_VERSION,
        "ce-id": ce_id,
        "ce-source": source,
        "ce-type": event.ce_type(),
        "ce-time": (now or datetime.now(UTC)).isoformat().replace("+00:00", "Z"),
        "ce-subject": "/".join(event.key()),
        "ce-dataschema": dataschema_uri(type(event)),
        "content-type": CONTENT_TYPE,
        "Nats-Msg-Id": ce_id,
    }
    if trace_headers:
        headers.update(
            {k: v for k, v in trace_headers.items() if k in ("traceparent", "tracestate")}
        )
    return headers, body


def event_class_for(ce_type: str) -> type[Event]:
    cls = EVENTS_BY_CE_TYPE.get(ce_type)
    if cls is not None:
        return cls
    match = _CE_TYPE_RE.match(ce_type)
    if match is None:
        raise EnvelopeError("UnknownType", f"ce-type {ce_type!r} is not an Ingress Domain event")
    known_majors = {
        c.version for c in EVENTS_BY_CE_TYPE.values() if c.event_type() == match["short"]
    }
    if known_majors:
        raise EnvelopeError(
            "UnsupportedVersion",
            f"{match['short']} v{match['major']} is not understood here "
            f"(knows v{sorted(known_majors)})",
        )
    raise EnvelopeError("UnknownType", f"no event type {match['short']!r} in the catalogue")


def decode(headers: dict[str, str] | None, body: bytes, *, nats_subject: str) -> Envelope[Event]:
    headers = headers or {}
    missing = [h for h in REQUIRED_HEADERS if not headers.get(h)]
    if missing:
        raise EnvelopeError("MissingHeaders", f"missing CloudEvents headers: {', '.join(missing)}")
    if headers["ce-specversion"] != SPEC_VERSION:
        raise EnvelopeError(
            "UnsupportedSpecVersion", f"ce-specversion {headers['ce-specversion']!r} is not 1.0"
        )
    cls = event_class_for(headers["ce-type"])
    try:
        event = cls.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        reason = "MalformedBody" if first["type"] == "json_invalid" else "SchemaViolation"
        raise EnvelopeError(
            reason, f"{where}: {first['msg']} ({exc.error_count()} error(s))"
        ) from exc
    try:
        sent_at = datetime.fromisoformat(headers["ce-time"].replace("Z", "+00:00"))
    except ValueError as exc:
        raise EnvelopeError(
            "MissingHeaders", f"ce-time {headers['ce-time']!r} is not RFC 3339"
        ) from exc
    known = {*REQUIRED_HEADERS, "ce-subject", "ce-dataschema", "traceparent", "tracestate"}
    return Envelope(
        event=event,
        id=headers["ce-id"],
        source=headers["ce-source"],
        type=headers["ce-type"],
        time=sent_at,
        subject=headers.get("ce-subject", "/".join(event.key())),
        nats_subject=nats_subject,
        traceparent=headers.get("traceparent"),
        tracestate=headers.get("tracestate"),
        extra_headers={k: v for k, v in headers.items() if k not in known},
    )

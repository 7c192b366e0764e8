"""Capture every event on the bus and check it against the committed contract.

Each captured message must carry the CloudEvents headers, parse as its catalogue model, sit on the
subject its key says, and validate against the committed JSON Schema of its type. A contract test
fails on the first message that does not.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jsonschema
from ingress_events import schemas
from ingress_events.bus import Bus
from ingress_events.catalogue import Event
from ingress_events.envelope import Envelope, decode
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription


@dataclass(frozen=True)
class Captured:
    subject: str
    headers: dict[str, str]
    envelope: Envelope[Event]


class ContractViolation(AssertionError):
    pass


class EventCapture:
    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self._validators: dict[str, jsonschema.Draft202012Validator] = {
            name: jsonschema.Draft202012Validator(schema)
            for name, schema in schemas.committed().items()
        }
        self.events: list[Captured] = []
        self.violations: list[str] = []
        self._changed = asyncio.Condition()
        self._sub: Subscription | None = None

    async def start(self) -> EventCapture:
        self._sub = await self._bus.nats.subscribe(
            f"{self._bus.subjects.prefix}.>", cb=self._on_msg
        )
        await self._bus.nats.flush()
        return self

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()

    async def _on_msg(self, msg: Msg) -> None:
        headers = dict(msg.headers or {})
        try:
            envelope = decode(headers, msg.data, nats_subject=msg.subject)
            expected = self._bus.subjects.for_event(envelope.event)
            if expected != msg.subject:
                raise ContractViolation(f"{msg.subject}: body belongs on {expected}")
            if headers.get("Nats-Msg-Id") != headers.get("ce-id"):
                raise ContractViolation(f"{msg.subject}: Nats-Msg-Id differs from ce-id")
            validator = self._validators.get(f"{envelope.event.event_type()}.json")
            if validator is None:
                raise ContractViolation(f"{msg.subject}: no committed schema for {envelope.type}")
            body: Any = json.loads(msg.data)
            errors = sorted(validator.iter_errors(body), key=lambda e: list(e.path))
            if errors:
                raise ContractViolation(f"{msg.subject}: {errors[0].message}")
        except Exception as exc:
            self.violations.append(str(exc))
            return
        async with self._changed:
            self.events.append(Captured(msg.subject, headers, envelope))
            self._changed.notify_all()

    def of_type(self, cls: type[Event]) -> list[Event]:
        return [c.envelope.event for c in self.events if isinstance(c.envelope.event, cls)]

    async def wait_for(
        self, predicate: Callable[[Captured], bool], *, timeout: float = 10.0, count: int = 1
    ) -> list[Captured]:
        """Wait for ``count`` events satisfying ``predicate``; fail on contract violations."""

        def matched() -> list[Captured]:
            if self.violations:
                raise ContractViolation("; ".join(self.violations))
            return [c for c in self.events if predicate(c)]

        async with self._changed:
            await asyncio.wait_for(
                self._changed.wait_for(lambda: len(matched()) >= count), timeout=timeout
            )
        return matched()

    def assert_clean(self) -> None:
        if self.violations:
            raise ContractViolation("; ".join(self.violations))

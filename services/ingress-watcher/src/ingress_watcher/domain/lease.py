"""Leader election on a coordination.k8s.io/v1 Lease: the pure decision (time is a parameter).

The holder renews ``spec.renewTime`` well within ``leaseDurationSeconds``; anyone else may take
the Lease over once ``renewTime + leaseDurationSeconds`` has passed (or when the holder released
it by clearing ``holderIdentity``). Writes go through the API server's optimistic concurrency
(``metadata.resourceVersion``), so two candidates racing for an expired Lease cannot both win.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

Action = Literal["create", "renew", "take-over", "wait"]


def micro_time(at: datetime) -> str:
    """metav1.MicroTime as the API server writes it."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def decide(lease: Mapping[str, Any] | None, me: str, now: datetime) -> Action:
    if lease is None:
        return "create"
    spec = lease.get("spec") if isinstance(lease.get("spec"), Mapping) else {}
    assert isinstance(spec, Mapping)
    holder = spec.get("holderIdentity") or ""
    if holder == me:
        return "renew"
    if not holder:
        return "take-over"
    renewed = parse_time(spec.get("renewTime")) or parse_time(spec.get("acquireTime"))
    duration = spec.get("leaseDurationSeconds")
    if renewed is None or not isinstance(duration, int):
        return "take-over"
    return "take-over" if renewed + timedelta(seconds=duration) < now else "wait"


def lease_spec(
    previous: Mapping[str, Any] | None,
    me: str,
    now: datetime,
    duration_seconds: int,
    action: Action,
) -> dict[str, Any]:
    """The Lease ``spec`` after ``action`` (create / renew / take-over)."""
    old = previous.get("spec") if previous and isinstance(previous.get("spec"), Mapping) else {}
    assert isinstance(old, Mapping)
    stamp = micro_time(now)
    transitions = int(old.get("leaseTransitions") or 0)
    if action == "renew":
        return {**old, "renewTime": stamp, "leaseDurationSeconds": duration_seconds}
    return {
        "holderIdentity": me,
        "leaseDurationSeconds": duration_seconds,
        "acquireTime": stamp,
        "renewTime": stamp,
        "leaseTransitions": transitions + (1 if action == "take-over" else 0),
    }


def released(previous: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """The spec a holder writes on shutdown: nobody holds it, the next candidate needs no wait."""
    old = previous.get("spec") if isinstance(previous.get("spec"), Mapping) else {}
    assert isinstance(old, Mapping)
    return {
        **old,
        "holderIdentity": None,
        "leaseDurationSeconds": 1,
        "renewTime": micro_time(now),
    }

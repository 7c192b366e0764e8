"""Who writes status: a coordination.k8s.io/v1 Lease held by one replica (kubernetes source), or
always this process (the manifest source runs one instance)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from ingress_runtime.kubeclient import ApiClient, ApiException

from ..domain.lease import decide, lease_spec, released
from .kube import call_json

log = logging.getLogger("ingress_watcher.lease")


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Leadership(Protocol):
    leading: asyncio.Event
    """Set while this replica is the leader."""

    async def run(self) -> None: ...

    async def release(self) -> None: ...


class AlwaysLeader:
    def __init__(self) -> None:
        self.leading = asyncio.Event()

    async def run(self) -> None:
        self.leading.set()

    async def release(self) -> None:
        self.leading.clear()


class LeaseElector:
    """Acquire, renew, take over after expiry, release on shutdown.

    The leader renews every ``renew_seconds``; if it cannot renew for ``duration_seconds`` (API
    unreachable, Lease taken) it stops leading before anyone else may take over.
    """

    def __init__(
        self,
        api: ApiClient,
        namespace: str,
        name: str,
        identity: str,
        *,
        duration_seconds: int = 15,
        renew_seconds: float = 5.0,
        now: Callable[[], datetime] = _utcnow,
    ) -> None:
        self._api = api
        self._path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
        self._namespace = namespace
        self._name = name
        self.identity = identity
        self._duration = duration_seconds
        self._renew = renew_seconds
        self._now = now
        self._last_renewal: datetime | None = None
        self.leading = asyncio.Event()
        self.transitions = 0

    async def _call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        return await call_json(self._api, method, path, body, timeout=max(self._renew, 1.0))

    async def _get(self) -> dict[str, Any] | None:
        try:
            return await self._call("GET", f"{self._path}/{self._name}")
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    async def try_acquire_or_renew(self) -> bool:
        """One round: True when this replica holds the Lease afterwards."""
        lease = await self._get()
        now = self._now()
        action = decide(lease, self.identity, now)
        if action == "wait":
            return False
        spec = lease_spec(lease, self.identity, now, self._duration, action)
        try:
            if lease is None:
                body = {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": self._name, "namespace": self._namespace},
                    "spec": spec,
                }
                await self._call("POST", self._path, body)
            else:
                # The resourceVersion makes this a compare-and-set: a racing candidate gets 409.
                await self._call("PUT", f"{self._path}/{self._name}", {**lease, "spec": spec})
        except ApiException as exc:
            if exc.status in (409, 422):
                return False
            raise
        if action != "renew":
            self.transitions += 1
            log.info("leader election: acquired", extra={"identity": self.identity, "how": action})
        self._last_renewal = now
        return True

    async def run(self) -> None:
        while True:
            try:
                holding = await self.try_acquire_or_renew()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("leader election: lease call failed", extra={"error": repr(exc)})
                holding = self.leading.is_set() and self._still_valid()
            if holding:
                self.leading.set()
            elif self.leading.is_set():
                log.warning("leader election: lost the lease", extra={"identity": self.identity})
                self.leading.clear()
            await asyncio.sleep(self._renew)

    def _still_valid(self) -> bool:
        if self._last_renewal is None:
            return False
        return (self._now() - self._last_renewal).total_seconds() < self._duration * 0.8

    async def release(self) -> None:
        if not self.leading.is_set():
            return
        self.leading.clear()
        with contextlib.suppress(Exception):
            lease = await self._get()
            if lease is not None and (lease.get("spec") or {}).get("holderIdentity") == (
                self.identity
            ):
                await self._call(
                    "PUT",
                    f"{self._path}/{self._name}",
                    {**lease, "spec": released(lease, self._now())},
                )
                log.info("leader election: released", extra={"identity": self.identity})

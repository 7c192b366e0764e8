"""Apply a rendered config to BIRD safely.

candidate file -> ``configure check`` -> atomic rename over the live file -> ``configure ...
timeout N`` -> read back ``show route`` / ``show protocols`` -> ``configure confirm``; if the read
back does not show what was rendered, ``configure undo`` and the previous file is put back. Should
this process die between configure and confirm, BIRD itself reverts after N seconds. A config
BIRD refuses never replaces the live file, so the previous config keeps running.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

from ..domain.plan import BirdCurrent, BirdTarget, plan_apply
from .bird import BirdControl, BirdError, ProtocolStatus
from .files import ConfigStore

Outcome = Literal["unchanged", "applied", "refused", "failed"]


@dataclass(frozen=True)
class ApplyResult:
    outcome: Outcome
    message: str
    protocols: list[ProtocolStatus]
    seconds: float


class Applier:
    def __init__(self, bird: BirdControl, store: ConfigStore, confirm_timeout_seconds: int) -> None:
        self._bird = bird
        self._store = store
        self._timeout = confirm_timeout_seconds

    async def read_current(
        self, target: BirdTarget | None = None
    ) -> tuple[BirdCurrent, list[ProtocolStatus]]:
        """What BIRD runs. Given the target, BIRD's routes are read only when the file on disk
        is the target's: otherwise the file alone decides that BIRD must be reconfigured, and
        reading back 10,000 routes only to learn so doubled the cost of every change."""
        protocols = await self._bird.protocols()
        text = self._store.read()
        needed = target is None or text == target.config_text
        current = BirdCurrent(
            config_text=text,
            static_routes=await self._bird.static_routes() if needed else frozenset(),
            bgp_protocols=frozenset(p.name for p in protocols if p.proto == "BGP"),
        )
        return current, protocols

    async def apply(self, target: BirdTarget) -> ApplyResult:
        started = time.perf_counter()

        def result(outcome: Outcome, message: str, protocols: list[ProtocolStatus]) -> ApplyResult:
            return ApplyResult(outcome, message, protocols, time.perf_counter() - started)

        current, protocols = await self.read_current(target)
        plan = plan_apply(target, current)
        if not plan.write:
            return result("unchanged", plan.reason, protocols)
        candidate = self._store.write_candidate(target.config_text)
        refusal = await self._bird.check(candidate)
        if refusal is not None:
            self._store.discard(candidate)
            return result("refused", refusal, protocols)
        previous = current.config_text
        self._store.promote(candidate)
        try:
            await self._bird.configure(self._store.path, self._timeout)
        except BirdError as exc:
            self._restore(previous)
            return result("refused", exc.message, protocols)
        after, protocols = await self.read_current()
        if (
            after.static_routes != target.static_routes
            or after.bgp_protocols != target.bgp_protocols
        ):
            await self._bird.undo()
            self._restore(previous)
            missing = sorted(target.static_routes - after.static_routes)[:5]
            return result(
                "failed",
                f"read-back differs after configure ({plan.reason}; routes missing e.g. "
                f"{missing}); undone",
                protocols,
            )
        await self._bird.confirm()
        return result("applied", plan.reason, protocols)

    def _restore(self, previous: str | None) -> None:
        if previous is not None:
            self._store.write(previous)

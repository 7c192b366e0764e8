"""Apply a rendered config to BIRD safely.

candidate file -> ``configure check`` -> atomic rename over the live file -> ``configure ...
timeout N`` -> read back ``show route`` / ``show protocols`` -> ``configure confirm``; if the read
back does not show what was rendered, ``configure undo`` and the previous file is put back. Should
this process die between configure and confirm, BIRD itself reverts after N seconds. A config
BIRD refuses never replaces the live file, so the previous config keeps running.

Reading back every route costs BIRD and this process tens of milliseconds at 10,000 routes, on
every change and on every pass that changes nothing. Once a set of routes has been read back in
full, the next read-backs ask less: BIRD's count of our routes, and each route that differs from
the verified set. A thorough apply (the app asks for one every ``resync_seconds``) reads them all.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

from ..domain.plan import BirdCurrent, BirdTarget, plan_apply
from .bird import BirdControl, BirdError, ProtocolStatus
from .files import ConfigStore

Outcome = Literal["unchanged", "applied", "refused", "failed"]

INCREMENTAL_LIMIT = 64
"""Routes that may differ from the verified set for the read-back to ask BIRD about each of them
instead of reading every route."""


@dataclass(frozen=True)
class ApplyResult:
    outcome: Outcome
    message: str
    protocols: list[ProtocolStatus]
    seconds: float
    steps: dict[str, float] = field(default_factory=dict)
    """Seconds per step of the apply (read, write, check, configure, read-back, confirm), so
    that a slow reconfigure says which part was slow."""


class Applier:
    def __init__(self, bird: BirdControl, store: ConfigStore, confirm_timeout_seconds: int) -> None:
        self._bird = bird
        self._store = store
        self._timeout = confirm_timeout_seconds
        self.verified: frozenset[str] | None = None
        """The static routes BIRD was last seen to run, read in full or checked against an
        earlier such set; None until the first full read, and after a failed apply."""

    async def _static_routes(self, expected: frozenset[str], thorough: bool) -> frozenset[str]:
        """BIRD's static routes, as compared with ``expected``. Every route is read when
        ``thorough``, when nothing is verified yet, or when more than INCREMENTAL_LIMIT routes
        differ from the verified set. Otherwise BIRD is asked for its count and for the routes
        that differ: the answer is ``expected`` when both agree, else a set that differs from
        it. A route BIRD dropped or gained beyond those is left to the next thorough apply."""
        verified = self.verified
        if thorough or verified is None or len(verified ^ expected) > INCREMENTAL_LIMIT:
            routes = await self._bird.static_routes()
        else:
            changed = verified ^ expected
            held = await self._bird.static_routes_among(changed)
            count = await self._bird.static_route_count()
            if held == changed & expected and count == len(expected):
                routes = expected
            else:
                # Not the expected set: which routes differ is for a full read to say.
                routes = await self._bird.static_routes()
        self.verified = routes
        return routes

    async def read_current(
        self, target: BirdTarget, thorough: bool = True
    ) -> tuple[BirdCurrent, list[ProtocolStatus]]:
        """What BIRD runs, as compared with ``target``. BIRD's routes are read only when the
        file on disk is the target's: otherwise the file alone decides that BIRD must be
        reconfigured, and reading back 10,000 routes only to learn so doubled the cost of every
        change."""
        protocols = await self._bird.protocols()
        text = self._store.read()
        routes = frozenset[str]()
        if text == target.config_text:
            routes = await self._static_routes(target.static_routes, thorough)
        current = BirdCurrent(
            config_text=text,
            static_routes=routes,
            bgp_protocols=frozenset(p.name for p in protocols if p.proto == "BGP"),
        )
        return current, protocols

    async def apply(self, target: BirdTarget, thorough: bool = False) -> ApplyResult:
        """Make BIRD run ``target``; ``thorough``: read back every route, also when nothing
        changed."""
        started = time.perf_counter()
        steps: dict[str, float] = {}
        mark = started

        def step(name: str) -> None:
            nonlocal mark
            now = time.perf_counter()
            steps[name] = now - mark
            mark = now

        def result(outcome: Outcome, message: str, protocols: list[ProtocolStatus]) -> ApplyResult:
            return ApplyResult(outcome, message, protocols, time.perf_counter() - started, steps)

        current, protocols = await self.read_current(target, thorough)
        plan = plan_apply(target, current)
        step("read")
        if not plan.write:
            return result("unchanged", plan.reason, protocols)
        candidate = self._store.write_candidate(target.config_text)
        step("write")
        refusal = await self._bird.check(candidate)
        step("check")
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
        step("configure")
        after, protocols = await self.read_current(target, thorough)
        step("read_back")
        if (
            after.static_routes != target.static_routes
            or after.bgp_protocols != target.bgp_protocols
        ):
            await self._bird.undo()
            self._restore(previous)
            self.verified = None
            missing = sorted(target.static_routes - after.static_routes)[:5]
            return result(
                "failed",
                f"read-back differs after configure ({plan.reason}; routes missing e.g. "
                f"{missing}); undone",
                protocols,
            )
        await self._bird.confirm()
        step("confirm")
        return result("applied", plan.reason, protocols)

    def _restore(self, previous: str | None) -> None:
        if previous is not None:
            self._store.write(previous)

"""Wiring: bus consumers -> state -> domain planning -> BIRD -> route and admission events.

Every event only updates the in-memory state and wakes the reconcile loop; the loop plans from
the whole state, so a burst of events is one BIRD reconfiguration and a replay is harmless.
The loop also wakes on a timer (hold-down ends, session polling, Secret rotation).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from ingress_events import catalogue as c
from ingress_events.bus import Consumer, ConsumerSpec
from ingress_events.envelope import Envelope
from ingress_events.generation import GenerationClock
from ingress_events.state import LatestByKey
from ingress_runtime import ServiceContext, cancel_and_wait

from . import metrics
from .adapters.applier import Applier, ApplyResult
from .adapters.bird import BirdControl, BirdSocket, BirdUnavailable, ProtocolStatus
from .adapters.files import ConfigFile, ConfigStore, SecretReader, SecretsDirectory
from .domain import announce as a
from .domain.model import BirdDesired, PeerConfig, PoolConfig, PoolMembership, parse_address
from .domain.plan import BirdTarget
from .domain.render import host_prefix, peer_protocol_name, render
from .domain.validate import Secret, peer_applies_to, validate_peer, validate_pool
from .settings import BgpSpeakerSettings

COMPONENT = "bgp-speaker"


# Session states beside BIRD's BGP states (bird.BGP_STATES, and "Down").
ABSENT = "Absent"
"""The peer is applied but BIRD runs no protocol for it."""
UNKNOWN = "Unknown"
"""BIRD's control socket does not answer: the session cannot be read."""
REMOVED = "Removed"
"""The peer was deleted or no longer selects this node: its session is gone."""
CONNECTING = frozenset({"Idle", "Connect", "Active", "Passive", "OpenSent", "OpenConfirm"})
"""States a session that cannot open cycles through: moves between them are not news."""


@dataclass(frozen=True)
class SessionStatus:
    peer: str
    established: bool
    state: str
    message: str
    since: str | None = None
    """RFC 3339 time BIRD's protocol entered its current state (up, start, down)."""
    bfd: str | None = None
    """BFD session state (Up, Down, Init, AdminDown) for a peer with BFD on."""


@dataclass(frozen=True)
class _SaidSession:
    state: str
    established: bool
    message: str
    generation: int
    at: float


@dataclass(frozen=True)
class _Emitted:
    announced: bool
    detail: tuple[str, ...]
    """Peers when announced, the reason when withdrawn."""
    generation: int


class BgpSpeakerApp:
    def __init__(
        self,
        ctx: ServiceContext[BgpSpeakerSettings],
        *,
        bird: BirdControl | None = None,
        store: ConfigStore | None = None,
        secrets: SecretReader | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        s = ctx.settings
        self._ctx = ctx
        self._s = s
        self._node = s.node
        self._log = ctx.log.bind(node=s.node)
        self._bird = bird or BirdSocket(s.bird_socket)
        self._applier = Applier(
            self._bird,
            store or ConfigFile(s.bird_config),
            s.confirm_timeout_seconds,
        )
        self._secrets = secrets or SecretsDirectory(s.secrets_dir)
        self._clock = clock
        self._gen = GenerationClock()
        self._latest: LatestByKey[c.Event] = LatestByKey()
        self._vips: dict[tuple[str, ...], c.VipAssigned | c.VipReleased] = {}
        self._l4: dict[str, c.L4Programmed | c.L4NotReady | c.L4Removed] = {}
        self._pool_events: dict[str, c.PoolDesired | c.PoolDeleted] = {}
        self._peer_events: dict[str, c.PeerDesired | c.PeerDeleted] = {}
        self._good_pools: dict[str, PoolConfig] = {}
        self._retired_pools: dict[str, PoolConfig] = {}
        self._membership = PoolMembership(())
        self._good_peers: dict[str, PeerConfig] = {}
        self._applied_peers: dict[str, PeerConfig] = {}
        self._bird_refused: dict[str, tuple[int, str]] = {}
        self._verdicts: dict[tuple[str, str], tuple[int, str]] = {}
        self._admission_gen: dict[tuple[str, str], int] = {}
        self._route_state: dict[str, a.RouteState] = {}
        self._assigned: dict[str, int] = {}
        """Assigned VIP address -> how many owners hold it (a shared VIP has several)."""
        self._readiness: dict[str, a.Readiness] = {}
        self._touched: set[str] = set()
        """Addresses whose VIP or l4 state changed since ``_readiness`` was brought up to date."""
        self._committed: a.AnnouncePlan | None = None
        """The plan BIRD last took (None: plan everything, as after a start)."""
        self._unplanned: set[str] = set()
        """Addresses whose readiness changed since ``_committed`` was planned."""
        self._plan_everything = True
        """The pools changed (every VIP's readiness may have), or nothing was committed yet."""
        self._emitted: dict[str, _Emitted] = {}
        self._sessions: dict[str, SessionStatus] = {}
        self._said_sessions: dict[str, _SaidSession] = {}
        self._state_labels: dict[str, set[str]] = {}
        self._wake_at: float | None = None
        self._bird_ok: bool | None = None
        self._thorough_at = -math.inf
        """When every route was last read back from BIRD (resync_seconds apart)."""
        self._dirty = asyncio.Event()
        self._consumers: list[Consumer] = []
        self._loop: asyncio.Task[None] | None = None
        self._stopping = False
        self.last_apply: ApplyResult | None = None
        self.reconciled = asyncio.Condition()
        self.reconciles = 0

    # ------------------------------------------------------------------ lifecycle

    def _durable(self, what: str) -> str:
        return f"bgp-speaker-{self._node.replace('.', '_')}-{what}"

    async def start(self) -> None:
        readiness = self._ctx.readiness
        readiness.require("replayed")
        readiness.require("bird")
        await self._seed_emitted()
        specs = [
            (ConsumerSpec(self._durable("vip"), c.Family.VIP, fetch_timeout_seconds=0.2)),
            (
                ConsumerSpec(
                    self._durable("l4"),
                    c.Family.L4,
                    key_prefix=(self._node,),
                    fetch_timeout_seconds=0.2,
                )
            ),
            (ConsumerSpec(self._durable("pool"), c.Family.POOL, fetch_timeout_seconds=0.2)),
            (ConsumerSpec(self._durable("peer"), c.Family.PEER, fetch_timeout_seconds=0.2)),
        ]
        # A durable consumer does not redeliver what a previous run acked, so the current state
        # comes from the streams themselves first; the consumers then bring what changes (and
        # LatestByKey drops what both deliver).
        for spec in specs:
            for envelope in (await self._ctx.bus.replay(spec.family, spec.key_prefix)).values():
                await self._handle(envelope)
        for spec in specs:
            self._consumers.append(await self._ctx.bus.consume(spec, self._handle))
        # No plan before every family is caught up: a partial state would render a config
        # without some peers or VIPs, i.e. withdraw routes nobody asked to withdraw.
        await asyncio.gather(*(consumer.idle.wait() for consumer in self._consumers))
        readiness.set("replayed")
        self._loop = asyncio.create_task(self._run(), name="bgp-speaker:reconcile")

    async def stop(self) -> None:
        self._stopping = True
        for consumer in self._consumers:
            await consumer.stop()
        if self._loop is not None:
            await cancel_and_wait([self._loop], self._log)
        if self._s.on_shutdown == "withdraw":
            await self._withdraw_all()

    async def _seed_emitted(self) -> None:
        """Learn what this node last said about each route and each object it checked, so a
        restart re-emits nothing that did not change and continues the generations."""
        state = await self._ctx.bus.replay(c.Family.ROUTE, (self._node,))
        for envelope in state.values():
            event = envelope.event
            if isinstance(event, c.RouteAnnounced):
                self._emitted[event.vip] = _Emitted(True, tuple(event.peers), event.generation)
                # BIRD still announces it (or the first reconcile withdraws it with a reason).
                self._route_state[event.vip] = a.RouteState(True)
            elif isinstance(event, c.RouteWithdrawn):
                self._emitted[event.vip] = _Emitted(False, (event.reason,), event.generation)
        # What the previous run said about sessions counts as just said: the periodic report
        # resends it (or the first poll corrects it at once if a session moved meanwhile).
        now = self._clock()
        sessions = await self._ctx.bus.replay(c.Family.SESSION, (self._node,))
        for envelope in sessions.values():
            status = envelope.event
            if isinstance(status, c.SessionStatus):
                self._said_sessions[status.peer] = _SaidSession(
                    status.state, status.established, status.message, status.generation, now
                )
        admissions = await self._ctx.bus.replay(c.Family.ADMISSION, (COMPONENT,))
        for envelope in admissions.values():
            verdict = envelope.event
            if isinstance(verdict, c.AdmissionAccepted | c.AdmissionRejected):
                slot = (verdict.object.kind, verdict.object.name)
                said = (
                    "ok"
                    if isinstance(verdict, c.AdmissionAccepted)
                    else "|".join(p.reason for p in verdict.problems)
                )
                self._verdicts[slot] = (verdict.observed_generation, said)
                self._admission_gen[slot] = verdict.generation

    # ------------------------------------------------------------------ events in

    async def _handle(self, envelope: Envelope[c.Event]) -> None:
        if not self._latest.offer(envelope):
            return
        event = envelope.event
        if isinstance(event, c.VipAssigned | c.VipReleased):
            before = self._vips.get(event.key())
            self._vips[event.key()] = event
            if isinstance(before, c.VipAssigned):
                for address in before.addresses:
                    self._touched.add(address)
                    if self._assigned[address] == 1:
                        del self._assigned[address]
                    else:
                        self._assigned[address] -= 1
            if isinstance(event, c.VipAssigned):
                for address in event.addresses:
                    self._touched.add(address)
                    self._assigned[address] = self._assigned.get(address, 0) + 1
        elif isinstance(event, c.L4Programmed | c.L4NotReady | c.L4Removed):
            if event.node == self._node:
                self._l4[event.vip] = event
                self._touched.add(event.vip)
        elif isinstance(event, c.PoolDesired | c.PoolDeleted):
            self._pool_events[event.pool] = event
        elif isinstance(event, c.PeerDesired | c.PeerDeleted):
            self._peer_events[event.peer] = event
        else:
            return
        self._dirty.set()

    # ------------------------------------------------------------------ the loop

    async def _run(self) -> None:
        while True:
            try:
                await self.reconcile()
            except asyncio.CancelledError:
                raise
            except Exception:
                self._log.exception("reconcile failed; retrying")
            timeout = self._s.session_poll_seconds
            if self._wake_at is not None:
                timeout = max(0.0, min(timeout, self._wake_at - self._clock()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), timeout=timeout)
            self._dirty.clear()

    async def reconcile(self) -> ApplyResult | None:
        """One level-triggered pass: plan from the whole state, apply, verify, report."""
        # What this node remembers having said must be what the bus stored: a pass whose
        # events were refused (NATS restarting) forgets its news, so the retry says it again
        # instead of finding it already said.
        said = (
            dict(self._emitted),
            dict(self._said_sessions),
            dict(self._verdicts),
            dict(self._admission_gen),
        )
        try:
            return await self._reconcile(self._clock())
        except BaseException:
            self._emitted, self._said_sessions, self._verdicts, self._admission_gen = said
            raise

    async def _reconcile(self, now: float) -> ApplyResult | None:
        problems_out: list[c.Event] = []
        peers = self._plan_peers(problems_out)
        pools = self._plan_pools(problems_out)
        readiness, plan = self._plan_routes(pools, now)
        self._wake_at = plan.wake_at
        result = await self._apply(peers, pools, plan.announced, problems_out)
        if problems_out:
            await self._ctx.bus.publish_many(problems_out)
        if result is None:
            self._sessions_unknown()
        else:
            # The sessions BIRD runs, also when it refused the new config (the old one runs).
            self._update_sessions(result.protocols, await self._bfd_sessions())
        await self._emit_sessions(now)
        if result is None or result.outcome not in ("applied", "unchanged"):
            # BIRD does not run what we planned: keep the old route state, and say nothing
            # about routes until it does.
            await self._notify()
            return result
        self._route_state = plan.state
        self._committed = plan
        self._unplanned = set()
        self._plan_everything = False
        await self._emit_routes(plan, readiness)
        await self._notify()
        return result

    def _plan_routes(
        self, pools: list[PoolConfig], now: float
    ) -> tuple[dict[str, a.Readiness], a.AnnouncePlan]:
        """Readiness and the announce plan, brought up to date from what changed since the
        last pass (the whole state only after a start or a change of pools): at 10,000 VIPs,
        going over all of them on every pass was most of a pass."""
        if self._membership.pools != tuple(pools):
            self._membership = PoolMembership(pools)
            self._plan_everything = True
        hold_down = self._s.hold_down_seconds
        if self._plan_everything or self._committed is None:
            self._readiness = a.vip_readiness(self._assigned.keys(), self._l4, self._membership)
            self._touched = set()
            return self._readiness, a.plan_announcements(
                self._readiness, self._route_state, now, hold_down
            )
        for vip in self._touched:
            readiness = a.readiness_of(
                vip, vip in self._assigned, self._l4.get(vip), self._membership
            )
            if readiness is None:
                self._readiness.pop(vip, None)
            else:
                self._readiness[vip] = readiness
        self._unplanned |= self._touched
        self._touched = set()
        return self._readiness, a.replan_announcements(
            self._readiness, self._committed, self._unplanned, now, hold_down
        )

    async def _notify(self) -> None:
        async with self.reconciled:
            self.reconciles += 1
            self.reconciled.notify_all()

    # ------------------------------------------------------------------ peers and pools

    def _plan_peers(self, out: list[c.Event]) -> list[PeerConfig]:
        for name, event in self._peer_events.items():
            if isinstance(event, c.PeerDeleted) or not peer_applies_to(event, self._node):
                self._good_peers.pop(name, None)
                continue
            refused = self._bird_refused.get(name)
            if refused is not None and refused[0] == event.generation:
                continue
            secret: Secret | None = None
            if event.password is not None:
                secret = self._secrets.read(event.password)
            verdict = validate_peer(event, secret)
            if isinstance(verdict, PeerConfig):
                self._good_peers[name] = verdict
                self._admit(out, "BgpPeer", name, event.generation, None)
            else:
                # The last good version of this peer (if any) keeps running: its session is
                # not torn down by a bad edit.
                self._admit(out, "BgpPeer", name, event.generation, verdict)
        return list(self._good_peers.values())

    def _plan_pools(self, out: list[c.Event]) -> list[PoolConfig]:
        for name, event in self._pool_events.items():
            if isinstance(event, c.PoolDeleted):
                good = self._good_pools.pop(name, None)
                if good is not None:
                    self._retired_pools[name] = good
                continue
            self._retired_pools.pop(name, None)
            verdict = validate_pool(event)
            if isinstance(verdict, PoolConfig):
                self._good_pools[name] = verdict
                self._admit(out, "VipPool", name, event.generation, None)
            else:
                self._admit(out, "VipPool", name, event.generation, verdict)
        # A deleted pool's allocations live on until released (catalogue: pool.deleted), so its
        # prefixes stay exportable while an assigned VIP lies in them.
        assigned = self._assigned.keys()
        for name, pool in list(self._retired_pools.items()):
            if not any(pool.contains(vip) for vip in assigned):
                del self._retired_pools[name]
        return [*self._good_pools.values(), *self._retired_pools.values()]

    def _admit(
        self,
        out: list[c.Event],
        kind: str,
        name: str,
        generation: int,
        problems: list[c.Problem] | None,
    ) -> None:
        verdict = "ok" if problems is None else "|".join(p.reason for p in problems)
        if self._verdicts.get((kind, name)) == (generation, verdict):
            return
        self._verdicts[(kind, name)] = (generation, verdict)
        ref = c.ObjectRef(kind=kind, namespace=c.CLUSTER_SCOPE, name=name)
        gen = self._gen.next(self._admission_gen.get((kind, name)))
        self._admission_gen[(kind, name)] = gen
        if problems is None:
            out.append(
                c.AdmissionAccepted(
                    generation=gen, component=COMPONENT, object=ref, observed_generation=generation
                )
            )
            return
        for problem in problems:
            metrics.REJECTIONS.labels(kind, problem.reason).inc()
        self._log.warning(
            "rejected",
            kind=kind,
            name=name,
            generation=generation,
            problems=[f"{p.reason} at {p.field}: {p.message}" for p in problems],
        )
        out.append(
            c.AdmissionRejected(
                generation=gen,
                component=COMPONENT,
                object=ref,
                observed_generation=generation,
                problems=problems,
            )
        )

    # ------------------------------------------------------------------ BIRD

    def _target(
        self, peers: list[PeerConfig], pools: list[PoolConfig], routes: frozenset[str]
    ) -> BirdTarget:
        desired = BirdDesired(
            node=self._node,
            router_id=self._s.router_id,
            peers=tuple(peers),
            pools=tuple(pools),
            routes=routes,
        )
        return BirdTarget(
            config_text=render(desired),
            static_routes=frozenset(host_prefix(v) for v in routes),
            bgp_protocols=frozenset(peer_protocol_name(p.name) for p in peers),
        )

    async def _apply(
        self,
        peers: list[PeerConfig],
        pools: list[PoolConfig],
        routes: frozenset[str],
        out: list[c.Event],
    ) -> ApplyResult | None:
        now = self._clock()
        thorough = now - self._thorough_at >= self._s.resync_seconds
        try:
            result = await self._applier.apply(self._target(peers, pools, routes), thorough)
            if result.outcome == "refused":
                result = await self._isolate_refusal(result, peers, pools, routes, out)
        except BirdUnavailable as exc:
            metrics.APPLIES.labels("unavailable").inc()
            if self._bird_ok is not False:
                # Once per outage: the loop retries every poll interval.
                self._log.error(
                    "BIRD is unreachable; not ready. BGP_SPEAKER_BIRD_SOCKET must name the "
                    "control socket of the BIRD this node runs (bird -s ...), and "
                    "BGP_SPEAKER_BIRD_CONFIG the file it was started with (bird -c ...)",
                    error=str(exc),
                )
            self._bird_ok = False
            self._ctx.readiness.set("bird", False)
            return None
        metrics.APPLIES.labels(result.outcome).inc()
        metrics.APPLY_SECONDS.observe(result.seconds)
        self.last_apply = result
        if result.outcome in ("applied", "unchanged"):
            if thorough:
                self._thorough_at = now
            if self._bird_ok is not True:
                self._log.info("BIRD answers", socket=self._s.bird_socket)
            self._bird_ok = True
            self._ctx.readiness.set("bird")
            self._applied_peers = {p.name: p for p in peers}
            if result.outcome == "applied":
                self._log.info(
                    "BIRD reconfigured",
                    routes=len(routes),
                    peers=len(peers),
                    s=round(result.seconds, 4),
                    **{f"{k}_s": round(v, 4) for k, v in result.steps.items()},
                )
        else:
            self._log.error(
                "BIRD did not take the config; the previous one keeps running",
                outcome=result.outcome,
                bird=result.message,
            )
        return result

    async def _isolate_refusal(
        self,
        refused: ApplyResult,
        peers: list[PeerConfig],
        pools: list[PoolConfig],
        routes: frozenset[str],
        out: list[c.Event],
    ) -> ApplyResult:
        """BIRD refused a config our validation passed. If the new or changed peers are the
        cause, they are rejected (with BIRD's words) and everything else goes ahead."""
        changed = [p for p in peers if self._applied_peers.get(p.name) != p]
        if not changed:
            return refused
        kept = [self._applied_peers.get(p.name, p) for p in peers]
        kept = [p for p in kept if p not in changed]
        retry = await self._applier.apply(self._target(kept, pools, routes))
        if retry.outcome not in ("applied", "unchanged"):
            return refused
        for peer in changed:
            self._bird_refused[peer.name] = (peer.generation, refused.message)
            previous = self._applied_peers.get(peer.name)
            if previous is not None:
                self._good_peers[peer.name] = previous
            else:
                self._good_peers.pop(peer.name, None)
            problem = c.Problem(
                reason="BirdRefusedConfig",
                field="spec",
                message=f"BIRD refused the configuration of this peer: {refused.message}"[:4096],
            )
            self._admit(out, "BgpPeer", peer.name, peer.generation, [problem])
        return retry

    # ------------------------------------------------------------------ sessions and routes

    async def _bfd_sessions(self) -> dict[str, str]:
        if not any(p.bfd for p in self._applied_peers.values()):
            return {}
        try:
            return await self._bird.bfd_sessions()
        except BirdUnavailable:
            return {}

    def _session(
        self, peer: PeerConfig, proto: ProtocolStatus | None, bfd: dict[str, str]
    ) -> SessionStatus:
        where = f"session to {peer.address} AS{peer.peer_asn}"
        if proto is None:
            return SessionStatus(peer.name, False, ABSENT, f"{where}: not configured in BIRD")
        bfd_state = (bfd.get(peer.address) or "Absent") if peer.bfd else None
        since = _rfc3339(proto.since)
        if proto.established:
            message = f"{where} established" + (f"; BFD {bfd_state}" if peer.bfd else "")
            return SessionStatus(peer.name, True, "Established", message, since, bfd_state)
        state = proto.bgp_state
        error = proto.last_error
        message = f"{where} not established: BGP state {state}" + (
            f", last error: {error}" if error else ""
        )
        if peer.bfd and bfd_state != "Up":
            message += (
                f"; BFD is on for this peer and its BFD session is {bfd_state}: BIRD does not "
                "bring the session up while BFD is down, so the peer must run BFD too"
            )
        if peer.password is not None and not error.startswith(("Received", "BGP Error")):
            message += (
                "; the peer's MD5 password must match: with different TCP MD5 keys the kernel "
                "drops every segment and the session never opens"
            )
        return SessionStatus(peer.name, False, state, message[:4096], since, bfd_state)

    def _update_sessions(self, protocols: list[ProtocolStatus], bfd: dict[str, str]) -> None:
        by_protocol = {p.name: p for p in protocols}
        self._set_sessions(
            {
                peer.name: self._session(peer, by_protocol.get(peer_protocol_name(peer.name)), bfd)
                for peer in self._applied_peers.values()
            }
        )

    def _sessions_unknown(self) -> None:
        self._set_sessions(
            {
                peer.name: SessionStatus(
                    peer.name,
                    False,
                    UNKNOWN,
                    f"session to {peer.address} AS{peer.peer_asn}: BIRD's control socket "
                    f"{self._s.bird_socket} does not answer, so the session cannot be read "
                    "(BIRD stopped or restarting?)",
                )
                for peer in self._applied_peers.values()
            }
        )

    def _set_sessions(self, sessions: dict[str, SessionStatus]) -> None:
        for name, status in sessions.items():
            old = self._sessions.get(name)
            if old is None or old.state != status.state:
                log = self._log.info if status.established else self._log.warning
                log("BGP session state", peer=name, state=status.state, detail=status.message)
                if old is not None:
                    metrics.SESSION_STATE.labels(name, old.state).set(0)
            metrics.SESSION_STATE.labels(name, status.state).set(1)
            self._state_labels.setdefault(name, set()).add(status.state)
            metrics.SESSION_ESTABLISHED.labels(name).set(1 if status.established else 0)
            if status.bfd is not None:
                metrics.BFD_UP.labels(name).set(1 if status.bfd == "Up" else 0)
            elif old is not None and old.bfd is not None:
                metrics.BFD_UP.remove(name)
        for gone in set(self._sessions) - set(sessions):
            old = self._sessions[gone]
            metrics.SESSION_ESTABLISHED.remove(gone)
            for state in self._state_labels.pop(gone, {old.state}):
                metrics.SESSION_STATE.remove(gone, state)
            if old.bfd is not None:
                metrics.BFD_UP.remove(gone)
        self._sessions = sessions

    async def _emit_sessions(self, now: float) -> None:
        """session.status per peer of this node: at once when a session comes up, goes down,
        appears or goes away; moves between connecting states and new error texts with the
        periodic report (every BGP_SPEAKER_SESSION_REPORT_SECONDS), which also re-sends
        unchanged states so that the state stays fresh."""
        out: list[c.Event] = []
        every = self._s.session_report_seconds
        current = dict(self._sessions)
        for name, last in self._said_sessions.items():
            # Gone only when no longer wanted here (not merely unread: BIRD down at start).
            wanted = name in self._good_peers or name in self._applied_peers
            if name not in current and not wanted and last.state != REMOVED:
                current[name] = SessionStatus(
                    name,
                    False,
                    REMOVED,
                    "the peer was deleted or no longer selects this node; no session",
                )
        for name, status in sorted(current.items()):
            said = self._said_sessions.get(name)
            if said is not None:
                moved = said.state != status.state or said.established != status.established
                quiet = said.state in CONNECTING and status.state in CONNECTING
                if not (moved and not quiet) and now - said.at < every:
                    continue
            gen = self._gen.next(said.generation if said else None)
            out.append(
                c.SessionStatus(
                    generation=gen,
                    node=self._node,
                    peer=name,
                    state=status.state,
                    established=status.established,
                    message=status.message,
                    since=status.since,
                )
            )
            self._said_sessions[name] = _SaidSession(
                status.state, status.established, status.message, gen, now
            )
        if out:
            await self._ctx.bus.publish_many(out)

    def session_status(self, peer: str) -> SessionStatus | None:
        return self._sessions.get(peer)

    def _established_peers(self, family: int) -> tuple[str, ...]:
        return tuple(
            sorted(
                name
                for name, status in self._sessions.items()
                if status.established and self._applied_peers[name].family == family
            )
        )

    async def _emit_routes(self, plan: a.AnnouncePlan, readiness: dict[str, a.Readiness]) -> None:
        out: list[c.Event] = []
        announced = plan.announced
        metrics.ANNOUNCED.set(len(announced))
        established = {family: self._established_peers(family) for family in (4, 6)}
        for vip in sorted(plan.state.keys() | readiness.keys() | self._emitted.keys()):
            before = self._emitted.get(vip)
            if vip in announced:
                peers = established[parse_address(vip).version]
                if before is not None and before.announced and before.detail == peers:
                    continue
                gen = self._gen.next(before.generation if before else None)
                out.append(
                    c.RouteAnnounced(
                        generation=gen,
                        node=self._node,
                        vip=vip,
                        prefix=host_prefix(vip),
                        peers=list(peers),
                    )
                )
                self._emitted[vip] = _Emitted(True, peers, gen)
                continue
            reason = (
                plan.reasons.get(vip)
                or (readiness[vip].reason if vip in readiness else a.RELEASED)
                or a.NOT_PROGRAMMED
            )
            was_announced = before is not None and before.announced
            # Withdrawals are news only for a route that was out; a VIP outside every pool is
            # an error the owner must see even if it was never announced.
            if not was_announced and reason != a.OUTSIDE_POOLS:
                continue
            if before is not None and not before.announced and before.detail == (reason,):
                continue
            if reason == a.OUTSIDE_POOLS:
                self._log.error(
                    "VIP lies outside every pool; not announced",
                    vip=vip,
                    pools=sorted(self._good_pools),
                )
            gen = self._gen.next(before.generation if before else None)
            out.append(
                c.RouteWithdrawn(
                    generation=gen,
                    node=self._node,
                    vip=vip,
                    prefix=host_prefix(vip),
                    reason=reason,
                )
            )
            self._emitted[vip] = _Emitted(False, (reason,), gen)
        if out:
            await self._ctx.bus.publish_many(out)

    async def _withdraw_all(self) -> None:
        peers = list(self._applied_peers.values())
        try:
            result = await self._applier.apply(
                self._target(peers, [*self._good_pools.values()], frozenset())
            )
        except BirdUnavailable as exc:
            self._log.error("cannot withdraw on shutdown: BIRD unreachable", error=str(exc))
            return
        if result.outcome not in ("applied", "unchanged"):
            self._log.error("withdraw on shutdown refused by BIRD", bird=result.message)
            return
        out: list[c.Event] = []
        for vip, emitted in sorted(self._emitted.items()):
            if emitted.announced:
                gen = self._gen.next(emitted.generation)
                out.append(
                    c.RouteWithdrawn(
                        generation=gen,
                        node=self._node,
                        vip=vip,
                        prefix=host_prefix(vip),
                        reason=a.SHUTDOWN,
                    )
                )
                self._emitted[vip] = _Emitted(False, (a.SHUTDOWN,), gen)
        if out:
            await self._ctx.bus.publish_many(out)
        self._log.info("withdrew every route on shutdown", routes=len(out))


def _rfc3339(bird_time: str) -> str | None:
    """BIRD's ``iso long`` time (the local time of the node, which BIRD shares) as RFC 3339 UTC."""
    try:
        local = datetime.fromisoformat(bird_time)
    except ValueError:
        return None
    return local.astimezone(UTC).isoformat().replace("+00:00", "Z")

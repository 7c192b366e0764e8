"""The lifecycle every service shares.

``run_service`` sets up logs, tracing, the admin port and the bus (streams declared), starts the
service's app, waits for SIGTERM or SIGINT, then stops the app (its consumers finish the messages
they hold and ack them), drains the NATS connection and exits: nothing in flight is lost.
"""

from __future__ import annotations

import asyncio
import faulthandler
import gc
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

import structlog
from ingress_events.bus import Bus

from .admin import AdminServer, Readiness
from .logging import setup_logging
from .settings import ServiceSettings
from .tracing import setup_tracing

S = TypeVar("S", bound=ServiceSettings)

GC_THRESHOLDS = (50_000, 20, 20)
"""CPython's default (700, 10, 10) starts a young collection every 700 allocations, and their
count starts full ones that walk the whole heap: with 10,000 events held, collections made an
l4-programmer derive pass from scratch 2x slower (bench/l4-programmer/derive.py). Young
collections every 50,000 allocations and full ones rarer; this code makes little cyclic
garbage, so memory stays about the same."""


GC_PAUSE_LOG_MS = 20.0
"""A collection at least this long is logged: a full one walks every object the service holds,
and the loop serves nothing meanwhile, so it shows up as one slow change."""


def watch_gc_pauses(
    report: Callable[[int, float, int], None], min_ms: float = GC_PAUSE_LOG_MS
) -> Callable[[], None]:
    """Call ``report(generation, milliseconds, collected)`` after each collection that took at
    least ``min_ms``; returns the function that stops watching."""
    started: list[float] = []

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[:] = [time.perf_counter()]
        elif started:
            ms = (time.perf_counter() - started[0]) * 1000
            if ms >= min_ms:
                report(info["generation"], ms, info["collected"])

    gc.callbacks.append(callback)
    return lambda: gc.callbacks.remove(callback)


@dataclass
class ServiceContext(Generic[S]):
    name: str
    settings: S
    bus: Bus
    readiness: Readiness
    log: structlog.stdlib.BoundLogger
    stopping: asyncio.Event = field(default_factory=asyncio.Event)


class App(Protocol):
    """What a service's ``app.py`` builds: started once, stopped once. ``start`` returns once the
    app is running (consumers bound, state replayed); ``stop`` returns once in-flight work is done.
    """

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


async def serve(
    name: str,
    settings: S,
    factory: Callable[[ServiceContext[S]], App],
    stop: asyncio.Event,
    freeze_heap: bool = False,
) -> int:
    """Run one service until ``stop`` is set (by SIGTERM / SIGINT under :func:`run_service`).
    ``freeze_heap``: once started, move everything start-up built (the replayed state, most of
    the heap) out of the collector's reach (``gc.freeze``); for a process of its own."""
    log = setup_logging(name, settings.log_level, settings.log_format)
    provider = setup_tracing(name, settings.instance, settings.otlp_endpoint)
    readiness = Readiness()
    readiness.require("started")
    admin = await AdminServer(readiness, settings.admin_host, settings.admin_port).start()
    log.info("starting", admin_port=admin.port, nats=settings.nats_url, cluster=settings.cluster)
    bus = await Bus.connect(settings.bus_settings(name))
    readiness.probe("nats-connected", lambda: bus.connected)
    await bus.ensure_streams()
    ctx = ServiceContext(
        name=name, settings=settings, bus=bus, readiness=readiness, log=log, stopping=stop
    )
    app = factory(ctx)
    unwatch = watch_gc_pauses(
        lambda generation, ms, collected: log.warning(
            "long gc pause", generation=generation, ms=round(ms, 1), collected=collected
        )
    )
    try:
        await app.start()
        if freeze_heap:
            gc.collect()
            gc.freeze()
        readiness.set("started")
        log.info("ready" if readiness.ready else "started", unmet=readiness.unmet())
        await stop.wait()
        log.info("stopping")
        readiness.set("started", False)
        try:
            await asyncio.wait_for(app.stop(), timeout=settings.shutdown_grace_seconds)
        except TimeoutError:
            log.error(
                "app did not stop within the grace period",
                grace_seconds=settings.shutdown_grace_seconds,
            )
            return 1
    finally:
        unwatch()
        await bus.close()
        await admin.stop()
        provider.shutdown()
    log.info("stopped")
    return 0


DUMP_TASKS = signal.SIGUSR2
"""Print every asyncio task's stack to stderr (a service that waits on something forever)."""
DUMP_THREADS = signal.SIGUSR1
"""Print every thread's Python stack to stderr, even while the event loop is blocked."""


def _await_chain(task: asyncio.Task[object]) -> list[str]:
    """Where a task waits, down the chain of awaits (``Task.print_stack`` shows only the
    outermost coroutine, which is rarely the one stuck)."""
    lines = []
    coro: object = task.get_coro()
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            code = frame.f_code
            lines.append(f"    {code.co_filename}:{frame.f_lineno} in {code.co_name}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return lines


def dump_tasks() -> None:
    tasks = asyncio.all_tasks()
    out = [f"--- {len(tasks)} asyncio tasks (SIGUSR2)"]
    for task in sorted(tasks, key=lambda t: t.get_name()):
        out += [f"  task {task.get_name()}:", *_await_chain(task)]
    print("\n".join(out), file=sys.stderr, flush=True)


def run_service(name: str, settings: S, factory: Callable[[ServiceContext[S]], App]) -> int:
    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        # What a stuck service was doing, for whoever has to kill it (the local runner sends
        # both before SIGKILL, so the stacks end up in the service's log).
        loop.add_signal_handler(DUMP_TASKS, dump_tasks)
        faulthandler.register(DUMP_THREADS, all_threads=True)
        return await serve(name, settings, factory, stop, freeze_heap=True)

    gc.set_threshold(*GC_THRESHOLDS)
    return asyncio.run(main())

"""bench/ingress-watcher: initial sync of 10,000 Ingresses and 100,000 endpoints, then single
object changes, through the real kubernetes-asyncio client and a real nats-server.

Three processes, so that each one's memory is its own:

* the API server: the project's local API server test double (services/ingress-watcher/tests/
  kube_apiserver.py, the real list/watch wire protocol), filled with ``--ingresses`` Ingresses
  (one host each, in namespaces of 100) with one Service and one EndpointSlice of
  ``--endpoints / --ingresses`` endpoints each, the IngressClass, a Zone and one Domain per
  namespace; its history is compacted after the fill, as etcd's would be;
* the watcher: ``WatcherApp`` with the kubernetes source (status writing off), publishing to
  the bus; it reports when its initial sync is published (every event acknowledged by
  JetStream) and its peak resident memory (VmHWM);
* this driver: starts nats-server and both, checks the streams hold every event, then makes
  ``--changes`` changes (one EndpointSlice endpoint's ``ready`` flips) one at a time and times
  each from the API server's write to the event's arrival on a plain NATS subscription
  (CLOCK_MONOTONIC is shared by the processes).

    .venv/bin/python bench/ingress-watcher/run.py [--ingresses 10000] [--endpoints 100000]
                                                  [--changes 300] [--no-report]

Prints the figures and writes bench/ingress-watcher/report.md (the figures section; the rest of
the report is kept).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
ROOT = HERE.parents[2]
REPORT = HERE.with_name("report.md")
FIGURES_START = "<!-- figures: written by bench/ingress-watcher/run.py -->"
FIGURES_END = "<!-- end of figures -->"
PER_NAMESPACE = 100
ROOT_SUBJECT = "ingress"


# --------------------------------------------------------------------------- the API server


def objects(ingresses: int, endpoints: int) -> list[dict[str, Any]]:
    per_slice = max(endpoints // ingresses, 1)
    out: list[dict[str, Any]] = [
        {
            "kind": "IngressClass",
            "metadata": {
                "name": "ours",
                "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"},
            },
            "spec": {"controller": "ingress-domain.io/ingress-controller"},
        },
        {
            "kind": "Zone",
            "metadata": {"name": "bench", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"zone": "bench.example.com", "namespaces": ["team-*"]},
        },
    ]
    for ns_index in range((ingresses + PER_NAMESPACE - 1) // PER_NAMESPACE):
        ns = f"team-{ns_index}"
        out.append(
            {
                "kind": "Domain",
                "metadata": {
                    "name": "apps",
                    "namespace": ns,
                    "creationTimestamp": "2026-01-02T00:00:00Z",
                },
                "spec": {"host": f"{ns}.bench.example.com"},
            }
        )
    for i in range(ingresses):
        ns, name = f"team-{i // PER_NAMESPACE}", f"app-{i % PER_NAMESPACE}"
        out.append(
            {
                "kind": "Service",
                "metadata": {"name": name, "namespace": ns},
                "spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
            }
        )
        out.append(endpoint_slice(i, per_slice, ready_first=True))
        out.append(ingress(i))
    return out


def ingress(i: int, extra_path: bool = False) -> dict[str, Any]:
    """Ingress ``i``; ``extra_path`` adds /v2 (a change of its domain.desired)."""
    ns, name = f"team-{i // PER_NAMESPACE}", f"app-{i % PER_NAMESPACE}"
    paths = ["/", "/v2"] if extra_path else ["/"]
    return {
        "kind": "Ingress",
        "metadata": {
            "name": name,
            "namespace": ns,
            "creationTimestamp": "2026-01-03T00:00:00Z",
            "generation": 2 if extra_path else 1,
        },
        "spec": {
            "rules": [
                {
                    "host": f"{name}.{ns}.bench.example.com",
                    "http": {
                        "paths": [
                            {
                                "path": path,
                                "pathType": "Prefix",
                                "backend": {"service": {"name": name, "port": {"number": 80}}},
                            }
                            for path in paths
                        ]
                    },
                }
            ]
        },
    }


def endpoint_slice(i: int, per_slice: int, *, ready_first: bool) -> dict[str, Any]:
    ns, name = f"team-{i // PER_NAMESPACE}", f"app-{i % PER_NAMESPACE}"
    return {
        "kind": "EndpointSlice",
        "addressType": "IPv4",
        "metadata": {
            "name": f"{name}-abcde",
            "namespace": ns,
            "labels": {"kubernetes.io/service-name": name},
        },
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [
            {
                "addresses": [f"10.{(i >> 8) & 255}.{i & 255}.{e}"],
                "conditions": {"ready": ready_first or e != 0},
                "nodeName": f"node-{e % 8}",
                "targetRef": {"kind": "Pod", "namespace": ns, "name": f"{name}-{e}"},
            }
            for e in range(per_slice)
        ],
    }


async def serve_apiserver(ingresses: int, endpoints: int) -> None:
    import importlib

    sys.path.insert(0, str(ROOT / "services/ingress-watcher/tests"))
    double: Any = importlib.import_module("kube_apiserver")  # the tests' API server double
    server = await double.LocalApiServer(bookmark_interval=1.0).start()
    for obj in objects(ingresses, endpoints):
        await server.put(obj)
    server.compact()  # etcd keeps a bounded history; watches start from the list's version
    per_slice = max(endpoints // ingresses, 1)
    print(json.dumps({"url": server.url, "objects": server.rv - 100}), flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    ready: dict[int, bool] = {}
    extra: dict[int, bool] = {}
    while line := await reader.readline():
        command = line.split()
        i = int(command[1])
        if command[0] == b"change":
            ready[i] = not ready.get(i, True)
            obj = endpoint_slice(i, per_slice, ready_first=ready[i])
        elif command[0] == b"change-ingress":
            extra[i] = not extra.get(i, False)
            obj = ingress(i, extra_path=extra[i])
        else:
            continue
        started = time.monotonic()
        await server.put(obj)
        print(json.dumps({"changed": i, "at": started}), flush=True)
    await server.stop()


# --------------------------------------------------------------------------- the watcher


def vm_hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def vm_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def run_watcher(api_url: str, nats_url: str, profile: str | None) -> None:
    import logging

    import structlog
    from ingress_events.bus import Bus, BusSettings, StreamSettings
    from ingress_events.subjects import Subjects
    from ingress_runtime import Readiness, ServiceContext
    from ingress_runtime.service import GC_THRESHOLDS
    from ingress_watcher.app import WatcherApp
    from ingress_watcher.settings import WatcherSettings

    gc.set_threshold(*GC_THRESHOLDS)  # as run_service sets it for every service
    logging.basicConfig(level=logging.WARNING)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    bus = await Bus.connect(
        BusSettings(
            servers=[nats_url],
            source="//ingress-domain/bench/ingress-watcher",
            subjects=Subjects(ROOT_SUBJECT),
            streams=StreamSettings(replicas=1),
        )
    )
    settings = WatcherSettings.model_validate(
        {"source": "kubernetes", "kube_api_url": api_url, "write_status": False}
    )
    ctx = ServiceContext(
        "ingress-watcher", settings, bus, Readiness(), structlog.get_logger("ingress-watcher")
    )
    app = WatcherApp(ctx)
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    started = time.monotonic()
    await app.start()
    await app.synced.wait()
    synced = time.monotonic()
    if profiler is not None and profile:
        profiler.disable()
        profiler.dump_stats(profile)
    print(
        json.dumps(
            {
                "synced_s": synced - started,
                "events": len(app.published),
                "rss_mb": vm_rss_mb(),
                "hwm_mb": vm_hwm_mb(),
            }
        ),
        flush=True,
    )
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    await reader.readline()  # the driver is done
    print(
        json.dumps(
            {"hwm_mb": vm_hwm_mb(), "reconciles": app.reconciles, "published": app.events_published}
        ),
        flush=True,
    )
    await app.stop()
    await bus.close()


# --------------------------------------------------------------------------- the driver


class Child:
    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=ROOT,
            text=True,
        )

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    async def receive(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), timeout)
        if not line:
            raise RuntimeError(f"{self.proc.args!r} exited with {self.proc.wait()}")
        data: dict[str, Any] = json.loads(line)
        return data

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def drive(args: argparse.Namespace) -> dict[str, Any]:
    import nats
    from ingress_events.bus import Bus, BusSettings, StreamSettings
    from ingress_events.catalogue import Family
    from ingress_events.subjects import Subjects
    from ingress_testkit.nats_server import NatsServer, find_nats_server

    binary = find_nats_server()
    if binary is None:
        raise SystemExit("nats-server is not installed: run scripts/setup")
    server = NatsServer(binary).start()
    apiserver = watcher = None
    try:
        subjects = Subjects(ROOT_SUBJECT)
        bus = await Bus.connect(
            BusSettings(servers=[server.url], subjects=subjects, streams=StreamSettings(replicas=1))
        )
        await bus.ensure_streams()
        fill_started = time.monotonic()
        apiserver = Child("apiserver", str(args.ingresses), str(args.endpoints))
        hello = await apiserver.receive(600)
        fill_s = time.monotonic() - fill_started
        watcher_started = time.monotonic()
        watcher_args = ["watcher", hello["url"], server.url]
        if args.profile:
            watcher_args.append(args.profile)
        watcher = Child(*watcher_args)
        sync = await watcher.receive(600)
        sync_wall = time.monotonic() - watcher_started
        stored = {
            family.value: (await bus._js.stream_info(subjects.stream(family))).state.messages
            for family in (Family.DOMAIN, Family.BACKEND, Family.ADMISSION)
        }
        # One change at a time: the time from the API server's write to the event on the bus.
        nc = await nats.connect(server.url)
        arrived: asyncio.Queue[tuple[str, float]] = asyncio.Queue()

        async def on_message(msg: Any) -> None:
            arrived.put_nowait((msg.subject, time.monotonic(), _stamped_monotonic(msg)))

        await nc.subscribe(subjects.family_wildcard(Family.BACKEND), cb=on_message)
        await nc.subscribe(subjects.family_wildcard(Family.DOMAIN), cb=on_message)
        await nc.flush()

        watcher_parts: list[float] = []

        async def measure(command: str, subject_of: Any) -> list[float]:
            out: list[float] = []
            for n in range(args.changes):
                i = (n * 7919) % args.ingresses
                apiserver.send(f"{command} {i}")
                changed = await apiserver.receive(30)
                while True:
                    got, at, stamped = await asyncio.wait_for(arrived.get(), args.change_timeout)
                    if got == subject_of(i):
                        break
                out.append((at - changed["at"]) * 1000)
                watcher_parts.append((stamped - changed["at"]) * 1000)
                await asyncio.sleep(0.02)
            return out

        latencies = await measure(
            "change",
            lambda i: subjects.for_key(
                Family.BACKEND, (f"team-{i // PER_NAMESPACE}", f"app-{i % PER_NAMESPACE}", "80")
            ),
        )
        ingress_latencies = await measure(
            "change-ingress",
            lambda i: subjects.for_key(
                Family.DOMAIN,
                (f"app-{i % PER_NAMESPACE}.team-{i // PER_NAMESPACE}.bench.example.com",),
            ),
        )
        await nc.close()
        watcher.send("done")
        final = await watcher.receive(60)
        watcher.stop()
        # A restart (a rolling update): the bus holds everything, and the new process reads it
        # back before it plans. Its peak is what a pod's memory limit must allow.
        restarted_at = time.monotonic()
        watcher = Child("watcher", hello["url"], server.url)
        restart = await watcher.receive(600)
        restart["wall_s"] = time.monotonic() - restarted_at
        watcher.send("done")
        restart_final = await watcher.receive(60)
        restart["published_after"] = restart_final["published"]
        await bus.close()
    finally:
        for child in (watcher, apiserver):
            if child is not None:
                child.stop()
        server.cleanup()
    return {
        "fill_s": fill_s,
        "apiserver_objects": hello["objects"],
        "synced_s": sync["synced_s"],
        "sync_wall_s": sync_wall,
        "events": sync["events"],
        "stored": stored,
        "rss_after_sync_mb": sync["rss_mb"],
        "hwm_after_sync_mb": sync["hwm_mb"],
        "hwm_mb": final["hwm_mb"],
        "reconciles": final["reconciles"],
        "restart_synced_s": restart["synced_s"],
        "restart_hwm_mb": restart_final["hwm_mb"],
        "restart_published": restart["published_after"],
        "changes": len(latencies),
        "p50_ms": percentile(latencies, 0.50),
        "p90_ms": percentile(latencies, 0.90),
        "p99_ms": percentile(latencies, 0.99),
        "max_ms": max(latencies),
        "mean_ms": statistics.fmean(latencies),
        "ingress_p50_ms": percentile(ingress_latencies, 0.50),
        "ingress_p90_ms": percentile(ingress_latencies, 0.90),
        "ingress_p99_ms": percentile(ingress_latencies, 0.99),
        "ingress_max_ms": max(ingress_latencies),
        "watcher_p50_ms": percentile(watcher_parts, 0.50),
        "watcher_p99_ms": percentile(watcher_parts, 0.99),
        "watcher_max_ms": max(watcher_parts),
    }


def _stamped_monotonic(msg: Any) -> float:
    """When the watcher encoded the event (its ce-time, wall clock), on this process's
    monotonic clock: the split between the watcher's part and the bus's part of a change."""
    stamped = datetime.fromisoformat(msg.headers["ce-time"].replace("Z", "+00:00")).timestamp()
    return stamped - time.time() + time.monotonic()


def figures(args: argparse.Namespace, r: dict[str, Any], load: str) -> str:
    def met(ok: bool) -> str:
        return "met" if ok else "**not met**"

    command = "    .venv/bin/python bench/ingress-watcher/run.py " + " ".join(
        f"--{k.replace('_', '-')} {v}"
        for k, v in vars(args).items()
        if k in ("ingresses", "endpoints", "changes")
    )
    return "\n".join(
        [
            FIGURES_START,
            f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.node()} "
            f"({os.cpu_count()} cores, Python {platform.python_version()}), load average "
            f"before the run: {load} (the machine is shared with other work).",
            "",
            command,
            "",
            f"Data: {args.ingresses:,} Ingresses, {args.ingresses:,} Services, "
            f"{args.ingresses:,} EndpointSlices holding {args.endpoints:,} endpoints "
            f"({r['apiserver_objects']:,} objects in the API server double, filled in "
            f"{r['fill_s']:.1f} s).",
            "",
            "| figure | target | measured | |",
            "|---|---|---|---|",
            f"| initial sync: watcher start -> every event acknowledged by JetStream "
            f"({r['events']:,} events) | <= 10 s | {r['synced_s']:.2f} s "
            f"({r['sync_wall_s']:.2f} s with process start-up) | {met(r['synced_s'] <= 10)} |",
            f"| watcher peak resident memory (VmHWM, own process) | <= 300 MB | "
            f"{r['hwm_mb']:.0f} MB (after sync: {r['hwm_after_sync_mb']:.0f} MB peak, "
            f"{r['rss_after_sync_mb']:.0f} MB resident) | {met(r['hwm_mb'] <= 300)} |",
            f"| one EndpointSlice change -> its backend.endpoints on the bus, p99 over "
            f"{r['changes']} changes | <= 10 ms | "
            f"{r['p99_ms']:.1f} ms (p50 {r['p50_ms']:.1f}, p90 {r['p90_ms']:.1f}, max "
            f"{r['max_ms']:.1f}) | {met(r['p99_ms'] <= 10)} |",
            f"| one Ingress change (a path added or removed) -> its domain.desired on the bus, "
            f"p99 over {r['changes']} changes | <= 10 ms | "
            f"{r['ingress_p99_ms']:.1f} ms (p50 {r['ingress_p50_ms']:.1f}, p90 "
            f"{r['ingress_p90_ms']:.1f}, max {r['ingress_max_ms']:.1f}) | "
            f"{met(r['ingress_p99_ms'] <= 10)} |",
            f"| a restart against the full bus: sync, peak memory (events it published) | "
            f"<= 10 s, <= 300 MB | {r['restart_synced_s']:.2f} s, {r['restart_hwm_mb']:.0f} MB "
            f"({r['restart_published']} events) | "
            f"{met(r['restart_synced_s'] <= 10 and r['restart_hwm_mb'] <= 300)} |",
            f"| of which the watcher's part (API write -> event encoded, both kinds of change) "
            f"| | p50 {r['watcher_p50_ms']:.1f} ms, p99 {r['watcher_p99_ms']:.1f} ms, max "
            f"{r['watcher_max_ms']:.1f} ms | |",
            "",
            f"Messages in the streams after the sync: {r['stored']}.",
            FIGURES_END,
        ]
    )


def write_report(block: str) -> None:
    if REPORT.exists():
        text = REPORT.read_text()
        if FIGURES_START in text and FIGURES_END in text:
            head, rest = text.split(FIGURES_START, 1)
            tail = rest.split(FIGURES_END, 1)[1]
            REPORT.write_text(head + block + tail)
            return
        REPORT.write_text(text.rstrip() + "\n\n" + block + "\n")
        return
    REPORT.write_text("# bench/ingress-watcher\n\n" + block + "\n")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "apiserver":
        asyncio.run(serve_apiserver(int(sys.argv[2]), int(sys.argv[3])))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "watcher":
        asyncio.run(
            run_watcher(sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else None)
        )
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ingresses", type=int, default=10_000)
    parser.add_argument("--endpoints", type=int, default=100_000)
    parser.add_argument("--changes", type=int, default=300)
    parser.add_argument(
        "--change-timeout", type=float, default=30.0, help="seconds to wait for one change's event"
    )
    parser.add_argument("--profile", help="write a cProfile of the watcher's initial sync here")
    parser.add_argument("--no-report", action="store_true")
    args = parser.parse_args()
    load = Path("/proc/loadavg").read_text().split()[:3]
    result = asyncio.run(drive(args))
    block = figures(args, result, " ".join(load))
    print(block)
    if not args.no_report:
        write_report(block)


if __name__ == "__main__":
    main()

"""End-to-end convergence on the local topology (what ``scripts/run`` starts).

For each level N: a fresh topology is started with N Ingresses already in its manifests (under
one Domain delegated to the namespace, as a platform team sets up once); the cold start is the
time from starting the system to every domain Ready (VIP, DNS, route, L7), taken from the publish
time of the last event that a Ready domain needs (a poll of the bus sees it later: at 10,000
domains one poll takes seconds, so polls are spaced out). Then, one at a time,
a new Ingress is written: the clock stops at the first HTTP 200 by name from the client
namespace (client resolver -> VIP -> ToR route learned over BGP -> L4 -> Envoy -> backend), by a
probe process inside that namespace polling every 5 ms, and the bus says when each stage
happened (the events' publish times). Memory: every process's peak
resident set (VmHWM) at the end of the level.

The samples come in two series on the same system, one after the other:
  * isolated: each Ingress is written ``--pause`` seconds (default 2) after the previous one
    answered, as a team's change meets a quiet system. The target is judged on these.
  * back to back: each Ingress is written as soon as the previous one answered (a change every
    few tenths of a second). Knot 3.2 holds an UPDATE that arrives within a second of the
    previous one until a timer of that one fires (docs/dns-writer.md), so this series shows
    what a zone under continuous churn adds.

    .venv/bin/python bench/e2e/run.py --present 0 1000 10000 --samples 20

Writes bench/e2e/report.md and bench/e2e/convergence.svg. Run as root (network namespaces).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from ingress_events import catalogue as c
from ingress_local.testing import HOSTS, local_system, rows
from ingress_local.topology.system import LocalSystem

HERE = Path(__file__).resolve().parent
TARGET_P99_S = 0.5
TARGET_COLD_S = 60.0
ZONE_HOST = "bench.example.com"
STAGES = ("domain", "vip", "l4", "l7", "dns", "route")


def manifests(names: list[str], *, with_domain: bool) -> str:
    """Ingresses ``<name>.bench.example.com`` in namespace blog, served by blog; with the
    Domain that delegates bench.example.com (and its subdomains) to blog."""
    docs: list[dict[str, Any]] = []
    if with_domain:
        docs.append(
            {
                "apiVersion": "ingress-domain.io/v1alpha1",
                "kind": "Domain",
                "metadata": {
                    "name": "bench",
                    "namespace": "blog",
                    "creationTimestamp": "2026-02-01T00:00:00Z",
                },
                "spec": {"host": ZONE_HOST},
            }
        )
    for name in names:
        path = {
            "path": "/",
            "pathType": "Prefix",
            "backend": {"service": {"name": "blog", "port": {"number": 80}}},
        }
        docs.append(
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "Ingress",
                "metadata": {
                    "name": name,
                    "namespace": "blog",
                    "creationTimestamp": "2026-03-01T00:00:00Z",
                },
                "spec": {"rules": [{"host": f"{name}.{ZONE_HOST}", "http": {"paths": [path]}}]},
            }
        )
    return yaml.safe_dump_all(docs, sort_keys=False)


async def _stage_times(system: LocalSystem, host: str, written: float) -> dict[str, float]:
    """Seconds after ``written`` (wall clock) at which each stage's event was published."""
    assert system.bus is not None and system.plan is not None
    bus, node = system.bus, system.plan.node

    async def first(family: c.Family, key: tuple[str, ...], kind: type[c.Event]) -> Any:
        found = await bus.latest(family, key)
        return found if found is not None and isinstance(found.event, kind) else None

    out: dict[str, float] = {}
    vip_env = await first(c.Family.VIP, ("domain", host), c.VipAssigned)
    pairs: list[tuple[str, Any]] = [
        ("domain", await first(c.Family.DOMAIN, (host,), c.DomainDesired)),
        ("vip", vip_env),
        ("l7", await first(c.Family.L7, (host,), c.L7Applied)),
        ("dns", await first(c.Family.DNS, (host,), c.DnsPublished)),
    ]
    if vip_env is not None:
        vip = vip_env.event.addresses[0]
        pairs.append(("l4", await first(c.Family.L4, (node, vip), c.L4Programmed)))
        pairs.append(("route", await first(c.Family.ROUTE, (node, vip), c.RouteAnnounced)))
    for stage, envelope in pairs:
        if envelope is not None:
            out[stage] = envelope.time.timestamp() - written
    return out


# Runs inside the client namespace for one sample, so that polling costs no process per try
# (a curl through ``ip netns exec`` every 10 ms loaded the 2 cores it measures). It resolves
# through the namespace's resolv.conf (glibc, no cache) and asks over HTTP/1.1, every 5 ms; it
# prints CLOCK_MONOTONIC at the first 200 (one clock for every process on the machine).
PROBE = r"""
import http.client, socket, sys, time
host = sys.argv[1]
print("ready", flush=True)
sys.stdin.readline()
started = time.monotonic()
while time.monotonic() - started < float(sys.argv[2]):
    try:
        address = socket.getaddrinfo(host, 80, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
        conn = http.client.HTTPConnection(address, 80, timeout=2)
        conn.request("GET", "/", headers={"Host": host})
        answer = conn.getresponse()
        body = answer.read().decode("utf-8", "replace")
        conn.close()
        if answer.status == 200 and "service=blog/blog" in body.splitlines():
            print(f"ok {time.monotonic():.6f} {address}", flush=True)
            sys.exit(0)
    except OSError:
        pass
    time.sleep(0.005)
print("timeout", flush=True)
"""


async def one(
    system: LocalSystem, name: str, timeout: float = 120.0
) -> tuple[float, dict[str, float]]:
    """Seconds from writing the Ingress to the first 200 by name through the VIP (DNS and the
    ToR's route checked too), and when each stage's event was published."""
    assert system.plan is not None
    host = f"{name}.{ZONE_HOST}"
    probe = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", system.plan.ns_client, sys.executable, "-c", PROBE, host,
        str(timeout),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert probe.stdin is not None and probe.stdout is not None
    if (await probe.stdout.readline()).strip() != b"ready":
        raise RuntimeError("the probe did not start in the client namespace")
    probe.stdin.write(b"go\n")
    await probe.stdin.drain()
    written, started = time.time(), time.monotonic()
    (system.o.manifests / f"sample-{name}.yaml").write_text(manifests([name], with_domain=False))
    answer = (await probe.stdout.readline()).decode().split()
    await probe.wait()
    if not answer or answer[0] != "ok":
        raise TimeoutError(f"{host}: no 200 after {timeout:.0f} s")
    elapsed, address = float(answer[1]) - started, answer[2]
    # The same path checked by the system's own client: the name, the ToR's route.
    assert system.resolver_a(host) == [address]
    assert f"{address}/32" in system.tor_routes()
    return elapsed, await _stage_times(system, host, written)


async def converge(system: LocalSystem, hosts: list[str], timeout: float) -> tuple[float, float]:
    """Wait until every host is Ready; returns (wall clock of the last event that made a host
    Ready, seconds the last poll took). Each poll replays the bus (seconds at 10,000 domains),
    so polls are spaced at four times their cost: the observer takes at most a fifth of a core
    from the system it measures, and the figure is the events' publish time, not the poll's."""
    deadline = time.monotonic() + timeout
    while True:
        began = time.monotonic()
        found = await rows(system)
        cost = time.monotonic() - began
        if all(h in found and found[h].condition == "Ready" for h in hosts):
            last = await _last_ready_event(system, hosts)
            if last is not None:
                return last, cost
        if time.monotonic() > deadline:
            stuck = [
                f"{h}: {found.get(h)}"
                for h in hosts
                if h not in found or found[h].condition != "Ready"
            ]
            raise TimeoutError(f"{len(stuck)} hosts not Ready: {'; '.join(stuck[:5])}")
        await asyncio.sleep(max(0.3, 4 * cost))


async def _last_ready_event(system: LocalSystem, hosts: list[str]) -> float | None:
    """The latest publish time among the events a Ready row is made of (the VIP, L7 applied,
    DNS published, the first route for the VIP that reached an established peer), over
    ``hosts``; None if no such route is left (a session dropped after the rows were read)."""
    assert system.bus is not None
    bus = system.bus
    vips = {
        e.event.owner.host: e
        for e in (await bus.replay(c.Family.VIP)).values()
        if isinstance(e.event, c.VipAssigned) and e.event.owner.kind == "domain"
    }
    l7 = {e.event.key()[0]: e for e in (await bus.replay(c.Family.L7)).values()}
    dns = {e.event.key()[0]: e for e in (await bus.replay(c.Family.DNS)).values()}
    routes: dict[str, float] = {}
    for e in (await bus.replay(c.Family.ROUTE)).values():
        if isinstance(e.event, c.RouteAnnounced) and e.event.reaches_a_router():
            vip = e.event.key()[1]
            routes[vip] = min(routes.get(vip, float("inf")), e.time.timestamp())
    last = 0.0
    for host in hosts:
        vip = vips[host]
        announced = [routes[a] for a in vip.event.addresses if a in routes]
        if not announced:
            return None
        first_route = min(announced)
        when = [vip.time.timestamp(), l7[host].time.timestamp(), dns[host].time.timestamp()]
        last = max(last, first_route, *when)
    return last


def _peak_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds the process has used so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return float("nan")
    # After the command name: state is field 3 of stat(5), utime and stime are 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pids(system: LocalSystem) -> dict[str, int]:
    children = {name: child for name, child in system.services.items()}
    for child in system.infra:
        children.setdefault(child.name, child)
    if system.nats is not None:
        children["nats-server"] = system.nats
    return {
        name: child.proc.pid
        for name, child in sorted(children.items())
        if child.proc is not None and child.proc.poll() is None
    }


def memory(system: LocalSystem) -> dict[str, float]:
    return {name: _peak_mb(pid) for name, pid in _pids(system).items()}


def cpu(system: LocalSystem) -> dict[str, float]:
    return {name: _cpu_s(pid) for name, pid in _pids(system).items()}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def run_level(
    present: int, samples: int, pause: float, pool: str, logs: Path | None
) -> dict[str, Any]:
    names = [f"p{i}" for i in range(present)]
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        t0, t0_wall = time.monotonic(), time.time()
        async with local_system(
            Path(tmp),
            prepare=lambda m: (m / "present.yaml").write_text(manifests(names, with_domain=True)),
            vip_pool=pool,
            extra_env={"INGRESS_WATCHER_POLL_INTERVAL_SECONDS": "0.1"},
            sync_interval=0.1,
        ) as system:
            started = time.monotonic() - t0
            hosts = [*HOSTS, *(f"{n}.{ZONE_HOST}" for n in names)]
            converged, poll = await converge(system, hosts, timeout=3600)
            # Taken when the poll saw it: the CPU each process used to get there, and a little
            # after (polls are spaced out at 10,000; the system is idle once converged).
            cold_cpu = cpu(system)
            cold, seen = converged - t0_wall, time.monotonic() - t0
            print(
                f"[{present}] started in {started:.1f} s, converged in {cold:.1f} s "
                f"(seen by a poll at {seen:.1f} s; one poll took {poll:.1f} s)",
                flush=True,
            )
            isolated = await series(system, f"s{present}i", samples, pause)
            back_to_back = await series(system, f"s{present}b", samples, 0.0)
            peaks = memory(system)
            if logs is not None:
                # Every process's log, to find what a slow sample met (the printed sample
                # lines carry their wall-clock time).
                for child in [*system.services.values(), *system.infra]:
                    if child.log_path.exists():
                        target = logs / str(present) / child.log_path.name
                        target.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copyfile(child.log_path, target)
    return {
        "present": present,
        "started_s": started,
        "cold_s": cold,
        "isolated": isolated,
        "back_to_back": back_to_back,
        "memory": peaks,
        "cold_cpu": cold_cpu,
    }


async def series(system: LocalSystem, prefix: str, samples: int, pause: float) -> dict[str, Any]:
    """``samples`` new Ingresses one at a time, each written ``pause`` seconds after the
    previous one answered: their times to the first 200 and their stages' medians."""
    times: list[float] = []
    stages: list[dict[str, float]] = []
    for i in range(samples):
        await asyncio.sleep(pause)
        elapsed, when = await one(system, f"{prefix}{i}")
        times.append(elapsed)
        stages.append(when)
        at = dt.datetime.now(dt.UTC).strftime("%H:%M:%S.%f")[:-3]
        print(f"[{prefix}] sample {i}: {elapsed * 1000:.0f} ms (answered {at}) {when}", flush=True)
    return {
        "samples": len(times),
        "pause_s": pause,
        "p50": statistics.median(times),
        "p99": pct(times, 0.99),
        "max": max(times),
        "over_target": sum(t > TARGET_P99_S for t in times),
        "stages": {
            s: statistics.median(w[s] for w in stages if s in w)
            for s in STAGES
            if any(s in w for w in stages)
        },
    }


BARS = (
    ("isolated", "p50", "#4a7ebb", "isolated p50"),
    ("isolated", "p99", "#e08a2c", "isolated p99"),
    ("back_to_back", "p99", "#9a9a9a", "back-to-back p99"),
)


def svg(results: list[dict[str, Any]]) -> str:
    """Bars per level (ms): p50 and p99 of isolated changes, p99 of back-to-back ones, and the
    500 ms target."""
    width, height, left, bottom = 640, 300, 60, 40
    tallest: float = max(r[series][key] for r in results for series, key, _, _ in BARS)
    top = max(tallest * 1000, TARGET_P99_S * 1000) * 1.15
    slot = (width - left - 20) / len(results)

    def y(ms: float) -> float:
        return height - bottom - (height - bottom - 20) * ms / top

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="sans-serif" font-size="12">',
        f'<text x="{left}" y="14">Ingress created -> first 200 through the VIP (ms)</text>',
        f'<line x1="{left}" y1="{y(0)}" x2="{width - 10}" y2="{y(0)}" stroke="black"/>',
        f'<line x1="{left}" y1="{y(TARGET_P99_S * 1000)}" x2="{width - 10}" '
        f'y2="{y(TARGET_P99_S * 1000)}" stroke="red" stroke-dasharray="4"/>',
        f'<text x="{width - 170}" y="14" fill="red">'
        f"- - target p99 {TARGET_P99_S * 1000:.0f} ms</text>",
    ]
    for i, r in enumerate(results):
        x = left + i * slot + slot * 0.12
        w = slot * 0.25
        for j, (series, key, color, _) in enumerate(BARS):
            ms = r[series][key] * 1000
            parts.append(
                f'<rect x="{x + j * w:.1f}" y="{y(ms):.1f}" width="{w:.1f}" '
                f'height="{y(0) - y(ms):.1f}" fill="{color}"/>'
            )
            parts.append(f'<text x="{x + j * w:.1f}" y="{y(ms) - 3:.1f}">{ms:.0f}</text>')
        parts.append(
            f'<text x="{x:.1f}" y="{height - bottom + 16}">{r["present"]:,} present</text>'
        )
    legend = " ".join(f'<tspan fill="{color}">{label}</tspan>' for _, _, color, label in BARS)
    parts.append(f'<text x="{left}" y="{height - 6}">{legend}</text></svg>')
    return "\n".join(parts) + "\n"


def _per_level(
    results: list[dict[str, Any]], columns: list[str], cell: Callable[[dict[str, Any], str], str]
) -> list[str]:
    """A Markdown table: one row per level, one column per name."""
    lines = ["| present | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for r in results:
        lines.append(f"| {r['present']:,} | " + " | ".join(cell(r, c) for c in columns) + " |")
    return lines


def report(args: argparse.Namespace, results: list[dict[str, Any]], load: str) -> str:
    started = dt.datetime.now(dt.UTC)
    lines = [
        "# End-to-end convergence (local topology)",
        "",
        "Each level is a fresh topology started with N Ingresses already in its manifests (one",
        f"Domain delegates {ZONE_HOST} to the namespace). Cold start: from starting the system",
        "(network namespaces, nats-server, Envoy, Knot, two BIRDs, the six services) to every",
        "domain Ready: the publish time of the last VIP, route, L7 or DNS event a Ready domain",
        "needs. Then a new Ingress at a time: written -> first HTTP 200 by name from the",
        "client namespace (resolver -> VIP -> ToR route over BGP -> L4 -> Envoy -> backend).",
        "",
        f"- command: `{' '.join([sys.executable, *sys.argv])}`",
        f"- date: {started:%Y-%m-%d %H:%M} UTC; {load}",
        f"- machine: {os.cpu_count()} cores; every process of the system shares them",
        "",
        f"Isolated: each Ingress written {args.pause:g} s after the previous one answered (the",
        "target is judged on these). Back to back: each written as soon as the previous one",
        "answered; there Knot 3.2 holds an UPDATE that comes within a second of the previous one",
        "until that one's timer fires (docs/dns-writer.md).",
        "",
        "| present | isolated: samples | p50 (s) | p99 (s) | max (s) | target p99 <= 0.5 s "
        "| back to back: p50 (s) | p99 (s) | over 0.5 s "
        "| system started (s) | cold start, all Ready (s) | target cold start <= 60 s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        one, b2b = r["isolated"], r["back_to_back"]
        lines.append(
            f"| {r['present']:,} | {one['samples']} | {one['p50']:.3f} | {one['p99']:.3f} | "
            f"{one['max']:.3f} | {'met' if one['p99'] <= TARGET_P99_S else '**not met**'} | "
            f"{b2b['p50']:.3f} | {b2b['p99']:.3f} | {b2b['over_target']} of {b2b['samples']} | "
            f"{r['started_s']:.1f} | {r['cold_s']:.1f} | "
            f"{'met' if r['cold_s'] <= TARGET_COLD_S else '**not met**'} |"
        )
    lines += [
        "",
        "![p50 and p99 per level](convergence.svg)",
        "",
        "When each stage's event was published after the Ingress was written (median over the",
        "samples, seconds; the watcher polls the manifests every 0.1 s):",
        "",
    ]
    for series, title in (("isolated", "Isolated"), ("back_to_back", "Back to back")):

        def stage(r: dict[str, Any], s: str, series: str = series) -> str:
            medians = r[series]["stages"]
            return f"{medians[s]:.3f}" if s in medians else "-"

        lines += [f"{title}:", "", *_per_level(results, list(STAGES), stage), ""]
    lines += [
        "CPU seconds each process used from the start to the poll that saw every domain Ready",
        "(user + system; the machine has "
        f"{os.cpu_count()} cores, so a cold start of T s has at most {os.cpu_count()}T to share):",
        "",
    ]
    names = sorted({n for r in results for n in r["cold_cpu"]})
    lines += _per_level(results, names, lambda r, n: f"{r['cold_cpu'].get(n, float('nan')):.1f}")
    lines += ["", "Peak resident memory per process at the end of each level (VmHWM, MiB):", ""]
    names = sorted({n for r in results for n in r["memory"]})
    lines += _per_level(results, names, lambda r, n: f"{r['memory'].get(n, float('nan')):.0f}")
    lines += [
        "",
        f"p99 over {args.samples} samples of a series is the largest but one or the largest.",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--present", type=int, nargs="+", default=[0, 100])
    parser.add_argument("--samples", type=int, default=10, help="per series and level")
    parser.add_argument("--pause", type=float, default=2.0, help="seconds between isolated samples")
    parser.add_argument(
        "--logs", type=Path, default=None, help="keep every process's log under DIR/<present>/"
    )
    parser.add_argument("--vip-pool", default="100.64.0.0/18")
    args = parser.parse_args()
    before = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    results = [
        asyncio.run(run_level(n, args.samples, args.pause, args.vip_pool, args.logs))
        for n in args.present
    ]
    after = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    (HERE / "convergence.svg").write_text(svg(results))
    text = report(args, results, f"before: `{before}`; after: `{after}`")
    (HERE / "report.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

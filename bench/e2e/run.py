"""End-to-end convergence on the local topology: Ingress created -> first HTTP 200 through the VIP
from the client namespace, with the name resolving at the client's resolver and the /32 at the
ToR. p50 / p99 with N Ingresses already present (each with its own Domain, VIP, DNS record and
route).

    .venv/bin/python bench/e2e/run.py --present 0 100 --samples 10

Writes bench/e2e/report.md. Run as root (network namespaces).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from ingress_local.testing import local_system, ready
from ingress_local.topology.client import request
from ingress_local.topology.system import LocalSystem

HERE = Path(__file__).resolve().parent
TARGET_P99_S = 0.5


def manifests(names: list[str]) -> str:
    """A Domain and an Ingress (served by blog) per name, host ``<name>.example.com``."""
    docs: list[dict[str, Any]] = []
    for name in names:
        host = f"{name}.example.com"
        meta = {
            "name": name,
            "namespace": "blog",
            "creationTimestamp": "2026-03-01T00:00:00Z",
        }
        path = {
            "path": "/",
            "pathType": "Prefix",
            "backend": {"service": {"name": "blog", "port": {"number": 80}}},
        }
        docs.append(
            {
                "apiVersion": "ingress-domain.io/v1alpha1",
                "kind": "Domain",
                "metadata": meta,
                "spec": {"host": host},
            }
        )
        docs.append(
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "Ingress",
                "metadata": meta,
                "spec": {"rules": [{"host": host, "http": {"paths": [path]}}]},
            }
        )
    return yaml.safe_dump_all(docs, sort_keys=False)


async def one(system: LocalSystem, name: str, timeout: float = 120.0) -> float:
    """Seconds from writing the Ingress to the first 200 by name through the VIP, with the ToR
    holding the /32 (the client's request already proves DNS and the route; both checked)."""
    assert system.plan is not None
    host = f"{name}.example.com"
    started = time.monotonic()
    (system.o.manifests / f"bench-{name}.yaml").write_text(manifests([name]))
    while time.monotonic() - started < timeout:
        result = await asyncio.to_thread(
            request, system.plan.ns_client, f"http://{host}/", timeout=2.0
        )
        if result.ok and result.status == 200 and result.service == "blog/blog":
            elapsed = time.monotonic() - started
            assert system.resolver_a(host) == [result.remote_ip]
            assert f"{result.remote_ip}/32" in system.tor_routes()
            return elapsed
        await asyncio.sleep(0.01)
    raise TimeoutError(f"{host}: no 200 after {timeout:.0f} s")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def run_level(present: int, samples: int, pool: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        async with local_system(
            Path(tmp),
            vip_pool=pool,
            extra_env={"INGRESS_WATCHER_POLL_INTERVAL_SECONDS": "0.1"},
            sync_interval=0.1,
        ) as system:
            await ready(system)
            loaded = 0.0
            if present:
                t0 = time.monotonic()
                names = [f"p{i}" for i in range(present)]
                (system.o.manifests / "present.yaml").write_text(manifests(names))
                await ready(system, [f"p{i}.example.com" for i in range(present)], timeout=1200)
                loaded = time.monotonic() - t0
            times = [await one(system, f"s{present}x{i}") for i in range(samples)]
    return {
        "present": present,
        "samples": len(times),
        "p50": statistics.median(times),
        "p99": pct(times, 0.99),
        "max": max(times),
        "loaded_s": loaded,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--present", type=int, nargs="+", default=[0, 100])
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--vip-pool", default="100.64.0.0/18")
    args = parser.parse_args()
    load_before = os.getloadavg()
    started = dt.datetime.now(dt.UTC)
    results = [asyncio.run(run_level(n, args.samples, args.vip_pool)) for n in args.present]
    load_after = os.getloadavg()
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    lines = [
        "# End-to-end convergence (local topology)",
        "",
        "Ingress (with its Domain) written -> first HTTP 200 by name from the client namespace",
        "(client resolver -> VIP -> ToR route learned over BGP -> nftables DNAT -> Envoy ->",
        "backend), with N Ingresses already present and converged. Each level is a fresh",
        "topology.",
        "",
        f"- command: `{' '.join([sys.executable, *sys.argv])}`",
        f"- date: {started:%Y-%m-%d %H:%M} UTC; load average before {load_before[0]:.2f}, "
        f"after {load_after[0]:.2f} ({uptime})",
        "- machine: 2 cores shared with other benchmark and test runs (contended)",
        "",
        "| present | samples | p50 (s) | p99 (s) | max (s) | time to converge the present (s) |"
        " target p99 <= 0.5 s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        met = "met" if r["p99"] <= TARGET_P99_S else "not met"
        lines.append(
            f"| {r['present']} | {r['samples']} | {r['p50']:.3f} | {r['p99']:.3f} | "
            f"{r['max']:.3f} | {r['loaded_s']:.1f} | {met} |"
        )
    lines += [
        "",
        "p99 with so few samples is the largest but one or the largest sample; the target is",
        "set for 10,000 present, which this run did not measure.",
    ]
    report = "\n".join(lines) + "\n"
    (HERE / "report.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

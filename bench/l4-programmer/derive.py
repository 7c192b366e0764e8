"""bench/l4-programmer/derive.py: one derive pass (events -> desired state) at N domain VIPs, the
work l4-programmer does for every event before it touches the kernel.

Measured in one process, each case as the median of --repeat passes: from scratch
(``derive``, what a pool or config change costs, and the baseline), one new VIP given to the
service's ``Deriver`` (the common event: it re-derives that address alone), and an Envoy
endpoint change given to it (every domain VIP's spec changes).
Each case runs twice: under CPython's default collector settings, then under the services'
(``ingress_runtime.service.GC_THRESHOLDS`` and ``gc.freeze()`` after start-up, as
``run_service`` does), with the state of the previous pass kept alive as the service keeps it.

    .venv/bin/python bench/l4-programmer/derive.py [--vips 10000] [--repeat 15]

Prints the figures and writes bench/l4-programmer/derive-report.md.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import ipaddress
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ingress_events import catalogue as c
from ingress_l4_programmer.domain.desired import DeriveConfig, Derived, Deriver, derive
from ingress_runtime.service import GC_THRESHOLDS

HERE = Path(__file__).resolve().parent
REPORT = HERE / "derive-report.md"
CONFIG = DeriveConfig("ingress-domain", "envoy", frozenset({80, 443}), "numgen", tunnel=False)
POOL = c.PoolDesired(generation=1, pool="public", cidrs=["100.64.0.0/16"])
BASE = int(ipaddress.IPv4Address("100.64.0.1"))


def domain(i: int) -> c.VipAssigned:
    return c.VipAssigned(
        generation=i + 1,
        owner=c.VipOwner(kind="domain", host=f"d{i}.bench.example.com"),
        addresses=[str(ipaddress.IPv4Address(BASE + i))],
        pool="public",
        ports=[c.PortSpec(port=80), c.PortSpec(port=443)],
        observed_generation=i + 1,
    )


def envoys(generation: int, *addresses: str) -> dict[tuple[str, str, int], c.BackendEndpoints]:
    return {
        ("ingress-domain", "envoy", port): c.BackendEndpoints(
            generation=generation,
            namespace="ingress-domain",
            service="envoy",
            port=port,
            endpoints=[
                c.Endpoint(address=a, port=port, ready=True, serving=True, terminating=False)
                for a in addresses
            ],
        )
        for port in (80, 443)
    }


def timed(passes: int, one: Callable[[int], Derived]) -> float:
    kept: list[Derived] = []
    times = []
    for i in range(passes):
        start = time.perf_counter()
        result = one(i)
        times.append(time.perf_counter() - start)
        kept = [result]  # the service holds the last pass's result until the next one
    del kept
    return statistics.median(times)


def cases(vips: int, repeat: int) -> dict[str, float]:
    assigned = {a.key(): a for a in (domain(i) for i in range(vips))}
    endpoints = envoys(1, "10.0.1.1", "10.0.1.2", "10.0.1.3")
    out: dict[str, float] = {}
    out["from scratch"] = timed(
        repeat, lambda _: derive(assigned.values(), [], endpoints, [POOL], CONFIG)
    )
    deriver = Deriver()
    deriver.update(assigned, [], endpoints, [POOL], CONFIG)

    def one_new_vip(i: int) -> Derived:
        new = domain(vips + i)
        assigned[new.key()] = new
        return deriver.update(assigned, [], endpoints, [POOL], CONFIG, changed=[new.key()])

    out["one new VIP, incremental"] = timed(repeat, one_new_vip)
    assert deriver.recomputed == 1

    def endpoint_change(i: int) -> Derived:
        eps = envoys(2 + i, "10.0.1.1", f"10.0.2.{i + 1}")
        return deriver.update(assigned, [], eps, [POOL], CONFIG, changed=[])

    out["Envoy endpoint change, incremental"] = timed(repeat, endpoint_change)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vips", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    default = cases(args.vips, args.repeat)
    gc.set_threshold(*GC_THRESHOLDS)
    gc.collect()
    gc.freeze()
    tuned = cases(args.vips, args.repeat)
    scratch = default["from scratch"]
    rows = [
        f"| {name} | {ms(default[name])} ({scratch / default[name]:.1f}x) "
        f"| {ms(tuned[name])} ({scratch / tuned[name]:.1f}x) |"
        for name in default
    ]
    text = "\n".join(
        [
            "# l4-programmer: one derive pass",
            "",
            f"{dt()} UTC, {args.vips:,} domain VIPs (2 ports each, 3 Envoys), median of "
            f"{args.repeat} passes; Python {sys.version.split()[0]}. In parentheses: how many "
            "times faster than from scratch under the default collector, the baseline of the "
            "same run. Written by `bench/l4-programmer/derive.py`.",
            "",
            "| pass | default gc | services' gc (thresholds + freeze) |",
            "|---|---|---|",
            *rows,
            "",
        ]
    )
    print(text)
    REPORT.write_text(text)
    return 0


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.3g} ms"


def dt() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M")


if __name__ == "__main__":
    sys.exit(main())

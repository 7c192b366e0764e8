"""Runs inside the virtme-ng VM (started by bench/l4-programmer/run.py): programs IPVS through the
service's real adapter (``IpvsDataplane``) and the real planner, and ``ipvsadm-restore`` as the
baseline, on the same rule set. Prints one JSON line (prefixed ``L4P-BENCH ``) with the figures.

    python bench/l4-programmer/invm.py --services 10000 --reals 4 [--sizes 1000,10000]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import subprocess
import tempfile
import time
from typing import Any

from ingress_l4_programmer.adapters.addresses import DummyVips
from ingress_l4_programmer.adapters.ipvs import IpvsDataplane
from ingress_l4_programmer.domain.model import DesiredState, Real, VsKey, VsSpec
from ingress_l4_programmer.domain.plan import plan, scope

PORTS = (80, 443)
SCHEDULER = "mh"


def sh(*cmd: str, stdin: str | None = None) -> str:
    proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {proc.stderr.strip()}")
    return proc.stdout


def desired_state(services: int, reals: int) -> DesiredState:
    """``services`` virtual services: services/2 VIPs x ports 80 and 443, ``reals`` each."""
    base = int(ipaddress.IPv4Address("198.18.0.1"))
    vips = [str(ipaddress.IPv4Address(base + i)) for i in range(services // len(PORTS))]
    real_addrs = [f"172.16.{i // 250}.{i % 250 + 1}" for i in range(reals)]
    specs: dict[VsKey, VsSpec] = {}
    for vip in vips:
        for port in PORTS:
            specs[VsKey(vip, "TCP", port)] = VsSpec(
                SCHEDULER, {Real(a, port): 1 for a in real_addrs}
            )
    return DesiredState(services=specs, addresses=frozenset(vips))


def restore_rules(desired: DesiredState) -> str:
    lines = []
    for key, spec in desired.services.items():
        lines.append(f"-A -t {key.vip}:{key.port} -s {spec.scheduler}")
        for real, weight in spec.reals.items():
            lines.append(f"-a -t {key.vip}:{key.port} -r {real} -i -w {weight}")
    return "\n".join(lines) + "\n"


def flush(ifname: str) -> None:
    sh("ipvsadm", "-C")
    subprocess.run(["ip", "link", "del", ifname], capture_output=True, check=False)


def baseline(desired: DesiredState) -> dict[str, Any]:
    rules = restore_rules(desired)
    with tempfile.NamedTemporaryFile("w", suffix=".rules", delete=False) as f:
        f.write(rules)
    try:
        sh("ipvsadm", "-C")
        t0 = time.perf_counter()
        with open(f.name) as fh:
            proc = subprocess.run(["ipvsadm-restore"], stdin=fh, capture_output=True, check=False)
        took = time.perf_counter() - t0
        assert proc.returncode == 0, proc.stderr
        n_dests = sh("ipvsadm", "-Ln").count("Tunnel")
        expected = sum(len(s.reals) for s in desired.services.values())
        assert n_dests == expected, (n_dests, expected)
        sh("ipvsadm", "-C")
        return {"seconds": took, "lines": rules.count("\n")}
    finally:
        os.unlink(f.name)


def ours(desired: DesiredState, ifname: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    dp = IpvsDataplane(DummyVips(ifname))
    assert dp.unavailable() is None

    # Initial programming: read (empty) -> plan -> apply -> read back and verify.
    m0 = dp.messages
    t0 = time.perf_counter()
    current = dp.read()
    t1 = time.perf_counter()
    p = plan(desired, current, forward="tunnel", now=0.0)
    t2 = time.perf_counter()
    writes = dp.apply(current, p.ops)
    t3 = time.perf_counter()
    after = dp.read()
    t4 = time.perf_counter()
    print(f"  initial: {t4 - t0:.2f} s ({writes} writes)", flush=True)
    assert plan(desired, after, forward="tunnel", now=0.0).ops == [], "read-back differs"
    out["initial"] = {
        "seconds": t4 - t0,
        "read_s": t1 - t0,
        "plan_s": t2 - t1,
        "apply_s": t3 - t2,
        "readback_s": t4 - t3,
        "writes": writes,
        "messages": dp.messages - m0,
    }

    # A no-op reconcile: full read + plan, zero writes.
    m0 = dp.messages
    t0 = time.perf_counter()
    current = dp.read()
    p = plan(desired, current, forward="tunnel", now=1.0)
    took = time.perf_counter() - t0
    writes = dp.apply(current, p.ops) if p.ops else 0
    out["noop"] = {"seconds": took, "writes": writes, "messages": dp.messages - m0}

    # One change at this size: one VIP's port 80 swaps a real server (add the new one at its
    # weight, drain the old one to weight 0), planned over that key only against the state read
    # back after the last apply, applied, and that one service read back and verified.
    key = min(desired.services)
    spec = desired.services[key]
    old = min(spec.reals)
    reals = {r: w for r, w in spec.reals.items() if r != old}
    reals[Real("172.16.9.9", key.port)] = 1
    changed = DesiredState(
        services={**desired.services, key: VsSpec(spec.scheduler, reals)},
        addresses=desired.addresses,
    )
    m0 = dp.messages
    t0 = time.perf_counter()
    d_scope, c_scope = scope(changed, current, {key})
    p = plan(d_scope, c_scope, forward="tunnel", now=2.0)
    writes = dp.apply(c_scope, p.ops)
    back = dp.read_services([key])
    took = time.perf_counter() - t0
    dests = back[key].dests
    assert dests[old].weight == 0 and dests[Real("172.16.9.9", key.port)].weight == 1, dests
    out["change"] = {
        "seconds": took,
        "writes": writes,
        "messages": dp.messages - m0,
        "ops": [type(op).__name__ for op in p.ops],
    }
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000,10000")
    ap.add_argument("--reals", type=int, default=4)
    args = ap.parse_args()
    ifname = "l4pbench0"
    results: dict[str, Any] = {"uptime": sh("uptime").strip(), "sizes": {}}
    try:
        for size in [int(s) for s in args.sizes.split(",")]:
            desired = desired_state(size, args.reals)
            flush(ifname)
            print(f"size {size}: ipvsadm-restore", flush=True)
            row: dict[str, Any] = {"baseline": baseline(desired)}
            print(f"  restore: {row['baseline']['seconds']:.2f} s", flush=True)
            flush(ifname)
            row.update(ours(desired, ifname))
            flush(ifname)
            # The baseline again after ours, at every size: the kernel frees the flushed rule
            # set's memory lazily (10,000 mh tables are ~320 MB), so whoever runs second may pay
            # for the first; with a baseline on both sides that lands on both.
            row["baseline2"] = baseline(desired)
            results["sizes"][str(size)] = row
            print(f"size {size}: {json.dumps(row)}", flush=True)
    finally:
        flush(ifname)
    print("L4P-BENCH " + json.dumps(results), flush=True)


if __name__ == "__main__":
    main()

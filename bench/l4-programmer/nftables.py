"""bench/l4-programmer/nftables.py: the nftables dataplane at scale, on this machine's kernel, in
a network namespace of its own, through the service's real adapter (``NftDataplane``).

For each size (virtual services x 4 real servers): the initial table, a full read-back, one
service changed (plan-free: one real server drained), its read-back by key, and a no-op. In the
same run, the baseline: kube-proxy's nftables shape (a chain and an anonymous numgen map per
service, which this project used before), loaded with ``nft -f`` and one service's chain listed
with ``nft -j list chain`` (what reading it back costs with nft).

    .venv/bin/python bench/l4-programmer/nftables.py [--sizes 2000,20000] [--baseline-max 10000]

Prints the figures and writes bench/l4-programmer/nftables-report.md. Run as root.
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import time
from pathlib import Path

from ingress_l4_programmer.adapters.addresses import DummyVips
from ingress_l4_programmer.adapters.nftables import NftDataplane
from ingress_l4_programmer.domain.model import (
    AddDest,
    AddService,
    CurrentDest,
    CurrentVs,
    KernelState,
    Op,
    Real,
    SetDest,
    VsKey,
)

HERE = Path(__file__).resolve().parent
REPORT = HERE / "nftables-report.md"
NS = "bench-nft"


def services(count: int, reals: int) -> dict[VsKey, CurrentVs]:
    out: dict[VsKey, CurrentVs] = {}
    for i in range(count // 2):
        vip = f"100.{64 + i // 65536}.{(i // 256) % 256}.{i % 256}"
        for port in (80, 443):
            out[VsKey(vip, "TCP", port)] = CurrentVs(
                "numgen",
                {Real(f"172.16.0.{j}", port): CurrentDest(1, "nat") for j in range(1, reals + 1)},
            )
    return out


def baseline_table(table: str, svcs: dict[VsKey, CurrentVs]) -> str:
    """kube-proxy's shape: the verdict map sends each service to its own chain, whose rule
    DNATs through an anonymous map of its real servers."""
    lines = [f"table ip {table} {{", "\tmap services {"]
    lines.append("\t\ttype ipv4_addr . inet_proto . inet_service : verdict")
    elements = ", ".join(f"{k.vip} . tcp . {k.port} : goto {_chain(k)}" for k in svcs)
    lines += [f"\t\telements = {{ {elements} }}", "\t}"]
    lines += [
        "\tchain prerouting {",
        "\t\ttype nat hook prerouting priority dstnat; policy accept;",
        "\t\tip daddr . meta l4proto . th dport vmap @services",
        "\t}",
    ]
    for key, vs in svcs.items():
        reals = sorted(vs.dests)
        slots = ", ".join(f"{i} : {r.address} . {r.port}" for i, r in enumerate(reals))
        lines += [
            f"\tchain {_chain(key)} {{",
            f"\t\tmeta l4proto tcp dnat ip addr . port to numgen random mod {len(reals)} "
            f"map {{ {slots} }}",
            "\t}",
        ]
    lines.append("}")
    return "\n".join(lines) + "\n"


def _chain(key: VsKey) -> str:
    return f"vs_{key.vip.replace('.', '_')}_{key.port}"


def timed(fn):  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def nft(script: str) -> None:
    subprocess.run(
        ["ip", "netns", "exec", NS, "nft", "-f", "-"], input=script, text=True, check=True
    )


def measure(count: int, reals: int, baseline_max: int) -> dict[str, float]:
    svcs = services(count, reals)
    plane = NftDataplane("ingress_l4", DummyVips("bench-vip0", NS), NS)
    figures: dict[str, float] = {}
    empty = plane.read()
    ops: list[Op] = []
    for key, vs in svcs.items():
        ops.append(AddService(key, "numgen"))
        ops += [AddDest(key, r, d.weight, "nat") for r, d in vs.dests.items()]
    figures["initial_s"], _ = timed(lambda: plane.apply(empty, ops))
    figures["full_read_s"], state = timed(plane.read)
    assert state.services == svcs, "the table read back differs from what was written"
    key = sorted(svcs)[count // 3]
    drained = sorted(svcs[key].dests)[0]
    figures["read_one_s"], part = timed(lambda: plane.read_services([key]))
    before = plane.transactions
    figures["change_s"], _ = timed(
        lambda: plane.apply(KernelState(part, frozenset()), [SetDest(key, drained, 0, "nat")])
    )
    figures["change_transactions"] = plane.transactions - before
    figures["change_read_back_s"], back = timed(lambda: plane.read_services([key]))
    assert back[key].dests[drained].weight == 0
    figures["noop_writes"] = plane.apply(KernelState(back, frozenset()), [])
    subprocess.run(["ip", "netns", "exec", NS, "nft", "delete", "table", "ip", "ingress_l4"])
    if count <= baseline_max:
        script = baseline_table("baseline", svcs)
        figures["baseline_initial_s"], _ = timed(lambda: nft(script))
        listing = ["nft", "-j", "list", "chain", "ip", "baseline", _chain(key)]
        figures["baseline_list_one_s"], _ = timed(
            lambda: subprocess.run(
                ["ip", "netns", "exec", NS, *listing], capture_output=True, check=True
            )
        )
        subprocess.run(["ip", "netns", "exec", NS, "nft", "delete", "table", "ip", "baseline"])
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="2000,20000")
    parser.add_argument("--reals", type=int, default=4)
    parser.add_argument("--baseline-max", type=int, default=10000)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    load_before = os.getloadavg()[0]
    subprocess.run(["ip", "netns", "add", NS], check=True)
    try:
        results = {n: measure(n, args.reals, args.baseline_max) for n in sizes}
    finally:
        subprocess.run(["ip", "netns", "del", NS], check=False)
    version = subprocess.run(["nft", "--version"], capture_output=True, text=True).stdout.strip()
    lines = [
        "# nftables dataplane at scale",
        "",
        f"- command: `{' '.join([sys.executable, *sys.argv])}`",
        f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; {version}; "
        f"{os.cpu_count()} cores; load average before {load_before:.2f}",
        f"- {args.reals} real servers per virtual service; one change drains one real server",
        "",
        "| services | initial (s) | full read (s) | one change (ms) | transactions "
        "| its read-back (ms) | no-op writes | baseline initial (s) | baseline list one (s) "
        "| initial, baseline / ours |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n, f in results.items():
        base = f.get("baseline_initial_s")
        ratio = f"{base / f['initial_s']:.1f}x" if base else "-"
        listed = f"{f['baseline_list_one_s']:.2f}" if base else "-"
        lines.append(
            f"| {n:,} | {f['initial_s']:.2f} | {f['full_read_s']:.2f} | {f['change_s'] * 1000:.1f} "
            f"| {f['change_transactions']:.0f} | {f['change_read_back_s'] * 1000:.1f} "
            f"| {f['noop_writes']:.0f} | {'-' if base is None else f'{base:.2f}'} "
            f"| {listed} | {ratio} |"
        )
    lines += [
        "",
        "A change is one `nft -f` process (through `ip netns exec`), whose time does not grow "
        "with the table; the read-back is netlink gets by key; the full read is netlink dumps "
        "of the maps and rules, decoded in Python. The baseline is loaded without our adapter "
        "(plain `nft -f`), so its figures are a lower bound of what that design cost.",
    ]
    text = "\n".join(lines) + "\n"
    REPORT.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

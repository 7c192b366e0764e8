"""The nftables dataplane as text: render a table of ours, and parse it back from ``nft -j``.

One rule per virtual service DNATs to a real server picked by ``numgen random`` or
``jhash ip saddr`` through an anonymous map. A real server of weight w holds w map slots below
the modulus; a draining server (weight 0) keeps one slot at or above it, which numgen never
picks, so the drain state survives a read-back and a converged node stays converged. With no
weighted server the modulus is 1 and slot 0 is empty: the lookup misses and nothing is DNATed.

Conntrack keeps established flows on their real server whatever the map says, which is what
gives nftables its graceful drain.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .model import CurrentDest, CurrentVs, Proto, Real, VsKey

SCHEDULERS = ("numgen", "jhash")
_COMMENT = re.compile(
    r"^l4 (?P<vip>[0-9.]+) (?P<proto>tcp|udp|sctp) (?P<port>\d+) (?P<sched>[a-z]+)$"
)
JHASH_SEED = 0x4C34  # fixed, so that a re-render keeps every client on its real server


class NftParseError(ValueError):
    pass


def _slots(dests: Mapping[Real, CurrentDest]) -> tuple[int, list[tuple[int, Real]]]:
    weighted = [(r, d.weight) for r, d in sorted(dests.items()) if d.weight > 0]
    draining = [r for r, d in sorted(dests.items()) if d.weight == 0]
    slots: list[tuple[int, Real]] = []
    for real, weight in weighted:
        slots.extend((len(slots), real) for _ in range(weight))
    modulus = max(len(slots), 1)
    slots.extend((modulus + i, real) for i, real in enumerate(draining))
    return modulus, slots


def render_rule(key: VsKey, vs: CurrentVs) -> str:
    proto = key.protocol.lower()
    modulus, slots = _slots(vs.dests)
    if vs.scheduler == "jhash":
        pick = f"jhash ip saddr mod {modulus} seed {JHASH_SEED:#x}"
    else:
        pick = f"numgen random mod {modulus}"
    comment = f'comment "l4 {key.vip} {proto} {key.port} {vs.scheduler}"'
    match = f"ip daddr {key.vip} {proto} dport {key.port}"
    if not slots:
        return f"{match} counter {comment}"
    elements = ", ".join(f"{i} : {r.address} . {r.port}" for i, r in slots)
    return f"{match} dnat ip addr . port to {pick} map {{ {elements} }} {comment}"


def render_table(table: str, services: Mapping[VsKey, CurrentVs]) -> str:
    """The whole table; applied with ``nft -f`` it replaces ours atomically (one transaction:
    create-if-missing, delete, define) and leaves every other table alone."""
    lines = [
        f"table ip {table} {{}}",
        f"delete table ip {table}",
        f"table ip {table} {{",
        "\tchain prerouting {",
        "\t\ttype nat hook prerouting priority dstnat; policy accept;",
    ]
    lines += [f"\t\t{render_rule(k, services[k])}" for k in sorted(services)]
    lines += ["\t}", "\tchain output {", "\t\ttype nat hook output priority -100; policy accept;"]
    # Locally originated traffic to a VIP (health checks on the node itself) is balanced too.
    lines += [f"\t\t{render_rule(k, services[k])}" for k in sorted(services)]
    lines += ["\t}", "}"]
    return "\n".join(lines) + "\n"


def parse_table(doc: Mapping[str, Any]) -> dict[VsKey, CurrentVs]:
    """Virtual services from ``nft -j list table ip <ours>`` (the prerouting chain)."""
    out: dict[VsKey, CurrentVs] = {}
    for item in doc.get("nftables", []):
        rule = item.get("rule")
        if not rule or rule.get("chain") != "prerouting":
            continue
        m = _COMMENT.match(rule.get("comment", ""))
        if m is None:
            continue
        proto: Proto = m["proto"].upper()  # type: ignore[assignment]
        key = VsKey(m["vip"], proto, int(m["port"]))
        dests: dict[Real, CurrentDest] = {}
        for expr in rule.get("expr", []):
            if "dnat" not in expr:
                continue
            mapping = expr["dnat"]["addr"]["map"]
            picker = mapping["key"]
            modulus = int((picker.get("numgen") or picker.get("jhash"))["mod"])
            weights: dict[Real, int] = {}
            for slot, target in mapping["data"]["set"]:
                address, port = target["concat"]
                real = Real(str(address), int(port))
                weights[real] = weights.get(real, 0) + (1 if int(slot) < modulus else 0)
            dests = {r: CurrentDest(w, "nat") for r, w in weights.items()}
        out[key] = CurrentVs(m["sched"], dests)
    return out

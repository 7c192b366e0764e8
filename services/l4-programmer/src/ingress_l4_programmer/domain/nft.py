"""The nftables dataplane as text: render a table of ours, its changes, and parse it back.

Three named maps do all the work, so that neither a packet nor a change costs in proportion to
the number of services:

* ``services`` (verdict map): (VIP, protocol, port) -> ``goto pick_<scheduler>_<N>``, looked up
  once from the ``prerouting`` and ``output`` nat hooks.
* ``pick_<scheduler>_<N>`` (one chain per scheduler and modulus in use, not per service): one
  rule, ``dnat`` to the real server found in ``slots_<scheduler>_<N>`` under (VIP, protocol,
  port, ``numgen random mod N`` or ``jhash ip saddr mod N``).
* ``slots_<scheduler>_<N>``: (VIP, protocol, port, slot) -> real server address and port.

A real server of weight w holds w slots below N; a draining one (weight 0) holds one slot at or
above N, which the hash never yields, so the drain state reads back from the kernel and a
converged node stays converged. A service with no weighted server has N = 1 and no slot 0: the
lookup misses and nothing is DNATed.

Why not a chain and an anonymous map per service (kube-proxy's shape): nft resolves sets and
chains by name, so loading 10,000 of each took 13 s on this machine's nftables 1.0.6 against
1.2 s for these maps, and one change here is one transaction of a few elements
(bench/l4-programmer/nftables-report.md).

Conntrack keeps established flows on their real server whatever the maps say, which is what
gives nftables its graceful drain.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .model import CurrentDest, CurrentVs, Proto, Real, VsKey

SCHEDULERS = ("numgen", "jhash")
JHASH_SEED = 0x4C34  # fixed, so that a re-render keeps every client on its real server
SERVICES_MAP = "services"
_LOOKUP = f"ip daddr . meta l4proto . th dport vmap @{SERVICES_MAP}"
_PICK = re.compile(r"^pick_(?P<sched>numgen|jhash)_(?P<mod>[1-9][0-9]*)$")
_SLOTS = re.compile(r"^slots_(?P<sched>numgen|jhash)_(?P<mod>[1-9][0-9]*)$")
HOOK_CHAINS = ("prerouting", "output")
_HOOKS = (
    ("prerouting", "priority dstnat"),
    # Locally originated traffic to a VIP (health checks on the node itself) too.
    ("output", "priority -100"),
)


class NftParseError(ValueError):
    pass


@dataclass(frozen=True, order=True)
class Picker:
    """How one service picks its real server: the scheduler and the modulus N."""

    scheduler: str
    modulus: int

    @property
    def chain(self) -> str:
        return f"pick_{self.scheduler}_{self.modulus}"

    @property
    def slots(self) -> str:
        return f"slots_{self.scheduler}_{self.modulus}"

    def hash(self) -> str:
        if self.scheduler == "jhash":
            return f"jhash ip saddr mod {self.modulus} seed {JHASH_SEED:#x}"
        return f"numgen random mod {self.modulus}"

    @classmethod
    def of_chain(cls, name: str) -> Picker | None:
        m = _PICK.match(name)
        return None if m is None else cls(m["sched"], int(m["mod"]))


@dataclass(frozen=True)
class Layout:
    """One service as the maps hold it."""

    picker: Picker
    slots: Mapping[int, Real]


def layout(vs: CurrentVs) -> Layout:
    weighted = [(r, d.weight) for r, d in sorted(vs.dests.items()) if d.weight > 0]
    draining = [r for r, d in sorted(vs.dests.items()) if d.weight == 0]
    slots: dict[int, Real] = {}
    for real, weight in weighted:
        for _ in range(weight):
            slots[len(slots)] = real
    modulus = max(len(slots), 1)
    for i, real in enumerate(draining):
        slots[modulus + i] = real
    return Layout(Picker(vs.scheduler, modulus), slots)


def service_of(picker: Picker, slots: Mapping[int, Real]) -> CurrentVs:
    """The inverse of :func:`layout`: weights from the slots below the modulus; a server with
    slots only at or above it is draining (weight 0)."""
    weights: dict[Real, int] = {}
    for slot, real in slots.items():
        weights[real] = weights.get(real, 0) + (1 if slot < picker.modulus else 0)
    return CurrentVs(picker.scheduler, {r: _dest(w) for r, w in weights.items()})


_DESTS: dict[int, CurrentDest] = {}


def _dest(weight: int) -> CurrentDest:
    """Shared, immutable: a read of 20,000 services makes 80,000 of them otherwise."""
    found = _DESTS.get(weight)
    if found is None:
        found = _DESTS[weight] = CurrentDest(weight, "nat")
    return found


def _key(key: VsKey) -> str:
    return f"{key.vip} . {key.protocol.lower()} . {key.port}"


def _slot_list(key: VsKey, slots: Mapping[int, Real]) -> list[str]:
    return [f"{_key(key)} . {i} : {r.address} . {r.port}" for i, r in sorted(slots.items())]


def _slot_elements(key: VsKey, slots: Mapping[int, Real]) -> str:
    return ", ".join(_slot_list(key, slots))


def _elements(items: list[str]) -> list[str]:
    """A map's elements, one per line (nft reads it either way; a reviewer reads this better)."""
    if not items:
        return []
    return ["\t\telements = {", *(f"\t\t\t{item}," for item in items), "\t\t}"]


def _pick_rule(picker: Picker) -> str:
    return (
        f"dnat ip addr . port to ip daddr . meta l4proto . th dport . {picker.hash()} "
        f"map @{picker.slots}"
    )


def _slots_type(picker: Picker) -> str:
    # Always numgen's typeof: the key is the same 32-bit integer for jhash, and nft 1.0.6
    # crashes listing a map whose typeof names jhash.
    return (
        f"typeof ip daddr . meta l4proto . th dport . numgen random mod {picker.modulus} "
        ": ip daddr . tcp dport"  # the data type only; "th" here breaks nft 1.0.6 rule parsing
    )


def _pickers_add(table: str, pickers: Iterable[Picker]) -> list[str]:
    """Idempotent: a picker's map and chain are (re)declared and its one rule rewritten, so a
    change may use a picker without knowing whether it exists yet."""
    lines: list[str] = []
    for p in sorted(set(pickers)):
        lines += [
            f"add map ip {table} {p.slots} {{ {_slots_type(p)}; }}",
            f"add chain ip {table} {p.chain}",
            f"flush chain ip {table} {p.chain}",
            f"add rule ip {table} {p.chain} {_pick_rule(p)}",
        ]
    return lines


def render_table(table: str, services: Mapping[VsKey, CurrentVs]) -> str:
    """The whole table; applied with ``nft -f`` it replaces ours atomically (one transaction:
    create-if-missing, delete, define) and leaves every other table alone."""
    layouts = {k: layout(services[k]) for k in sorted(services)}
    by_picker: dict[Picker, list[VsKey]] = {}
    for key, lay in layouts.items():
        by_picker.setdefault(lay.picker, []).append(key)
    lines = [
        f"table ip {table} {{}}",
        f"delete table ip {table}",
        f"table ip {table} {{",
        f"\tmap {SERVICES_MAP} {{",
        "\t\ttype ipv4_addr . inet_proto . inet_service : verdict",
    ]
    lines += _elements([f"{_key(k)} : goto {lay.picker.chain}" for k, lay in layouts.items()])
    lines.append("\t}")
    for picker in sorted(by_picker):
        lines += [f"\tmap {picker.slots} {{", f"\t\t{_slots_type(picker)}"]
        lines += _elements([e for k in by_picker[picker] for e in _slot_list(k, layouts[k].slots)])
        lines.append("\t}")
    for hook, priority in _HOOKS:
        lines += [
            f"\tchain {hook} {{",
            f"\t\ttype nat hook {hook} {priority}; policy accept;",
            f"\t\t{_LOOKUP}",
            "\t}",
        ]
    for picker in sorted(by_picker):
        lines += [f"\tchain {picker.chain} {{", f"\t\t{_pick_rule(picker)}", "\t}"]
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_changes(
    table: str, before: Mapping[VsKey, CurrentVs], after: Mapping[VsKey, CurrentVs]
) -> str:
    """One transaction bringing the services ``before`` -> ``after`` (a key only in ``before``
    goes, one only in ``after`` comes): the slot elements that differ are deleted and added, a
    service's ``services`` element is replaced when its picker changes. Deletes come first, so a
    slot that moves is free again before it is added. Empty when nothing differs.

    A picker left without services keeps its (empty) map and chain until the next rewrite."""
    deletes: list[str] = []
    adds: list[str] = []
    used: set[Picker] = set()
    for key in sorted(set(before) | set(after)):
        old = layout(before[key]) if key in before else None
        new = layout(after[key]) if key in after else None
        if old == new:
            continue
        if old is not None:
            gone = {
                i: r
                for i, r in old.slots.items()
                if new is None or new.picker != old.picker or new.slots.get(i) != r
            }
            if gone:
                elements = ", ".join(f"{_key(key)} . {i}" for i in sorted(gone))
                deletes.append(f"delete element ip {table} {old.picker.slots} {{ {elements} }}")
            if new is None or new.picker != old.picker:
                deletes.append(f"delete element ip {table} {SERVICES_MAP} {{ {_key(key)} }}")
        if new is not None:
            used.add(new.picker)
            come = {
                i: r
                for i, r in new.slots.items()
                if old is None or new.picker != old.picker or old.slots.get(i) != r
            }
            if come:
                adds.append(
                    f"add element ip {table} {new.picker.slots} {{ {_slot_elements(key, come)} }}"
                )
            if old is None or new.picker != old.picker:
                adds.append(
                    f"add element ip {table} {SERVICES_MAP} "
                    f"{{ {_key(key)} : goto {new.picker.chain} }}"
                )
    if not deletes and not adds:
        return ""
    return "\n".join([*_pickers_add(table, used), *deletes, *adds]) + "\n"


# --------------------------------------------------------------------------- read back (nft -j)


def _concat(value: Any) -> list[Any]:
    if not isinstance(value, Mapping) or not isinstance(value.get("concat"), list):
        raise NftParseError(f"expected a concatenation, got {value!r}")
    return list(value["concat"])


def _vs_key(parts: list[Any]) -> VsKey:
    proto: Proto = str(parts[1]).upper()  # type: ignore[assignment]
    if proto not in ("TCP", "UDP", "SCTP"):
        raise NftParseError(f"unknown protocol {parts[1]!r}")
    return VsKey(str(parts[0]), proto, int(parts[2]))


def parse_table(doc: Mapping[str, Any]) -> dict[VsKey, CurrentVs]:
    """Virtual services from ``nft -j list table ip <ours>``: a service is there when the
    ``services`` map sends its key to a picker; its real servers are its slots in that picker's
    map."""
    pickers: dict[VsKey, Picker] = {}
    slots: dict[tuple[str, VsKey], dict[int, Real]] = {}
    for item in doc.get("nftables", []):
        found = item.get("map")
        if found is None:
            continue
        name = str(found.get("name", ""))
        elements = found.get("elem") or []
        if name == SERVICES_MAP:
            for key, verdict in elements:
                target = (verdict.get("goto") or {}).get("target")
                picker = Picker.of_chain(target) if isinstance(target, str) else None
                if picker is not None:
                    pickers[_vs_key(_concat(key))] = picker
        elif _SLOTS.match(name):
            for key, data in elements:
                parts = _concat(key)
                address, port = _concat(data)
                vs_slots = slots.setdefault((name, _vs_key(parts[:3])), {})
                vs_slots[int(parts[3])] = Real(str(address), int(port))
    return {
        key: service_of(picker, slots.get((picker.slots, key), {}))
        for key, picker in pickers.items()
    }

"""Reading our nftables table back through nfnetlink: single elements by key
(``NFT_MSG_GETSETELEM``, what ``nft get element`` sends), so that reading back one changed
service costs a few messages, and the whole table as dumps of its maps and rules.

``nft`` itself loads its whole cache first (every set with every element) and formats it:
``nft get element`` took 1.5 s per call and ``nft -j list table`` 5.4 s (with its parse) at
20,000 services on this machine. The kernel answers a get of one key directly. The encoding is
nft's: each part of a concatenated key in its own 32-bit register (addresses and ports in
network order, zero-padded; numgen / jhash results in host order).
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import sys
from collections.abc import Mapping, Sequence

from ..domain.model import CurrentVs, Proto, Real, VsKey
from ..domain.nft import HOOK_CHAINS, SERVICES_MAP, Picker, service_of
from .genl_ipvs import (
    NLM_F_ACK,
    NLM_F_REQUEST,
    NLMSG_ERROR,
    NetlinkSocket,
    nla,
    socket_in,
)
from .genl_ipvs import attributes as _attrs

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_GETRULE = 7
NFT_MSG_GETSET = 10
NFT_MSG_NEWSETELEM = 12
NFT_MSG_GETSETELEM = 13
NFTA_RULE_TABLE = 1
NFTA_RULE_CHAIN = 2
NFTA_RULE_EXPRESSIONS = 4
NFTA_EXPR_NAME = 1
NFTA_EXPR_DATA = 2
NFTA_LOOKUP_SET = 1
NFTA_SET_TABLE = 1
NFTA_SET_NAME = 2
NFTA_SET_ELEM_LIST_TABLE = 1
NFTA_SET_ELEM_LIST_SET = 2
NFTA_SET_ELEM_LIST_ELEMENTS = 3
NFTA_LIST_ELEM = 1
NFTA_SET_ELEM_KEY = 1
NFTA_SET_ELEM_DATA = 2
NFTA_DATA_VALUE = 1
NFTA_DATA_VERDICT = 2
NFTA_VERDICT_CODE = 1
NFTA_VERDICT_CHAIN = 2
NFT_GOTO = -4
NLA_F_NESTED = 0x8000
_PROTOCOLS: dict[Proto, int] = {"TCP": 6, "UDP": 17, "SCTP": 132}
_PROTOCOL_NAMES: dict[int, Proto] = {n: p for p, n in _PROTOCOLS.items()}
BATCH = 256
"""Gets per ``sendmsg``: each answer (element or error) is under 200 bytes."""


def _nested(kind: int, payload: bytes) -> bytes:
    return nla(kind | NLA_F_NESTED, payload)


def service_key(key: VsKey) -> bytes:
    return (
        socket.inet_aton(key.vip)
        + struct.pack("=B3x", _PROTOCOLS[key.protocol])
        + struct.pack("!H2x", key.port)
    )


def slot_key(key: VsKey, slot: int) -> bytes:
    return service_key(key) + slot.to_bytes(4, sys.byteorder)


def _vs_key(raw: bytes) -> VsKey | None:
    """The inverse of :func:`service_key` (the first 12 bytes); None for a protocol not ours."""
    proto = _PROTOCOL_NAMES.get(raw[4])
    if proto is None:
        return None
    return VsKey(socket.inet_ntoa(raw[:4]), proto, struct.unpack_from("!H", raw, 8)[0])


def _real(value: bytes) -> Real:
    return Real(socket.inet_ntoa(value[:4]), struct.unpack_from("!H", value, 4)[0])


def _string(value: bytes) -> str:
    return value.rstrip(b"\0").decode()


def _picker(data: Mapping[int, bytes]) -> Picker | None:
    verdict = _attrs(data.get(NFTA_DATA_VERDICT, b""))
    code = verdict.get(NFTA_VERDICT_CODE)
    if code is None or struct.unpack("!i", code)[0] != NFT_GOTO:
        return None
    return Picker.of_chain(_string(verdict.get(NFTA_VERDICT_CHAIN, b"")))


def _elements(payload: bytes) -> list[tuple[bytes, Mapping[int, bytes]]]:
    """(key value, data attributes) of each element in one NEWSETELEM message."""
    out: list[tuple[bytes, Mapping[int, bytes]]] = []
    listing = _attrs(payload).get(NFTA_SET_ELEM_LIST_ELEMENTS, b"")
    pos = 0
    while pos + 4 <= len(listing):
        length = struct.unpack_from("=H", listing, pos)[0]
        if length < 4:
            break
        element = _attrs(listing[pos + 4 : pos + length])
        # KEY and DATA each nest one attribute (a value, or a verdict).
        key = _first(element.get(NFTA_SET_ELEM_KEY, b""))
        if key is not None and key[0] == NFTA_DATA_VALUE:
            data = _first(element.get(NFTA_SET_ELEM_DATA, b""))
            out.append((key[1], {} if data is None else {data[0]: data[1]}))
        pos += (length + 3) & ~3
    return out


def _first(nested: bytes) -> tuple[int, bytes] | None:
    """The kind and payload of a nested attribute's first member."""
    if len(nested) < 4:
        return None
    length, kind = struct.unpack_from("=HH", nested, 0)
    return kind & 0x3FFF, nested[4:length]


def _list(data: bytes) -> list[bytes]:
    """The members of a netlink attribute list (every ``NFTA_LIST_ELEM``)."""
    out: list[bytes] = []
    pos = 0
    while pos + 4 <= len(data):
        length = struct.unpack_from("=H", data, pos)[0]
        if length < 4:
            break
        out.append(data[pos + 4 : pos + length])
        pos += (length + 3) & ~3
    return out


class NftElementReader(NetlinkSocket):
    """Gets elements of the maps of one table by key."""

    def __init__(self, table: str, netns: str | None = None) -> None:
        super().__init__(NETLINK_NETFILTER, sock=socket_in(netns, NETLINK_NETFILTER))
        self.table = table

    def __enter__(self) -> NftElementReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get(self, set_name: str, keys: Sequence[bytes]) -> list[Mapping[int, bytes] | None]:
        """Each key's element data attributes (``NFTA_DATA_*``), or None where the set has no
        such key."""
        header = (
            struct.pack("=BBH", socket.AF_INET, 0, 0)
            + nla(NFTA_SET_ELEM_LIST_TABLE, self.table.encode() + b"\0")
            + nla(NFTA_SET_ELEM_LIST_SET, set_name.encode() + b"\0")
        )
        kind = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETSETELEM
        found: list[Mapping[int, bytes] | None] = [None] * len(keys)
        for start in range(0, len(keys), BATCH):
            chunk = keys[start : start + BATCH]
            first = self.seq + 1
            buf = b"".join(
                self._raw(
                    kind,
                    NLM_F_REQUEST | NLM_F_ACK,
                    header
                    + _nested(
                        NFTA_SET_ELEM_LIST_ELEMENTS,
                        _nested(
                            NFTA_LIST_ELEM,
                            _nested(NFTA_SET_ELEM_KEY, nla(NFTA_DATA_VALUE, key)),
                        ),
                    ),
                )
                for key in chunk
            )
            last = self.seq
            self.sock.send(buf)
            done = False
            while not done:
                for msg_kind, _, seq, payload in self._recv():
                    index = start + seq - first
                    if msg_kind == NLMSG_ERROR:
                        code = -struct.unpack_from("=i", payload)[0]
                        if code not in (0, errno.ENOENT):
                            raise OSError(code, f"get element {set_name}: {os.strerror(code)}")
                        done = done or seq == last
                    elif msg_kind & 0xFF == NFT_MSG_NEWSETELEM:
                        elements = _attrs(_attrs(payload[4:])[NFTA_SET_ELEM_LIST_ELEMENTS])
                        element = _attrs(elements[NFTA_LIST_ELEM])
                        found[index] = _attrs(element.get(NFTA_SET_ELEM_DATA, b""))
        return found

    def pickers(self, keys: Sequence[VsKey]) -> dict[VsKey, Picker]:
        """Where the ``services`` map sends each key that it holds."""
        out: dict[VsKey, Picker] = {}
        for key, data in zip(
            keys, self.get(SERVICES_MAP, [service_key(k) for k in keys]), strict=True
        ):
            verdict = _attrs(data.get(NFTA_DATA_VERDICT, b"")) if data is not None else {}
            code = verdict.get(NFTA_VERDICT_CODE)
            if code is None or struct.unpack("!i", code)[0] != NFT_GOTO:
                continue
            picker = Picker.of_chain(verdict.get(NFTA_VERDICT_CHAIN, b"").rstrip(b"\0").decode())
            if picker is not None:
                out[key] = picker
        return out

    def slots(self, picker: Picker, key: VsKey, spare: int = 8) -> dict[int, Real]:
        """The service's slots: the ``modulus`` below it, and draining ones above it until the
        first gap (they are numbered from the modulus up)."""
        out: dict[int, Real] = {}
        end = picker.modulus + spare
        start = 0
        while True:
            wanted = list(range(start, end))
            datas = self.get(picker.slots, [slot_key(key, i) for i in wanted])
            for slot, data in zip(wanted, datas, strict=True):
                value = data.get(NFTA_DATA_VALUE) if data is not None else None
                if value is not None and len(value) >= 6:
                    out[slot] = _real(value)
            if datas[-1] is None:
                return out
            start, end = end, end + spare

    # ----------------------------------------------------------------------- the whole table

    def _dump(self, msg: int, attrs: bytes) -> list[bytes]:
        """The payload (after nfgenmsg) of every message a dump answers; ENOENT (no such table
        or set) raises ``FileNotFoundError`` (``OSError`` picks the subclass by errno)."""
        body = struct.pack("=BBH", socket.AF_INET, 0, 0) + attrs
        return [p[4:] for p in self.dump((NFNL_SUBSYS_NFTABLES << 8) | msg, body)]

    def set_names(self) -> set[str]:
        table = nla(NFTA_SET_TABLE, self.table.encode() + b"\0")
        return {
            _string(_attrs(p).get(NFTA_SET_NAME, b"")) for p in self._dump(NFT_MSG_GETSET, table)
        }

    def dump_elements(self, set_name: str) -> list[tuple[bytes, Mapping[int, bytes]]]:
        attrs = nla(NFTA_SET_ELEM_LIST_TABLE, self.table.encode() + b"\0") + nla(
            NFTA_SET_ELEM_LIST_SET, set_name.encode() + b"\0"
        )
        return [e for payload in self._dump(NFT_MSG_GETSETELEM, attrs) for e in _elements(payload)]

    def rule_lookups(self) -> dict[str, list[set[str]]]:
        """Chain -> for each of its rules, the sets its ``lookup`` expressions use (a vmap, a
        dnat through a map)."""
        table = nla(NFTA_RULE_TABLE, self.table.encode() + b"\0")
        out: dict[str, list[set[str]]] = {}
        for payload in self._dump(NFT_MSG_GETRULE, table):
            rule = _attrs(payload)
            used: set[str] = set()
            for expr in _list(rule.get(NFTA_RULE_EXPRESSIONS, b"")):
                parts = _attrs(expr)
                if _string(parts.get(NFTA_EXPR_NAME, b"")) == "lookup":
                    used.add(
                        _string(_attrs(parts.get(NFTA_EXPR_DATA, b"")).get(NFTA_LOOKUP_SET, b""))
                    )
            out.setdefault(_string(rule.get(NFTA_RULE_CHAIN, b"")), []).append(used)
        return out

    def read_table(self) -> tuple[dict[VsKey, CurrentVs], bool] | None:
        """Every virtual service in the table, and whether the table is complete (its
        ``services`` map, both hooks' lookups, a rule in the chain of every picker in use that
        uses the picker's map); None when there is no table."""
        try:
            names = self.set_names()
            if SERVICES_MAP not in names:
                return {}, False
            pickers: dict[VsKey, Picker] = {}
            # Slot keys start with their service's key: decoded once, from the services map.
            keys: dict[bytes, VsKey] = {}
            for raw, data in self.dump_elements(SERVICES_MAP):
                key, picker = _vs_key(raw), _picker(data)
                if key is not None and picker is not None:
                    pickers[key] = picker
                    keys[raw[:12]] = key
            reals: dict[bytes, Real] = {}
            slots: dict[tuple[str, VsKey], dict[int, Real]] = {}
            for name in sorted({p.slots for p in pickers.values()} & names):
                for raw, data in self.dump_elements(name):
                    found = keys.get(raw[:12])
                    value = data.get(NFTA_DATA_VALUE)
                    if found is not None and value is not None and len(raw) >= 16:
                        real = reals.get(value)
                        if real is None:
                            real = reals[value] = _real(value)
                        slot = int.from_bytes(raw[12:16], sys.byteorder)
                        slots.setdefault((name, found), {})[slot] = real
            lookups = self.rule_lookups()
        except FileNotFoundError:
            return None
        services = {
            key: service_of(picker, slots.get((picker.slots, key), {}))
            for key, picker in pickers.items()
        }
        wanted = {hook: SERVICES_MAP for hook in HOOK_CHAINS}
        wanted.update({p.chain: p.slots for p in pickers.values()})
        complete = all(
            used in names and any(used in rule for rule in lookups.get(chain, []))
            for chain, used in wanted.items()
        )
        return services, complete

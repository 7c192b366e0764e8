"""A small generic-netlink client for IPVS: the same messages as pyroute2's ``IPVS`` (and as
``ipvsadm``), encoded with ``struct`` and sent in batches.

pyroute2 sends one request, runs an event loop and waits for its acknowledgement before the next
one; at 10,000 virtual services x 4 real servers that is 50,000 round trips through a Python
event loop. Here many requests go in one ``sendmsg`` (the kernel's ``netlink_rcv_skb`` handles
every message of a buffer in turn and acknowledges each), and the acknowledgements are read
after each batch. Every request still gets its own acknowledgement, so an error is reported
against the write that caused it. Dumps cannot be pipelined (one dump at a time per socket), so
a dump is one request and its multi-part answer.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import socket
import struct
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

NETLINK_GENERIC = 16
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10
GENL_ID_CTRL = 0x10
CLONE_NEWNET = 0x40000000
CTRL_CMD_GETFAMILY = 3
CTRL_ATTR_FAMILY_ID = 1
CTRL_ATTR_FAMILY_NAME = 2

NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3

CMD_NEW_SERVICE = 1
CMD_SET_SERVICE = 2
CMD_DEL_SERVICE = 3
CMD_GET_SERVICE = 4
CMD_NEW_DEST = 5
CMD_SET_DEST = 6
CMD_DEL_DEST = 7
CMD_GET_DEST = 8

ATTR_SERVICE = 1
ATTR_DEST = 2

SVC_AF = 1
SVC_PROTOCOL = 2
SVC_ADDR = 3
SVC_PORT = 4
SVC_SCHED_NAME = 6
SVC_FLAGS = 7
SVC_TIMEOUT = 8
SVC_NETMASK = 9

DEST_ADDR = 1
DEST_PORT = 2
DEST_FWD_METHOD = 3
DEST_WEIGHT = 4
DEST_U_THRESH = 5
DEST_L_THRESH = 6
DEST_ACTIVE_CONNS = 7
DEST_INACT_CONNS = 8
DEST_ADDR_FAMILY = 11

BATCH = 512
"""Requests per ``sendmsg`` (~60 KB, within the default socket send buffer); only errors and the
last acknowledgement come back, and even 512 errors fit the receive buffer."""

_HDR = struct.Struct("=IHHII")
_GENL = struct.Struct("=BBH")
_NLA = struct.Struct("=HH")


class GenlError(OSError):
    """The kernel refused a request (``errno`` is the kernel's error)."""


def nla(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return _NLA.pack(length, kind) + payload + b"\0" * (-length & 3)


def attributes(data: bytes) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    pos, end = 0, len(data)
    while pos + 4 <= end:
        length, kind = _NLA.unpack_from(data, pos)
        if length < 4:
            break
        out[kind & 0x3FFF] = data[pos + 4 : pos + length]
        pos += (length + 3) & ~3
    return out


@dataclass(frozen=True)
class SvcKey:
    """A virtual service as the kernel keys it: address family, protocol, address, port."""

    af: int
    protocol: int
    addr: bytes
    port: int

    @classmethod
    def of(cls, address: str, protocol: int, port: int) -> SvcKey:
        af = socket.AF_INET6 if ":" in address else socket.AF_INET
        return cls(af, protocol, socket.inet_pton(af, address), port)

    @property
    def address(self) -> str:
        return socket.inet_ntop(self.af, self.addr)

    @property
    def encoded(self) -> bytes:
        """The service's key attributes (sent with the service and with each of its dests)."""
        return _key_attrs(self)

    def _encode(self) -> bytes:
        return (
            nla(SVC_AF, struct.pack("=H", self.af))
            + nla(SVC_PROTOCOL, struct.pack("=H", self.protocol))
            + nla(SVC_ADDR, self.addr)
            + nla(SVC_PORT, struct.pack("!H", self.port))
        )


@dataclass(frozen=True)
class Service:
    key: SvcKey
    scheduler: str


@dataclass(frozen=True)
class Dest:
    address: str
    port: int
    fwd_method: int
    weight: int
    active: int = 0
    inactive: int = 0


def _service_full(key: SvcKey, scheduler: str) -> bytes:
    netmask = 0xFFFFFFFF if key.af == socket.AF_INET else 128
    return (
        key.encoded
        + nla(SVC_SCHED_NAME, scheduler.encode() + b"\0")
        + nla(SVC_FLAGS, struct.pack("=II", 0, 0xFFFF))
        + nla(SVC_TIMEOUT, struct.pack("=I", 0))
        + nla(SVC_NETMASK, struct.pack("=I", netmask))
    )


def _dest_key(address: str, port: int) -> bytes:
    af = socket.AF_INET6 if ":" in address else socket.AF_INET
    return (
        nla(DEST_ADDR, socket.inet_pton(af, address))
        + nla(DEST_PORT, struct.pack("!H", port))
        + nla(DEST_ADDR_FAMILY, struct.pack("=H", af))
    )


@functools.lru_cache(maxsize=1 << 16)
def _key_attrs(key: SvcKey) -> bytes:
    # Cached: a service's key goes with the service and with each of its real servers.
    return key._encode()


@functools.lru_cache(maxsize=1 << 16)
def _service_attr(key: SvcKey) -> bytes:
    return nla(ATTR_SERVICE, key.encoded)


@functools.lru_cache(maxsize=1 << 14)
def _dest_attr(address: str, port: int, weight: int, fwd_method: int) -> bytes:
    return nla(ATTR_DEST, _dest_full(address, port, weight, fwd_method))


@functools.lru_cache(maxsize=1 << 14)
def _dest_full(address: str, port: int, weight: int, fwd_method: int) -> bytes:
    # Cached: the same real servers (an L7 pool) sit behind thousands of services.
    return (
        _dest_key(address, port)
        + nla(DEST_FWD_METHOD, struct.pack("=I", fwd_method))
        + nla(DEST_WEIGHT, struct.pack("=I", weight))
        + nla(DEST_U_THRESH, struct.pack("=I", 0))
        + nla(DEST_L_THRESH, struct.pack("=I", 0))
    )


Request = tuple[int, bytes]
"""(IPVS command, attributes): one write."""


def add_service(key: SvcKey, scheduler: str) -> Request:
    return CMD_NEW_SERVICE, nla(ATTR_SERVICE, _service_full(key, scheduler))


def set_service(key: SvcKey, scheduler: str) -> Request:
    return CMD_SET_SERVICE, nla(ATTR_SERVICE, _service_full(key, scheduler))


def del_service(key: SvcKey) -> Request:
    return CMD_DEL_SERVICE, nla(ATTR_SERVICE, key.encoded)


def add_dest(key: SvcKey, address: str, port: int, weight: int, fwd: int) -> Request:
    return CMD_NEW_DEST, _service_attr(key) + _dest_attr(address, port, weight, fwd)


def set_dest(key: SvcKey, address: str, port: int, weight: int, fwd: int) -> Request:
    return CMD_SET_DEST, _service_attr(key) + _dest_attr(address, port, weight, fwd)


def del_dest(key: SvcKey, address: str, port: int) -> Request:
    return CMD_DEL_DEST, nla(ATTR_SERVICE, key.encoded) + nla(ATTR_DEST, _dest_key(address, port))


def socket_in(netns: str | None, protocol: int) -> socket.socket:
    """A netlink socket of ``protocol`` in the namespace ``netns`` (an ``ip netns`` name), or in
    ours.
    A socket belongs to the namespace it was created in; a short-lived thread enters the
    namespace (setns affects only the calling thread) so the process stays where it is."""
    if netns is None:
        return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, protocol)
    made: list[socket.socket] = []
    failed: list[BaseException] = []

    def enter() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    code = ctypes.get_errno()
                    raise OSError(code, f"setns {netns}: {os.strerror(code)}")
            finally:
                os.close(fd)
            made.append(socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, protocol))
        except BaseException as exc:  # handed to the caller's thread
            failed.append(exc)

    thread = threading.Thread(target=enter, name=f"netns-{netns}")
    thread.start()
    thread.join()
    if failed:
        raise failed[0]
    return made[0]


class NetlinkSocket:
    """A raw netlink socket that writes in batches. ``messages`` counts requests sent."""

    def __init__(self, protocol: int, sock: socket.socket | None = None) -> None:
        """``sock``: an unbound netlink socket of ``protocol`` made elsewhere (in another
        network namespace); else one is made here."""
        self.sock = sock or socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, protocol)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE (root)
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
        self.sock.bind((0, 0))
        self.seq = 0
        self.messages = 0

    def close(self) -> None:
        self.sock.close()

    def _raw(self, kind: int, flags: int, body: bytes) -> bytes:
        self.seq += 1
        self.messages += 1
        return _HDR.pack(16 + len(body), kind, flags, self.seq, 0) + body

    def _recv(self) -> Iterator[tuple[int, int, int, bytes]]:
        """(type, flags, seq, payload) of each message in one datagram."""
        data = self.sock.recv(1 << 20)
        pos = 0
        while pos + 16 <= len(data):
            length, kind, flags, seq, _ = _HDR.unpack_from(data, pos)
            if length < 16:
                break
            yield kind, flags, seq, data[pos + 16 : pos + length]
            pos += (length + 3) & ~3

    def request(self, kind: int, body: bytes) -> list[tuple[int, bytes]]:
        """One request and its answers, (type, payload) each, until its acknowledgement; a
        refusal raises ``OSError`` with the kernel's errno, except ENODEV / ENOENT (nothing
        there: no answers)."""
        self.sock.send(self._raw(kind, NLM_F_REQUEST | NLM_F_ACK, body))
        seq = self.seq
        out: list[tuple[int, bytes]] = []
        while True:
            for got, _, answer_seq, payload in self._recv():
                if answer_seq != seq:
                    continue
                if got == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", payload)[0]
                    if code in (0, errno.ENODEV, errno.ENOENT):
                        return out
                    raise OSError(code, os.strerror(code))
                out.append((got, payload))

    def dump(self, kind: int, body: bytes) -> list[bytes]:
        """Every message's payload of a dump (``NLM_F_DUMP``) until its end."""
        self.sock.send(self._raw(kind, NLM_F_REQUEST | NLM_F_DUMP, body))
        out: list[bytes] = []
        while True:
            for got, _, _, payload in self._recv():
                if got == NLMSG_DONE:
                    return out
                if got == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", payload)[0]
                    if code == 0:
                        return out
                    raise OSError(code, os.strerror(code))
                out.append(payload)

    def write_raw(self, requests: Sequence[tuple[int, int, bytes]]) -> list[tuple[int, int]]:
        """Send every ``(type, extra flags, body)`` request in batches; returns ``(index, errno)``
        of each refused request (empty: all done).

        Only the last request of a batch asks for an acknowledgement: the kernel handles a
        buffer's messages in order and answers a failed request with an error whether or not it
        asked for one, so the last acknowledgement means the batch is done and every error
        before it names its request by sequence number. (An acknowledgement per request cost
        one receive per write: 55,000 at 10,000 services.)"""
        failed: list[tuple[int, int]] = []
        for start in range(0, len(requests), BATCH):
            chunk = requests[start : start + BATCH]
            first = self.seq + 1
            buf = b"".join(
                self._raw(
                    kind,
                    NLM_F_REQUEST | flags | (NLM_F_ACK if i == len(chunk) - 1 else 0),
                    body,
                )
                for i, (kind, flags, body) in enumerate(chunk)
            )
            last = self.seq
            self.sock.send(buf)
            done = False
            while not done:
                for kind, _, seq, payload in self._recv():
                    if kind != NLMSG_ERROR:
                        continue
                    code = -struct.unpack_from("=i", payload)[0]
                    if code:
                        failed.append((start + seq - first, code))
                    done = done or seq == last
        return failed


class IpvsNetlink(NetlinkSocket):
    """A generic-netlink socket bound to the IPVS family."""

    def __init__(self) -> None:
        super().__init__(NETLINK_GENERIC)
        self.family = self._resolve(b"IPVS")

    def __enter__(self) -> IpvsNetlink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _msg(self, family: int, cmd: int, attrs: bytes, flags: int, version: int = 1) -> bytes:
        return self._raw(family, flags, _GENL.pack(cmd, version, 0) + attrs)

    def _resolve(self, name: bytes) -> int:
        msg = self._msg(
            GENL_ID_CTRL, CTRL_CMD_GETFAMILY, nla(CTRL_ATTR_FAMILY_NAME, name + b"\0"),
            NLM_F_REQUEST, version=2,
        )  # fmt: skip
        self.sock.send(msg)
        for kind, _, _, payload in self._recv():
            if kind == NLMSG_ERROR:
                code = -struct.unpack_from("=i", payload)[0]
                raise GenlError(
                    code, f"generic netlink family {name.decode()}: {os.strerror(code)}"
                )
            return int(struct.unpack("=H", attributes(payload[4:])[CTRL_ATTR_FAMILY_ID])[0])
        raise GenlError(errno.EIO, "no answer from the generic netlink controller")

    def write(self, requests: Sequence[Request]) -> list[tuple[int, int]]:
        """Every IPVS write, batched; ``(index, errno)`` of each the kernel refused."""
        return self.write_raw(
            [(self.family, 0, _GENL.pack(cmd, 1, 0) + attrs) for cmd, attrs in requests]
        )

    def _dump(self, cmd: int, attrs: bytes) -> Iterator[bytes]:
        self.sock.send(self._msg(self.family, cmd, attrs, NLM_F_REQUEST | NLM_F_DUMP))
        while True:
            for kind, _, _, payload in self._recv():
                if kind == NLMSG_DONE:
                    return
                if kind == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", payload)[0]
                    if code == 0:
                        return
                    raise GenlError(code, os.strerror(code))
                yield payload[4:]

    def services(self) -> list[Service]:
        out = []
        for payload in self._dump(CMD_GET_SERVICE, b""):
            a = attributes(attributes(payload)[ATTR_SERVICE])
            if SVC_ADDR not in a:
                continue  # a fwmark service
            af = struct.unpack("=H", a[SVC_AF])[0]
            size = 4 if af == socket.AF_INET else 16
            key = SvcKey(
                af,
                struct.unpack("=H", a[SVC_PROTOCOL])[0],
                a[SVC_ADDR][:size],
                struct.unpack("!H", a[SVC_PORT])[0],
            )
            out.append(Service(key, a[SVC_SCHED_NAME].rstrip(b"\0").decode()))
        return out

    def service(self, key: SvcKey) -> Service | None:
        """One virtual service by key (a ``get``, not a dump); None when absent."""
        self.sock.send(
            self._msg(self.family, CMD_GET_SERVICE, nla(ATTR_SERVICE, key.encoded), NLM_F_REQUEST)
        )
        for kind, _, _, payload in self._recv():
            if kind == NLMSG_ERROR:
                code = -struct.unpack_from("=i", payload)[0]
                if code == errno.ESRCH:
                    return None
                raise GenlError(code, os.strerror(code))
            a = attributes(attributes(payload[4:])[ATTR_SERVICE])
            return Service(key, a[SVC_SCHED_NAME].rstrip(b"\0").decode())
        raise GenlError(errno.EIO, "no answer for a service get")

    def dests(self, key: SvcKey) -> list[Dest]:
        out = []
        for payload in self._dump(CMD_GET_DEST, nla(ATTR_SERVICE, key.encoded)):
            a = attributes(attributes(payload)[ATTR_DEST])
            af = struct.unpack("=H", a[DEST_ADDR_FAMILY])[0] if DEST_ADDR_FAMILY in a else key.af
            size = 4 if af == socket.AF_INET else 16
            out.append(
                Dest(
                    address=socket.inet_ntop(af, a[DEST_ADDR][:size]),
                    port=struct.unpack("!H", a[DEST_PORT])[0],
                    fwd_method=struct.unpack("=I", a[DEST_FWD_METHOD])[0],
                    weight=struct.unpack("=i", a[DEST_WEIGHT])[0],
                    active=struct.unpack("=I", a[DEST_ACTIVE_CONNS])[0],
                    inactive=struct.unpack("=I", a[DEST_INACT_CONNS])[0],
                )
            )
        return out

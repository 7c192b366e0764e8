"""VIPs bound on a dummy interface of our own: the interface is the mark of what we created.

The kernel accepts traffic to a VIP (and IPVS sees it in LOCAL_IN) only when the address is
local. A dedicated dummy interface keeps our VIPs apart from every address an operator or
another tool put on the node, so a reconcile can list "ours" without guessing.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import struct
from collections.abc import Collection, Iterator, Sequence

from pyroute2 import IPRoute  # type: ignore[import-untyped]
from pyroute2.netlink.exceptions import NetlinkError  # type: ignore[import-untyped]

from .genl_ipvs import NetlinkSocket, attributes, nla, socket_in

NETLINK_ROUTE = 0
RTM_NEWLINK = 16
RTM_GETLINK = 18
RTM_NEWADDR = 20
RTM_DELADDR = 21
RTM_GETADDR = 22
RTM_NEWROUTE = 24
RTM_GETROUTE = 26
RTM_F_FIB_MATCH = 0x2000
RTA_DST = 1
RTA_OIF = 4
RTN_LOCAL = 2
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
IFA_ADDRESS = 1
IFA_LOCAL = 2
IFLA_IFNAME = 3
_IFADDR = struct.Struct("=BBBBI")
_IFINFO = struct.Struct("=BxHiII")
_RTMSG = struct.Struct("=BBBBBBBBI")


class DummyVips:
    """Addresses through rtnetlink on a socket of the node's (or ``netns``'s) namespace: one
    link lookup and one dump to list, one batch to bind or unbind. (pyroute2 took ~15 ms per
    call in a namespace, and 100-200 ms to list 1,000 addresses; it still creates the link.)"""

    def __init__(self, ifname: str = "ingress-vip0", netns: str | None = None) -> None:
        if not 1 <= len(ifname) <= 15:
            raise ValueError(f"interface name {ifname!r} must have 1 to 15 characters")
        self.ifname = ifname
        self.netns = netns

    def _socket(self) -> NetlinkSocket:
        return NetlinkSocket(NETLINK_ROUTE, sock=socket_in(self.netns, NETLINK_ROUTE))

    def _ipr(self) -> IPRoute:
        return IPRoute(netns=self.netns) if self.netns else IPRoute()

    def _lookup(self, sock: NetlinkSocket) -> int | None:
        body = _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + nla(
            IFLA_IFNAME, self.ifname.encode() + b"\0"
        )
        for kind, payload in sock.request(RTM_GETLINK, body):
            if kind == RTM_NEWLINK:
                return int(_IFINFO.unpack_from(payload)[2])
        return None

    def _index(self, create: bool) -> int | None:
        sock = self._socket()
        try:
            found = self._lookup(sock)
        finally:
            sock.close()
        if found is not None or not create:
            return found
        with self._ipr() as ipr:
            try:
                ipr.link("add", ifname=self.ifname, kind="dummy")
            except NetlinkError as exc:
                if exc.code != errno.EOPNOTSUPP:
                    raise
                # Kernels built without CONFIG_DUMMY (this project's CI host): a bridge without
                # ports holds local addresses just as well and is just as clearly ours.
                ipr.link("add", ifname=self.ifname, kind="bridge")
            index = int(ipr.link_lookup(ifname=self.ifname)[0])
            ipr.link("set", index=index, state="up")
        return index

    @contextlib.contextmanager
    def _ours(self) -> Iterator[tuple[NetlinkSocket, int | None]]:
        """A socket of the namespace and our interface's index (None: it does not exist)."""
        sock = self._socket()
        try:
            yield sock, self._lookup(sock)
        finally:
            sock.close()

    def list(self) -> frozenset[str]:
        with self._ours() as (sock, index):
            if index is None:
                return frozenset()
            found: set[str] = set()
            for payload in sock.dump(RTM_GETADDR, _IFADDR.pack(socket.AF_INET, 0, 0, 0, index)):
                family, _, _, _, on = _IFADDR.unpack_from(payload)
                if family != socket.AF_INET or on != index:
                    continue  # the dump covers every interface; ours is filtered here
                attrs = attributes(payload[_IFADDR.size :])
                value = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
                if value is not None:
                    found.add(socket.inet_ntoa(value))
            return frozenset(found)

    def bound(self, vips: Collection[str]) -> frozenset[str]:
        """Which of ``vips`` are bound on our interface: one route lookup each, where listing
        every address (:meth:`list`) parses all of them (~25 ms at 10,000 VIPs, after every
        bind). The kernel's local route of a bound address names the device that holds it
        (``ip route get VIP fibmatch``); no local route means bound nowhere. An address that
        is local through another device is settled by the whole list."""
        with self._ours() as (sock, index):
            if index is None:
                return frozenset()
            found: set[str] = set()
            unsure = False
            for vip in vips:
                where = self._local_device(sock, vip)
                if where == index:
                    found.add(vip)
                elif where is not None:
                    unsure = True
        if unsure:
            return self.list() & frozenset(vips)
        return frozenset(found)

    @staticmethod
    def _local_device(sock: NetlinkSocket, vip: str) -> int | None:
        """The device of ``vip``'s local route (None: the address is not local here)."""
        body = _RTMSG.pack(socket.AF_INET, 32, 0, 0, 0, 0, 0, 0, RTM_F_FIB_MATCH) + nla(
            RTA_DST, socket.inet_aton(vip)
        )
        try:
            answers = sock.request(RTM_GETROUTE, body)
        except OSError as exc:
            if exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
                return None  # no route at all, let alone a local one
            raise
        for kind, payload in answers:
            if kind != RTM_NEWROUTE or _RTMSG.unpack_from(payload)[7] != RTN_LOCAL:
                continue
            oif = attributes(payload[_RTMSG.size :]).get(RTA_OIF)
            if oif is not None:
                return int(struct.unpack("=i", oif[:4])[0])
        return None

    def add_many(self, vips: Sequence[str]) -> int:
        """Bind ``vips`` (one batch of RTM_NEWADDR); returns the netlink requests it took."""
        return self._many(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, vips, create=True)

    def delete_many(self, vips: Sequence[str]) -> int:
        return self._many(RTM_DELADDR, 0, vips, create=False)

    def _many(self, kind: int, flags: int, vips: Sequence[str], create: bool) -> int:
        index = self._index(create=create)
        if index is None:
            return 1
        sock = self._socket()
        try:
            requests = [
                (
                    kind,
                    flags,
                    _IFADDR.pack(socket.AF_INET, 32, 0, 0, index)
                    + nla(IFA_LOCAL, socket.inet_aton(vip))
                    + nla(IFA_ADDRESS, socket.inet_aton(vip)),
                )
                for vip in vips
            ]
            failed = sock.write_raw(requests)
        finally:
            sock.close()
        # Adding a bound address or deleting a missing one is already the wanted state.
        bad = [
            (vips[i], code)
            for i, code in failed
            if not (kind == RTM_NEWADDR and code == errno.EEXIST)
            and not (kind == RTM_DELADDR and code == errno.EADDRNOTAVAIL)
        ]
        if bad:
            raise OSError(
                bad[0][1], "; ".join(f"{vip} on {self.ifname}: {os.strerror(c)}" for vip, c in bad)
            )
        return 1 + sock.messages

"""VIPs bound on a dummy interface of our own: the interface is the mark of what we created.

The kernel accepts traffic to a VIP (and IPVS sees it in LOCAL_IN) only when the address is
local. A dedicated dummy interface keeps our VIPs apart from every address an operator or
another tool put on the node, so a reconcile can list "ours" without guessing.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Sequence

from pyroute2 import IPRoute  # type: ignore[import-untyped]
from pyroute2.netlink.exceptions import NetlinkError  # type: ignore[import-untyped]

from .genl_ipvs import NetlinkSocket, nla

NETLINK_ROUTE = 0
RTM_NEWADDR = 20
RTM_DELADDR = 21
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
IFA_ADDRESS = 1
IFA_LOCAL = 2
_IFADDR = struct.Struct("=BBBBI")


class DummyVips:
    def __init__(self, ifname: str = "ingress-vip0", netns: str | None = None) -> None:
        if not 1 <= len(ifname) <= 15:
            raise ValueError(f"interface name {ifname!r} must have 1 to 15 characters")
        self.ifname = ifname
        self.netns = netns

    def _ipr(self) -> IPRoute:
        return IPRoute(netns=self.netns) if self.netns else IPRoute()

    def _index(self, ipr: IPRoute, create: bool) -> int | None:
        found = ipr.link_lookup(ifname=self.ifname)
        if found:
            return int(found[0])
        if not create:
            return None
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

    def list(self) -> frozenset[str]:
        with self._ipr() as ipr:
            index = self._index(ipr, create=False)
            if index is None:
                return frozenset()
            return frozenset(
                str(a.get_attr("IFA_ADDRESS")) for a in ipr.get_addr(index=index, family=2)
            )

    def add(self, vip: str) -> None:
        with self._ipr() as ipr:
            index = self._index(ipr, create=True)
            ipr.addr("add", index=index, address=vip, prefixlen=32)

    def add_many(self, vips: Sequence[str]) -> int:
        """Bind ``vips`` (one batch of RTM_NEWADDR); returns the netlink requests it took."""
        return self._many(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, vips, create=True)

    def delete_many(self, vips: Sequence[str]) -> int:
        return self._many(RTM_DELADDR, 0, vips, create=False)

    def _many(self, kind: int, flags: int, vips: Sequence[str], create: bool) -> int:
        with self._ipr() as ipr:
            index = self._index(ipr, create=create)
        if index is None:
            return 1
        if self.netns is not None:  # tests only: pyroute2 reaches into the namespace
            for vip in vips:
                (self.add if kind == RTM_NEWADDR else self.delete)(vip)
            return 1 + len(vips)
        sock = NetlinkSocket(NETLINK_ROUTE)
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

    def delete(self, vip: str) -> None:
        with self._ipr() as ipr:
            index = self._index(ipr, create=False)
            if index is not None:
                ipr.addr("del", index=index, address=vip, prefixlen=32)

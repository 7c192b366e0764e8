"""VIPs bound on a dummy interface of our own: the interface is the mark of what we created.

The kernel accepts traffic to a VIP (and IPVS sees it in LOCAL_IN) only when the address is
local. A dedicated dummy interface keeps our VIPs apart from every address an operator or
another tool put on the node, so a reconcile can list "ours" without guessing.
"""

from __future__ import annotations

import errno

from pyroute2 import IPRoute  # type: ignore[import-untyped]
from pyroute2.netlink.exceptions import NetlinkError  # type: ignore[import-untyped]


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

    def delete(self, vip: str) -> None:
        with self._ipr() as ipr:
            index = self._index(ipr, create=False)
            if index is not None:
                ipr.addr("del", index=index, address=vip, prefixlen=32)

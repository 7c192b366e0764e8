"""The L7-node role: decapsulate IP-in-IP from the L4 tier and answer straight from the VIP.

IPVS in tunnel mode sends the client's packet, unchanged, inside an outer IPv4 header to the real
server. The real server must (1) receive IPIP: the ``ipip`` module's fallback device ``tunl0``
takes every IPIP packet no other tunnel claims; (2) own the VIP, so the inner packet is local:
the VIP goes on ``tunl0``; (3) not drop it: the inner source is the client, which reverse-path
filtering would judge to arrive on the wrong interface, so ``rp_filter`` is 0 on ``tunl0`` and
``all`` (the kernel uses the larger of the two); (4) never answer ARP for the VIP, or it would
steal the VIP from the L4 tier on a shared segment: ``arp_ignore=1`` (answer only for addresses
of the receiving interface) and ``arp_announce=2`` (never use the VIP as an ARP source). Replies
leave from the VIP straight to the client (direct server return), not back through the L4 node.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from typing import Protocol

from pyroute2 import IPRoute  # type: ignore[import-untyped]

L7_SYSCTLS = {
    "net.ipv4.conf.all.rp_filter": "0",
    "net.ipv4.conf.tunl0.rp_filter": "0",
    "net.ipv4.conf.all.arp_ignore": "1",
    "net.ipv4.conf.all.arp_announce": "2",
}


class Decap(Protocol):
    """The decapsulating device of an L7 pod (the L7-node role's one side effect)."""

    def prepare(self) -> None:
        """The ipip module, the device up, the sysctls; raises when it cannot be done."""

    def bound(self) -> frozenset[str]: ...

    def bind(self, vips: Iterable[str]) -> None: ...

    def unbind(self, vips: Iterable[str]) -> None: ...


class L7Decap:
    def __init__(self, netns: str | None = None, device: str = "tunl0") -> None:
        self.netns = netns
        self.device = device

    def _run(self, *cmd: str) -> None:
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        proc = subprocess.run([*prefix, *cmd], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: {proc.stderr.strip()}")

    def _ipr(self) -> IPRoute:
        return IPRoute(netns=self.netns) if self.netns else IPRoute()

    def _index(self, ipr: IPRoute) -> int:
        found = ipr.link_lookup(ifname=self.device)
        if not found:
            raise RuntimeError(f"no {self.device}: the ipip kernel module is not loaded")
        return int(found[0])

    def _sysctl(self, key: str) -> str:
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        proc = subprocess.run(
            [*prefix, "sysctl", "-n", key], capture_output=True, text=True, check=False
        )
        return proc.stdout.strip()

    def prepare(self) -> None:
        subprocess.run(["modprobe", "ipip"], capture_output=True, check=False)
        with self._ipr() as ipr:
            ipr.link("set", index=self._index(ipr), state="up")
        for key, value in L7_SYSCTLS.items():
            # Read first: in a pod, /proc/sys is read-only and the pod's own securityContext
            # sets these (deploy/envoy/envoy.yaml); writing is only needed where they differ.
            if self._sysctl(key) != value:
                self._run("sysctl", "-q", "-w", f"{key}={value}")

    def bound(self) -> frozenset[str]:
        with self._ipr() as ipr:
            index = self._index(ipr)
            return frozenset(
                str(a.get_attr("IFA_ADDRESS")) for a in ipr.get_addr(index=index, family=2)
            )

    def bind(self, vips: Iterable[str]) -> None:
        with self._ipr() as ipr:
            index = self._index(ipr)
            for vip in vips:
                ipr.addr("add", index=index, address=vip, prefixlen=32)

    def unbind(self, vips: Iterable[str]) -> None:
        with self._ipr() as ipr:
            index = self._index(ipr)
            for vip in vips:
                ipr.addr("del", index=index, address=vip, prefixlen=32)

    def ensure(self, vips: frozenset[str]) -> None:
        """Exactly ``vips`` bound, the device prepared (test set-up of L7 namespaces)."""
        self.prepare()
        have = self.bound()
        self.bind(sorted(vips - have))
        self.unbind(sorted(have - vips))


class FakeDecap:
    def __init__(self, bound: Iterable[str] = (), missing: str | None = None) -> None:
        self.addresses = set(bound)
        self.missing = missing
        self.prepared = 0

    def prepare(self) -> None:
        if self.missing is not None:
            raise RuntimeError(self.missing)
        self.prepared += 1

    def bound(self) -> frozenset[str]:
        return frozenset(self.addresses)

    def bind(self, vips: Iterable[str]) -> None:
        self.addresses.update(vips)

    def unbind(self, vips: Iterable[str]) -> None:
        self.addresses.difference_update(vips)

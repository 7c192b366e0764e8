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

from pyroute2 import IPRoute  # type: ignore[import-untyped]

L7_SYSCTLS = {
    "net.ipv4.conf.all.rp_filter": "0",
    "net.ipv4.conf.tunl0.rp_filter": "0",
    "net.ipv4.conf.all.arp_ignore": "1",
    "net.ipv4.conf.all.arp_announce": "2",
}


class L7Decap:
    def __init__(self, netns: str | None = None, device: str = "tunl0") -> None:
        self.netns = netns
        self.device = device

    def _run(self, *cmd: str) -> None:
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        proc = subprocess.run([*prefix, *cmd], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: {proc.stderr.strip()}")

    def ensure(self, vips: frozenset[str]) -> None:
        """Bind exactly ``vips`` on the decapsulating device, with the sysctls above."""
        subprocess.run(["modprobe", "ipip"], capture_output=True, check=False)
        with IPRoute(netns=self.netns) if self.netns else IPRoute() as ipr:
            found = ipr.link_lookup(ifname=self.device)
            if not found:
                raise RuntimeError(f"no {self.device}: the ipip kernel module is not loaded")
            index = int(found[0])
            ipr.link("set", index=index, state="up")
            for key, value in L7_SYSCTLS.items():
                self._run("sysctl", "-q", "-w", f"{key}={value}")
            have = {str(a.get_attr("IFA_ADDRESS")) for a in ipr.get_addr(index=index, family=2)}
            for vip in sorted(vips - have):
                ipr.addr("add", index=index, address=vip, prefixlen=32)
            for vip in sorted(have - vips):
                ipr.addr("del", index=index, address=vip, prefixlen=32)

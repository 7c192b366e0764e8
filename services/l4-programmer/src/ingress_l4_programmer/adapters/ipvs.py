"""The IPVS dataplane through pyroute2's generic netlink: one netlink message per planned write.

Notes from the real kernel (see /work/shared/FACTS.md): pyroute2's "update" maps to a delete, so
changes use "set"; ``fwd_method`` is always sent explicitly (2 = tunnel); ``IPVSDest.from_message``
reports ``fwd_method`` from its default, so the dump is read from the raw attributes.
"""

from __future__ import annotations

import os
import socket
import subprocess
from typing import Any, Literal

from pyroute2 import IPVS, IPVSDest, IPVSService  # type: ignore[import-untyped]

from ..domain.model import (
    AddAddress,
    AddDest,
    AddService,
    CurrentDest,
    CurrentVs,
    DelAddress,
    DelDest,
    DelService,
    Forward,
    KernelState,
    Op,
    Proto,
    Real,
    SetDest,
    SetService,
    VsKey,
)
from .addresses import DummyVips

PROTO_NUMBERS: dict[Proto, int] = {
    "TCP": socket.IPPROTO_TCP,
    "UDP": socket.IPPROTO_UDP,
    "SCTP": socket.IPPROTO_SCTP,
}
PROTO_NAMES = {v: k for k, v in PROTO_NUMBERS.items()}
FWD_METHODS: dict[Forward, int] = {"masq": 0, "route": 3, "tunnel": 2}
FWD_NAMES = {v: k for k, v in FWD_METHODS.items()}

# Deliberate IPVS sysctls (documented in docs/l4-programmer.md):
# conn_reuse_mode=1 reschedules a new connection that reuses a port of a TIME_WAIT entry, so a
# drained (weight 0) real server stops receiving connections from busy clients at once.
# expire_quiescent_template=1 expires persistence templates pointing to a weight-0 server.
# expire_nodest_conn=1 drops entries of a deleted real server at the next packet instead of
# blackholing the client until the entry times out.
IPVS_SYSCTLS = {
    "net/ipv4/vs/conn_reuse_mode": "1",
    "net/ipv4/vs/expire_quiescent_template": "1",
    "net/ipv4/vs/expire_nodest_conn": "1",
}


def _attr(nla: Any, name: str) -> Any:
    return nla.get_attr(name)


class IpvsDataplane:
    name: Literal["ipvs", "nftables"] = "ipvs"

    def __init__(self, vips: DummyVips, forward: Forward = "tunnel") -> None:
        self.vips = vips
        self.forward = forward
        self.messages = 0
        """Netlink messages sent (dumps included): the benchmark's count."""

    def unavailable(self) -> str | None:
        if not os.path.exists("/proc/net/ip_vs"):
            subprocess.run(["modprobe", "ip_vs"], capture_output=True, check=False)
        if not os.path.exists("/proc/net/ip_vs"):
            return (
                "the ip_vs kernel module is not loaded and cannot be loaded "
                "(CONFIG_IP_VS; on this kernel use dataplane=nftables)"
            )
        if self.forward == "tunnel" and not os.path.exists("/sys/class/net/tunl0"):
            subprocess.run(["modprobe", "ipip"], capture_output=True, check=False)
        for path, value in IPVS_SYSCTLS.items():
            with open(f"/proc/sys/{path}", "w") as f:
                f.write(value)
        return None

    def read(self) -> KernelState:
        services: dict[VsKey, CurrentVs] = {}
        with IPVS() as ipvs:
            self.messages += 1
            for msg in ipvs.service("dump"):
                svc = msg.get_attr("IPVS_CMD_ATTR_SERVICE")
                proto = PROTO_NAMES.get(int(_attr(svc, "IPVS_SVC_ATTR_PROTOCOL") or 0))
                if proto is None or _attr(svc, "IPVS_SVC_ATTR_AF") != socket.AF_INET:
                    continue  # fwmark or IPv6 services are never ours
                key = VsKey(
                    str(_attr(svc, "IPVS_SVC_ATTR_ADDR")),
                    proto,
                    int(_attr(svc, "IPVS_SVC_ATTR_PORT")),
                )
                dests: dict[Real, CurrentDest] = {}
                self.messages += 1
                for dmsg in ipvs.dest("dump", service=self._service(key)):
                    d = dmsg.get_attr("IPVS_CMD_ATTR_DEST")
                    real = Real(
                        str(_attr(d, "IPVS_DEST_ATTR_ADDR")), int(_attr(d, "IPVS_DEST_ATTR_PORT"))
                    )
                    dests[real] = CurrentDest(
                        weight=int(_attr(d, "IPVS_DEST_ATTR_WEIGHT")),
                        forward=FWD_NAMES.get(
                            int(_attr(d, "IPVS_DEST_ATTR_FWD_METHOD")) & 0x7, "masq"
                        ),
                        active=int(_attr(d, "IPVS_DEST_ATTR_ACTIVE_CONNS") or 0),
                        inactive=int(_attr(d, "IPVS_DEST_ATTR_INACT_CONNS") or 0),
                    )
                services[key] = CurrentVs(str(_attr(svc, "IPVS_SVC_ATTR_SCHED_NAME")), dests)
        return KernelState(services=services, addresses=self.vips.list())

    @staticmethod
    def _service(key: VsKey, scheduler: str | None = None) -> IPVSService:
        fields: dict[str, Any] = {
            "addr": key.vip,
            "port": key.port,
            "protocol": PROTO_NUMBERS[key.protocol],
        }
        if scheduler is not None:
            fields["sched_name"] = scheduler
        return IPVSService(**fields)

    def _dest(self, real: Real, weight: int, forward: Forward) -> IPVSDest:
        return IPVSDest(
            addr=real.address, port=real.port, weight=weight, fwd_method=FWD_METHODS[forward]
        )

    def apply(self, current: KernelState, ops: list[Op]) -> int:
        with IPVS() as ipvs:
            for op in ops:
                match op:
                    case AddAddress(vip):
                        self.vips.add(vip)
                    case DelAddress(vip):
                        self.vips.delete(vip)
                    case AddService(key, scheduler):
                        ipvs.service("add", service=self._service(key, scheduler))
                    case SetService(key, scheduler):
                        ipvs.service("set", service=self._service(key, scheduler))
                    case DelService(key):
                        ipvs.service("del", service=self._service(key))
                    case AddDest(key, real, weight, forward):
                        ipvs.dest("add", self._service(key), self._dest(real, weight, forward))
                    case SetDest(key, real, weight, forward):
                        ipvs.dest("set", self._service(key), self._dest(real, weight, forward))
                    case DelDest(key, real):
                        ipvs.dest(
                            "del", self._service(key), IPVSDest(addr=real.address, port=real.port)
                        )
                self.messages += 1
        return len(ops)

"""The IPVS dataplane over generic netlink: one netlink message per planned write, sent in batches.

The messages are pyroute2's and ipvsadm's (``genl_ipvs``): changes use ``set`` (never delete +
add), ``fwd_method`` is always sent explicitly (2 = tunnel), and the dump is read from the raw
attributes (pyroute2's ``IPVSDest.from_message`` reports ``fwd_method`` from its default).
"""

from __future__ import annotations

import functools
import os
import socket
import subprocess
from collections.abc import Collection
from typing import Literal

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
    describe,
)
from . import genl_ipvs as gi
from .addresses import DummyVips
from .genl_ipvs import IpvsNetlink, Request, Service, SvcKey

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


class IpvsDataplane:
    name: Literal["ipvs", "nftables"] = "ipvs"
    incremental = True

    def __init__(self, vips: DummyVips, forward: Forward = "tunnel") -> None:
        self.vips = vips
        self.forward = forward
        self.proc = "/proc/net/ip_vs"
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

    def read_addresses(self, vips: Collection[str] | None = None) -> frozenset[str]:
        return self.vips.list() if vips is None else self.vips.bound(vips)

    def read_services(self, keys: Collection[VsKey]) -> dict[VsKey, CurrentVs]:
        """Only the virtual services ``keys`` (absent ones are left out): a ``get`` and a dest
        dump per key, so an incremental change reads back in time independent of the table."""
        services: dict[VsKey, CurrentVs] = {}
        with IpvsNetlink() as nl:
            for key in keys:
                found = nl.service(_svc(key))
                if found is not None:
                    services[key] = self._current(nl, found)
            self.messages += nl.messages
        return services

    def read(self) -> KernelState:
        """Every IPv4 virtual service and our VIPs. The table comes from one read of
        ``/proc/net/ip_vs`` (the kernel's own listing, this namespace's): the netlink API has
        no dump of every dest, and one dest dump per service made a full read 1,000 round trips
        at 1,000 services (see bench/l4-programmer/report.md)."""
        with open(self.proc) as f:
            text = f.read()
        self.messages += 1
        return KernelState(services=parse_proc(text), addresses=self.vips.list())

    @staticmethod
    def _current(nl: IpvsNetlink, found: Service) -> CurrentVs:
        dests = {
            Real(d.address, d.port): CurrentDest(
                weight=d.weight,
                forward=FWD_NAMES.get(d.fwd_method & 0x7, "masq"),
                active=d.active,
                inactive=d.inactive,
            )
            for d in nl.dests(found.key)
        }
        return CurrentVs(found.scheduler, dests)

    def apply(self, current: KernelState, ops: list[Op]) -> int:
        """Addresses first and last as planned (one rtnetlink socket), the IPVS writes between
        them in batches; raises :class:`ApplyError` naming every refused write."""
        add_vips = [op.vip for op in ops if isinstance(op, AddAddress)]
        del_vips = [op.vip for op in ops if isinstance(op, DelAddress)]
        requests: list[Request] = []
        described: list[Op] = []
        for op in ops:
            match op:
                case AddService(key, scheduler):
                    requests.append(gi.add_service(_svc(key), scheduler))
                case SetService(key, scheduler):
                    requests.append(gi.set_service(_svc(key), scheduler))
                case DelService(key):
                    requests.append(gi.del_service(_svc(key)))
                case AddDest(key, real, weight, forward):
                    requests.append(
                        gi.add_dest(
                            _svc(key), real.address, real.port, weight, FWD_METHODS[forward]
                        )
                    )
                case SetDest(key, real, weight, forward):
                    requests.append(
                        gi.set_dest(
                            _svc(key), real.address, real.port, weight, FWD_METHODS[forward]
                        )
                    )
                case DelDest(key, real):
                    requests.append(gi.del_dest(_svc(key), real.address, real.port))
                case _:
                    continue
            described.append(op)
        if add_vips:
            self.messages += self.vips.add_many(add_vips)
        failed: list[tuple[int, int]] = []
        if requests:
            with IpvsNetlink() as nl:
                failed = nl.write(requests)
                self.messages += nl.messages
        if del_vips:
            self.messages += self.vips.delete_many(del_vips)
        if failed:
            raise ApplyError(
                "; ".join(f"{describe(described[i])}: {os.strerror(code)}" for i, code in failed)
            )
        return len(ops)


class ApplyError(RuntimeError):
    """The kernel refused some writes (the others were applied)."""


@functools.lru_cache(maxsize=1 << 16)
def _svc(key: VsKey) -> SvcKey:
    return SvcKey.of(key.vip, PROTO_NUMBERS[key.protocol], key.port)


_PROC_FWD: dict[str, Forward] = {"Tunnel": "tunnel", "Route": "route", "Masq": "masq"}


def parse_proc(text: str) -> dict[VsKey, CurrentVs]:
    """``/proc/net/ip_vs`` (ip_vs_info_seq_show) -> the IPv4 TCP/UDP/SCTP virtual services.
    Services are ``PROTO  AAAAAAAA:PPPP sched [persistent ...]``, dests ``  -> AAAAAAAA:PPPP
    Forward Weight ActiveConn InActConn``, addresses and ports in hex; fwmark and IPv6 services
    (``FWM``, ``[addr]``) are never ours and are skipped with their dests."""
    services: dict[VsKey, CurrentVs] = {}
    dests: dict[Real, CurrentDest] | None = None
    for line in text.splitlines()[3:]:
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "->":
            if dests is None or parts[1].startswith("["):
                continue
            addr, port = parts[1].split(":")
            dests[Real(socket.inet_ntoa(bytes.fromhex(addr)), int(port, 16))] = CurrentDest(
                weight=int(parts[3]),
                forward=_PROC_FWD.get(parts[2], "masq"),
                active=int(parts[4]),
                inactive=int(parts[5]),
            )
            continue
        dests = None
        proto = parts[0]
        if proto not in PROTO_NUMBERS or parts[1].startswith("["):
            continue
        addr, port = parts[1].split(":")
        dests = {}
        key = VsKey(socket.inet_ntoa(bytes.fromhex(addr)), proto, int(port, 16))
        services[key] = CurrentVs(parts[2], dests)
    return services

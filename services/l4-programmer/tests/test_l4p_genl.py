"""The generic-netlink IPVS encoding, checked byte-level against the kernel's attribute layout
(include/uapi/linux/ip_vs.h). The real kernel round trip is in test_l4p_kernel_ipvs.py (VM)."""

from __future__ import annotations

import socket
import struct

from ingress_l4_programmer.adapters import genl_ipvs as gi


def test_attributes_are_padded_and_parse_back() -> None:
    raw = gi.nla(6, b"mh\0") + gi.nla(4, struct.pack("!H", 443))
    assert len(raw) == 8 + 8  # 4-byte header + 3 bytes padded to 4, then 4 + 2 padded to 4
    assert gi.attributes(raw) == {6: b"mh\0", 4: struct.pack("!H", 443)}


def test_add_dest_carries_the_service_key_and_a_full_dest() -> None:
    key = gi.SvcKey.of("198.51.100.10", socket.IPPROTO_TCP, 80)
    cmd, attrs = gi.add_dest(key, "10.0.0.7", 80, 3, 2)
    assert cmd == gi.CMD_NEW_DEST
    top = gi.attributes(attrs)
    svc = gi.attributes(top[gi.ATTR_SERVICE])
    assert svc[gi.SVC_ADDR] == socket.inet_aton("198.51.100.10")
    assert struct.unpack("!H", svc[gi.SVC_PORT]) == (80,)
    assert struct.unpack("=H", svc[gi.SVC_PROTOCOL]) == (socket.IPPROTO_TCP,)
    dest = gi.attributes(top[gi.ATTR_DEST])
    assert dest[gi.DEST_ADDR] == socket.inet_aton("10.0.0.7")
    assert struct.unpack("=I", dest[gi.DEST_FWD_METHOD]) == (2,)  # tunnel
    assert struct.unpack("=I", dest[gi.DEST_WEIGHT]) == (3,)
    # The kernel refuses a dest without thresholds (ip_vs_genl_parse_dest, full entry).
    assert {gi.DEST_U_THRESH, gi.DEST_L_THRESH} <= dest.keys()


def test_a_new_service_has_every_field_the_kernel_requires() -> None:
    key = gi.SvcKey.of("198.51.100.10", socket.IPPROTO_TCP, 443)
    cmd, attrs = gi.add_service(key, "mh")
    svc = gi.attributes(gi.attributes(attrs)[gi.ATTR_SERVICE])
    assert cmd == gi.CMD_NEW_SERVICE
    assert svc[gi.SVC_SCHED_NAME] == b"mh\0"
    # ip_vs_genl_parse_service: sched_name, flags, timeout and netmask must all be present.
    assert {gi.SVC_FLAGS, gi.SVC_TIMEOUT, gi.SVC_NETMASK} <= svc.keys()
    assert gi.del_service(key)[1] == gi.nla(gi.ATTR_SERVICE, key.encoded)


PROC = """IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port Forward Weight ActiveConn InActConn
TCP  C633640A:0050 mh
  -> AC1F0402:0050      Tunnel  0      1          0
  -> AC1F0302:0050      Tunnel  1      0          3
TCP  C0004D4D:1F90 wlc persistent 300 FFFFFFFF
  -> 0A090909:1F90      Masq    3      0          0
FWM  00000001 wlc
  -> 0A000001:0050      Route   1      0          0
TCP  [2001:0db8:0000:0000:0000:0000:0000:0001]:0050 rr
  -> [2001:0db8:0000:0000:0000:0000:0000:0002]:0050      Tunnel  1      0          0
UDP  C633640A:0035 rr
"""


def test_proc_listing_parses_to_the_ipv4_services() -> None:
    from ingress_l4_programmer.adapters.ipvs import parse_proc
    from ingress_l4_programmer.domain.model import CurrentDest, Real, VsKey

    services = parse_proc(PROC)
    assert set(services) == {
        VsKey("198.51.100.10", "TCP", 80),
        VsKey("192.0.77.77", "TCP", 8080),
        VsKey("198.51.100.10", "UDP", 53),
    }
    web = services[VsKey("198.51.100.10", "TCP", 80)]
    assert web.scheduler == "mh"
    assert web.dests == {
        Real("172.31.4.2", 80): CurrentDest(weight=0, forward="tunnel", active=1, inactive=0),
        Real("172.31.3.2", 80): CurrentDest(weight=1, forward="tunnel", active=0, inactive=3),
    }
    assert services[VsKey("192.0.77.77", "TCP", 8080)].dests[Real("10.9.9.9", 8080)].forward == (
        "masq"
    )
    assert services[VsKey("198.51.100.10", "UDP", 53)].dests == {}


# ------------------------------------------------------------------ against pyroute2
# pyroute2 is the reference encoder (its request path costs ~0.5 ms per message, too slow for
# 40,000 writes; see bench/l4-programmer/report.md). Each of our writes, decoded by pyroute2's
# own IPVS message parser, must say exactly what pyroute2's IPVSService / IPVSDest would send.


def _decoded(request: gi.Request) -> tuple[int, dict[str, object], dict[str, object]]:
    from pyroute2.netlink.generic import ipvs

    cmd, attrs = request
    header = struct.pack("=IHHII", 16 + 4 + len(attrs), 0x20, 0x5, 1, 0)
    msg = ipvs.ipvsmsg(header + struct.pack("=BBH", cmd, 1, 0) + attrs)
    msg.decode()
    service = msg.get_attr("IPVS_CMD_ATTR_SERVICE")
    dest = msg.get_attr("IPVS_CMD_ATTR_DEST")
    return (
        int(msg["cmd"]),
        dict(service["attrs"]) if service else {},
        dict(dest["attrs"]) if dest else {},
    )


def _pyroute2_service(**fields: object) -> dict[str, object]:
    from pyroute2.ipvs import IPVSService

    return {
        k: int(v) if k.endswith("_AF") else v for k, v in IPVSService(**fields).dump_nla()["attrs"]
    }


def _pyroute2_dest(**fields: object) -> dict[str, object]:
    from pyroute2.ipvs import IPVSDest

    attrs = dict(IPVSDest(**fields).dump_nla()["attrs"])
    attrs["IPVS_DEST_ATTR_ADDR_FAMILY"] = int(attrs["IPVS_DEST_ATTR_ADDR_FAMILY"])
    # pyroute2 also sends the tunnel type, port and flags as 0: the kernel's defaults (IP-in-IP,
    # no encapsulation port), which we leave out.
    for name in ("IPVS_DEST_ATTR_TUN_TYPE", "IPVS_DEST_ATTR_TUN_PORT", "IPVS_DEST_ATTR_TUN_FLAGS"):
        assert attrs.pop(name) == 0
    return attrs


def test_service_writes_say_what_pyroute2_would() -> None:
    from pyroute2.netlink.generic import ipvs

    key = gi.SvcKey.of("198.51.100.10", socket.IPPROTO_TCP, 443)
    full = _pyroute2_service(addr="198.51.100.10", port=443, protocol=6, sched_name="mh")
    assert _decoded(gi.add_service(key, "mh")) == (ipvs.IPVS_CMD_NEW_SERVICE, full, {})
    assert _decoded(gi.set_service(key, "mh")) == (ipvs.IPVS_CMD_SET_SERVICE, full, {})
    keyed = {
        k: v for k, v in full.items() if k.rsplit("_", 1)[-1] in {"AF", "PROTOCOL", "ADDR", "PORT"}
    }
    assert _decoded(gi.del_service(key)) == (ipvs.IPVS_CMD_DEL_SERVICE, keyed, {})


def test_dest_writes_say_what_pyroute2_would() -> None:
    from pyroute2.netlink.generic import ipvs

    key = gi.SvcKey.of("198.51.100.10", socket.IPPROTO_UDP, 53)
    service = {
        "IPVS_SVC_ATTR_AF": socket.AF_INET,
        "IPVS_SVC_ATTR_PROTOCOL": socket.IPPROTO_UDP,
        "IPVS_SVC_ATTR_ADDR": "198.51.100.10",
        "IPVS_SVC_ATTR_PORT": 53,
    }
    tunnel = _pyroute2_dest(addr="10.0.0.7", port=5353, weight=3, fwd_method=2)
    assert _decoded(gi.add_dest(key, "10.0.0.7", 5353, 3, 2)) == (
        ipvs.IPVS_CMD_NEW_DEST,
        service,
        tunnel,
    )
    drained = _pyroute2_dest(addr="10.0.0.7", port=5353, weight=0, fwd_method=2)
    assert _decoded(gi.set_dest(key, "10.0.0.7", 5353, 0, 2)) == (
        ipvs.IPVS_CMD_SET_DEST,
        service,
        drained,
    )
    _, _, gone = _decoded(gi.del_dest(key, "10.0.0.7", 5353))
    assert gone == {
        "IPVS_DEST_ATTR_ADDR": "10.0.0.7",
        "IPVS_DEST_ATTR_PORT": 5353,
        "IPVS_DEST_ATTR_ADDR_FAMILY": socket.AF_INET,
    }

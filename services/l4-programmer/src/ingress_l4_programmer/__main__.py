"""Ingress Domain l4-programmer: serves this node's VIPs with IPVS (IP-in-IP to the L7 pool) or
nftables DNAT, from vip.assigned / backend.endpoints / pool.desired, and reports l4.* events;
with L4_PROGRAMMER_ROLE=l7, in an L7 pod, binds the VIPs on tunl0 for the tunnels' other end."""

from __future__ import annotations

from ingress_runtime import service_main

from .app import build_app
from .settings import L4ProgrammerSettings


def main(argv: list[str] | None = None) -> int:
    return service_main("l4-programmer", L4ProgrammerSettings, build_app, __doc__ or "", argv)


if __name__ == "__main__":
    raise SystemExit(main())

"""ipam: assigns VIPs to ingress domains and LoadBalancer Services from VipPools, with every
allocation a compare-and-set in JetStream KV so replicas never hand one address out twice."""

from __future__ import annotations

from ingress_runtime import service_main

from .app import IpamApp
from .settings import IpamSettings


def main() -> int:
    return service_main("ipam", IpamSettings, IpamApp, __doc__ or "ipam")


if __name__ == "__main__":
    raise SystemExit(main())

"""ingress-watcher: watches Ingresses, Services, EndpointSlices, Secrets (metadata and a hash
only) and the ownership objects (Zone, Domain, PathClaim), checks who may claim which host and
path, and publishes the desired state of every ingress domain, backend, LoadBalancer Service, VIP
pool and BGP peer on the bus, with an admission result for every object it checked."""

from __future__ import annotations

from ingress_runtime import service_main

from .app import WatcherApp
from .settings import WatcherSettings


def main() -> int:
    return service_main("ingress-watcher", WatcherSettings, WatcherApp, __doc__ or "")


if __name__ == "__main__":
    raise SystemExit(main())

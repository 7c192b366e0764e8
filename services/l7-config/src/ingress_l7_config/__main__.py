"""l7-config: the xDS control plane of the L7 Envoy fleet.

Consumes domain.desired / domain.deleted and backend.endpoints / backend.deleted, serves Envoy
listeners, routes, clusters, endpoints and TLS secrets over ADS, and reports l7.applied once every
connected Envoy has ACKed a domain's generation (l7.rejected for invalid input or an Envoy NACK).
"""

from __future__ import annotations

from ingress_runtime import service_main

from .app import L7ConfigApp
from .settings import L7ConfigSettings


def main() -> int:
    return service_main("l7-config", L7ConfigSettings, L7ConfigApp, __doc__ or "")


if __name__ == "__main__":
    raise SystemExit(main())

"""Prometheus series per pool, served on the runtime's admin port (/metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

POOL_TOTAL = Gauge("ipam_pool_addresses_total", "Usable addresses of the pool", ["pool"])
POOL_USED = Gauge("ipam_pool_addresses_used", "Addresses of the pool held by owners", ["pool"])
POOL_FREE = Gauge("ipam_pool_addresses_free", "Addresses of the pool free to assign", ["pool"])
POOL_COOLING = Gauge(
    "ipam_pool_addresses_cooling", "Released addresses of the pool not yet reusable", ["pool"]
)
POOL_OUTSIDE = Gauge(
    "ipam_pool_allocations_outside",
    "Allocations kept from the pool that its current definition no longer contains",
    ["pool"],
)
DECISIONS = Counter("ipam_decisions_total", "Allocation outcomes", ["outcome"])
CAS_CONFLICTS = Counter("ipam_cas_conflicts_total", "Compare-and-set writes that lost")

"""ipam: VIP pools and allocations that never hand one address to two owners."""

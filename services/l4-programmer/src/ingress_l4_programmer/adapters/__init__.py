"""Side effects of l4-programmer: the kernel's IPVS and nftables, addresses, the L7-node role."""

import pyroute2.config  # type: ignore[import-untyped]

# pyroute2 reaches another network namespace through a forked child that it later stops with
# SIGTERM; the child inherits asyncio's signal wake-up fd, so the service would take that
# SIGTERM for its own and stop. This makes pyroute2 reset the child's signal handlers.
pyroute2.config.disable_mp_signal = True

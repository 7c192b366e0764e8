"""What the app needs from a dataplane, and the in-memory fake that stands in for a kernel."""

from __future__ import annotations

from collections.abc import Collection
from typing import Literal, Protocol

from ..domain.model import EMPTY_KERNEL, CurrentVs, Forward, KernelState, Op, VsKey, apply_ops


class Dataplane(Protocol):
    name: Literal["ipvs", "nftables"]
    forward: Forward
    incremental: bool
    """Whether ``apply`` takes ops planned against a part of the state (IPVS: every write is
    its own object), so a change can be planned, applied and read back for its keys alone."""

    def unavailable(self) -> str | None:
        """Why this dataplane cannot work on this kernel (None when it can)."""
        ...

    def read(self) -> KernelState:
        """The current state, read from the kernel: our VIP addresses and every virtual service."""
        ...

    def read_services(self, keys: Collection[VsKey]) -> dict[VsKey, CurrentVs]:
        """Only the virtual services ``keys`` that exist, read from the kernel."""
        ...

    def read_addresses(self, vips: Collection[str] | None = None) -> frozenset[str]:
        """Our VIP addresses only (no table dump); with ``vips``, which of those are bound."""
        ...

    def apply(self, current: KernelState, ops: list[Op]) -> int:
        """Apply ``ops`` (planned against ``current``); returns the kernel writes it took."""
        ...


class FakeDataplane:
    """A kernel in memory: applies ops exactly as :func:`apply_ops` says a correct one would."""

    def __init__(
        self,
        name: Literal["ipvs", "nftables"] = "ipvs",
        state: KernelState = EMPTY_KERNEL,
        missing: str | None = None,
    ) -> None:
        self.name = name
        self.forward: Forward = "tunnel" if name == "ipvs" else "nat"
        self.state = state
        self.missing = missing
        self.incremental = True  # both real dataplanes plan and read back a change alone
        self.writes: list[Op] = []
        self.reads = 0
        """Full reads (a whole-table dump in a real kernel)."""

    def unavailable(self) -> str | None:
        return self.missing

    def read(self) -> KernelState:
        self.reads += 1
        return self.state

    def read_addresses(self, vips: Collection[str] | None = None) -> frozenset[str]:
        return self.state.addresses if vips is None else self.state.addresses & frozenset(vips)

    def read_services(self, keys: Collection[VsKey]) -> dict[VsKey, CurrentVs]:
        return {k: self.state.services[k] for k in keys if k in self.state.services}

    def apply(self, current: KernelState, ops: list[Op]) -> int:
        self.writes.extend(ops)
        self.state = apply_ops(self.state, ops)
        return len(ops)

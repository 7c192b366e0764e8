"""What the app needs from a dataplane, and the in-memory fake that stands in for a kernel."""

from __future__ import annotations

from typing import Literal, Protocol

from ..domain.model import EMPTY_KERNEL, Forward, KernelState, Op, apply_ops


class Dataplane(Protocol):
    name: Literal["ipvs", "nftables"]
    forward: Forward

    def unavailable(self) -> str | None:
        """Why this dataplane cannot work on this kernel (None when it can)."""
        ...

    def read(self) -> KernelState:
        """The current state, read from the kernel: our VIP addresses and every virtual service."""
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
        self.writes: list[Op] = []

    def unavailable(self) -> str | None:
        return self.missing

    def read(self) -> KernelState:
        return self.state

    def apply(self, current: KernelState, ops: list[Op]) -> int:
        self.writes.extend(ops)
        self.state = apply_ops(self.state, ops)
        return len(ops)

"""The nftables dataplane: our table, replaced atomically with ``nft -f`` when it must change."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Collection
from typing import Literal

from ..domain.model import (
    AddAddress,
    CurrentVs,
    DelAddress,
    Forward,
    KernelState,
    Op,
    VsKey,
    apply_ops,
)
from ..domain.nft import parse_table, render_table
from .addresses import DummyVips


class NftError(RuntimeError):
    pass


class NftDataplane:
    name: Literal["ipvs", "nftables"] = "nftables"
    forward: Forward = "nat"
    incremental = False
    """One table, replaced atomically: always planned and rendered whole."""

    def __init__(self, table: str, vips: DummyVips, netns: str | None = None) -> None:
        self.table = table
        self.vips = vips
        self.netns = netns

    def _nft(self, *args: str, stdin: str | None = None) -> str:
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        proc = subprocess.run(
            [*prefix, "nft", *args], input=stdin, capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            raise NftError(f"nft {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout

    def unavailable(self) -> str | None:
        if shutil.which("nft") is None:
            return "the nft command (Debian package nftables) is not installed"
        try:
            self._nft("list", "tables")
        except NftError as exc:
            return f"nftables does not answer: {exc}"
        return None

    def read(self) -> KernelState:
        try:
            out = self._nft("-j", "list", "table", "ip", self.table)
        except NftError as exc:
            if "No such file or directory" in str(exc):
                return KernelState(services={}, addresses=self.vips.list())
            raise
        return KernelState(services=parse_table(json.loads(out)), addresses=self.vips.list())

    def read_addresses(self) -> frozenset[str]:
        return self.vips.list()

    def read_services(self, keys: Collection[VsKey]) -> dict[VsKey, CurrentVs]:
        services = self.read().services
        return {k: services[k] for k in keys if k in services}

    def apply(self, current: KernelState, ops: list[Op]) -> int:
        writes = 0
        for op in ops:
            if isinstance(op, AddAddress):
                self.vips.add(op.vip)
                writes += 1
        rule_ops = [op for op in ops if not isinstance(op, AddAddress | DelAddress)]
        if rule_ops:
            after = apply_ops(current, rule_ops)
            # One transaction: packets see the old table or the new one, never a mix.
            self._nft("-f", "-", stdin=render_table(self.table, after.services))
            writes += 1
        for op in ops:
            if isinstance(op, DelAddress):
                self.vips.delete(op.vip)
                writes += 1
        return writes

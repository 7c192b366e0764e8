"""The nftables dataplane: our table (domain/nft.py), changed with one ``nft -f`` transaction per
apply: the map elements of the services the ops touch, or the whole table when it is missing or
incomplete (a first start, or somebody deleted part of it)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Collection, Mapping
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
from ..domain.nft import render_changes, render_table, service_of
from .addresses import DummyVips
from .nft_netlink import NftElementReader


class NftError(RuntimeError):
    pass


class NftDataplane:
    name: Literal["ipvs", "nftables"] = "nftables"
    forward: Forward = "nat"
    incremental = True
    """A change touches only its services' elements: planned, applied and read back alone."""

    def __init__(self, table: str, vips: DummyVips, netns: str | None = None) -> None:
        self.table = table
        self.vips = vips
        self.netns = netns
        self.rewrite = True
        """The next apply writes the whole table (it is missing, or not our shape)."""
        self.transactions = 0
        self._whole: Mapping[VsKey, CurrentVs] | None = None
        """The services of the last whole-table read: the only state a rewrite may be rendered
        from (rendering the whole table from part of it would delete the rest)."""

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
        """The whole table, as netlink dumps of its maps and rules (``nft -j list table`` says
        the same, ~10x slower: domain/nft.py parses that for tests and tools)."""
        try:
            with NftElementReader(self.table, self.netns) as reader:
                found = reader.read_table()
        except OSError as exc:
            raise NftError(f"reading table {self.table}: {exc}") from exc
        services, whole = found if found is not None else ({}, False)
        self.rewrite = not whole
        self._whole = services
        return KernelState(services=services, addresses=self.vips.list())

    def read_addresses(self, vips: Collection[str] | None = None) -> frozenset[str]:
        return self.vips.list() if vips is None else self.vips.bound(vips)

    def read_services(self, keys: Collection[VsKey]) -> dict[VsKey, CurrentVs]:
        """Only these services' elements, by key through netlink (a few messages each, whatever
        the table's size: nft's own listing loads every element of every map first)."""
        ordered = sorted(keys)
        try:
            with NftElementReader(self.table, self.netns) as reader:
                pickers = reader.pickers(ordered)
                return {
                    key: service_of(picker, reader.slots(picker, key))
                    for key, picker in pickers.items()
                }
        except OSError as exc:
            # A missing table or map is no error here (its keys read as absent).
            raise NftError(f"reading {len(ordered)} services back: {exc}") from exc

    def apply(self, current: KernelState, ops: list[Op]) -> int:
        """``current``: what ``ops`` were planned against (the whole table after :meth:`read`,
        or the services they touch after :meth:`read_services`)."""
        writes = 0
        # Each address in one rtnetlink batch, as the IPVS dataplane does: one socket and one
        # link lookup per VIP took seconds for the thousands of a cold start.
        bind = [op.vip for op in ops if isinstance(op, AddAddress)]
        if bind:
            self.vips.add_many(bind)
            writes += len(bind)
        rule_ops = [op for op in ops if not isinstance(op, AddAddress | DelAddress)]
        if rule_ops:
            after = apply_ops(current, rule_ops)
            if self.rewrite:
                if current.services is not self._whole:
                    # Planned from part of the table (a table not written yet: no service
                    # existed at the last full read): render the whole table from a whole read,
                    # never from the part, which would drop the rest.
                    whole = self.read()
                    after = apply_ops(whole, rule_ops)
                script = render_table(self.table, after.services)
            else:
                touched = {op.key for op in rule_ops}
                script = render_changes(
                    self.table,
                    {k: v for k, v in current.services.items() if k in touched},
                    {k: v for k, v in after.services.items() if k in touched},
                )
            if script:
                # One transaction: packets see the old services or the new ones, never a mix.
                self._nft("-f", "-", stdin=script)
                self.transactions += 1
                self.rewrite = False
                writes += 1
        unbind = [op.vip for op in ops if isinstance(op, DelAddress)]
        if unbind:
            self.vips.delete_many(unbind)
            writes += len(unbind)
        return writes

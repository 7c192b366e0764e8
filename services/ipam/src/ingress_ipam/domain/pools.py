"""VipPool definitions: validation, overlap resolution and who may draw from which pool."""

from __future__ import annotations

import fnmatch
import ipaddress
import itertools
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from ingress_events.catalogue import PoolDesired, Problem
from ingress_events.names import wildcard_covers

from .model import IpFamily

MAX_EXCLUDES = 4096
_NAMESPACE_GLOB = re.compile(r"^[a-z0-9*?]([-a-z0-9*?]{0,61}[a-z0-9*?])?$")


@dataclass(frozen=True, order=True)
class Block:
    """An inclusive run of addresses of one family, as integers."""

    version: int
    first: int
    last: int

    @property
    def size(self) -> int:
        return self.last - self.first + 1

    def overlaps(self, other: Block) -> bool:
        return (
            self.version == other.version and self.first <= other.last and other.first <= self.last
        )

    def describe(self) -> str:
        return f"{_addr(self.version, self.first)}-{_addr(self.version, self.last)}"


def _addr(version: int, value: int) -> str:
    return str(ipaddress.IPv4Address(value) if version == 4 else ipaddress.IPv6Address(value))


@dataclass(frozen=True)
class Pool:
    """A validated pool. Addresses are handed out from ``blocks`` minus ``exclude``."""

    name: str
    blocks: tuple[Block, ...]
    exclude: frozenset[tuple[int, int]]
    """(version, integer) of each excluded address inside the blocks."""
    namespaces: tuple[str, ...] = ()
    zones: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()
    priority: int = 0
    auto_assign: bool = True
    default: bool = False
    generation: int = 1

    def families(self) -> set[IpFamily]:
        return {"IPv4" if b.version == 4 else "IPv6" for b in self.blocks}

    def size(self, family: IpFamily | None = None) -> int:
        versions = {4, 6} if family is None else {4 if family == "IPv4" else 6}
        blocks = sum(b.size for b in self.blocks if b.version in versions)
        return blocks - sum(1 for v, _ in self.exclude if v in versions)

    def contains(self, address: str) -> bool:
        ip = ipaddress.ip_address(address)
        value = int(ip)
        if (ip.version, value) in self.exclude:
            return False
        return any(b.version == ip.version and b.first <= value <= b.last for b in self.blocks)

    def scan(self, family: IpFamily, start: int) -> Iterator[str]:
        """Every usable address of ``family`` once, beginning at index ``start`` (mod size) and
        wrapping around: owners start at different places, so replicas rarely race for one."""
        version = 4 if family == "IPv4" else 6
        blocks = [b for b in self.blocks if b.version == version]
        total = sum(b.size for b in blocks)
        if total == 0:
            return
        offset = start % total
        index = 0
        while offset >= blocks[index].size:
            offset -= blocks[index].size
            index += 1
        here = blocks[index]
        segments = [range(here.first + offset, here.last + 1)]
        segments += [range(b.first, b.last + 1) for b in blocks[index + 1 :] + blocks[:index]]
        segments.append(range(here.first, here.first + offset))
        for segment in segments:
            for value in segment:
                if (version, value) not in self.exclude:
                    yield _addr(version, value)

    def allows(self, namespace: str, host: str | None) -> bool:
        """Whether an owner in ``namespace`` (with ``host`` for a domain) may draw from here. A
        pool limited to zones or domains serves only domains under them, never a Service."""
        if self.namespaces and not any(fnmatch.fnmatchcase(namespace, g) for g in self.namespaces):
            return False
        if not self.zones and not self.domains:
            return True
        if host is None:
            return False
        in_zone = any(host == z or host.endswith("." + z) for z in self.zones)
        in_domains = any(host == d or wildcard_covers(d, host) for d in self.domains)
        return in_zone or in_domains


@dataclass(frozen=True)
class PoolVerdict:
    accepted: Mapping[str, Pool]
    rejected: Mapping[str, tuple[Problem, ...]]


def _problem(reason: str, field: str, message: str) -> Problem:
    return Problem(reason=reason, field=field, message=message[:4096])


def parse_pool(desired: PoolDesired) -> Pool | tuple[Problem, ...]:
    """Validate one definition on its own; every problem is reported, not only the first."""
    problems: list[Problem] = []
    blocks: list[Block] = []
    for i, cidr in enumerate(desired.cidrs):
        net = ipaddress.ip_network(cidr)
        blocks.append(Block(net.version, int(net.network_address), int(net.broadcast_address)))
        if net.version == 6 and net.prefixlen < 64:
            problems.append(
                _problem(
                    "PoolTooLarge",
                    f"spec.cidrs[{i}]",
                    f"{cidr} is larger than a /64; split it into /64s or smaller",
                )
            )
    for i, r in enumerate(desired.ranges):
        first, last = ipaddress.ip_address(r.first), ipaddress.ip_address(r.last)
        if first.version != last.version:
            problems.append(
                _problem(
                    "InvalidRange",
                    f"spec.ranges[{i}]",
                    f"{r.first}-{r.last} mixes IPv4 and IPv6",
                )
            )
        elif int(first) > int(last):
            problems.append(
                _problem(
                    "InvalidRange",
                    f"spec.ranges[{i}]",
                    f"first address {r.first} is above last address {r.last}",
                )
            )
        else:
            blocks.append(Block(first.version, int(first), int(last)))
    if not desired.cidrs and not desired.ranges:
        problems.append(_problem("EmptyPool", "spec", "a pool needs at least one CIDR or range"))
    ordered = sorted(blocks)
    for a, b in itertools.pairwise(ordered):
        if a.overlaps(b):
            problems.append(
                _problem(
                    "InvalidRange",
                    "spec",
                    f"{a.describe()} and {b.describe()} overlap inside the pool",
                )
            )
    if len(desired.exclude) > MAX_EXCLUDES:
        problems.append(
            _problem(
                "TooManyExcludes", "spec.exclude", f"at most {MAX_EXCLUDES} excluded addresses"
            )
        )
    exclude: set[tuple[int, int]] = set()
    for i, text in enumerate(desired.exclude[:MAX_EXCLUDES]):
        ip = ipaddress.ip_address(text)
        if not any(b.version == ip.version and b.first <= int(ip) <= b.last for b in blocks):
            problems.append(
                _problem(
                    "ExcludeOutsidePool",
                    f"spec.exclude[{i}]",
                    f"{text} is not inside any CIDR or range of the pool",
                )
            )
        exclude.add((ip.version, int(ip)))
    for i, glob in enumerate(desired.namespaces):
        if not _NAMESPACE_GLOB.match(glob):
            problems.append(
                _problem(
                    "InvalidNamespaceSelector",
                    f"spec.namespaces[{i}]",
                    f"{glob[:80]!r} is not a namespace name or a glob of one ([-a-z0-9*?])",
                )
            )
    if problems:
        return tuple(problems)
    pool = Pool(
        name=desired.pool,
        blocks=tuple(ordered),
        exclude=frozenset(exclude),
        namespaces=tuple(desired.namespaces),
        zones=tuple(desired.zones),
        domains=tuple(desired.domains),
        priority=desired.priority,
        auto_assign=desired.auto_assign,
        default=desired.default,
        generation=desired.generation,
    )
    if pool.size() <= 0:
        return (_problem("EmptyPool", "spec.exclude", "every address of the pool is excluded"),)
    return pool


def resolve_pools(
    definitions: Iterable[PoolDesired], previously_accepted: frozenset[str] = frozenset()
) -> PoolVerdict:
    """Validate every definition and reject those that overlap another accepted pool.

    A pool accepted before keeps its place against a newcomer (then the older generation wins,
    then the name), so an edit of one pool can never evict another pool that was already serving.
    """
    accepted: dict[str, Pool] = {}
    rejected: dict[str, tuple[Problem, ...]] = {}
    parsed: list[Pool] = []
    for desired in definitions:
        result = parse_pool(desired)
        if isinstance(result, Pool):
            parsed.append(result)
        else:
            rejected[desired.pool] = result
    parsed.sort(key=lambda p: (p.name not in previously_accepted, p.generation, p.name))
    for pool in parsed:
        clash = next(
            (
                (other, mine, theirs)
                for other in accepted.values()
                for mine in pool.blocks
                for theirs in other.blocks
                if mine.overlaps(theirs)
            ),
            None,
        )
        if clash is None:
            accepted[pool.name] = pool
            continue
        other, mine, theirs = clash
        rejected[pool.name] = (
            _problem(
                "PoolOverlap",
                "spec",
                f"{mine.describe()} overlaps {theirs.describe()} of VipPool {other.name!r}, "
                "which was accepted first; pools must not share addresses",
            ),
        )
    return PoolVerdict(accepted, rejected)

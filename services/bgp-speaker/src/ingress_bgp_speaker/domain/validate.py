"""Checks of user input (BgpPeer, VipPool) before any of it reaches BIRD's configuration.

Everything that ends up in the config text is checked against an allowlist here: a value that
passes cannot change the structure of the rendered file (no quotes, braces or semicolons).
"""

from __future__ import annotations

import fnmatch
import hashlib
import ipaddress
import re
from dataclasses import dataclass

from ingress_events import catalogue as c

from .model import Network, PeerConfig, PoolConfig

# RFC 6793 AS_TRANS, the last 16-bit and 32-bit ASNs (RFC 7300) and the IANA reserved block
# 65552-131071 can never be a real neighbour's or our own ASN.
_RESERVED_ASNS: tuple[tuple[int, int], ...] = (
    (23456, 23456),
    (65535, 65535),
    (65552, 131071),
    (4294967295, 4294967295),
)
# TCP MD5 keys are at most 80 bytes (TCP_MD5SIG_MAXKEYLEN); BIRD takes the string literally
# between double quotes, so quotes and backslashes are refused rather than escaped.
_PASSWORD_RE = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]{1,80}$")
_NODE_GLOB_RE = re.compile(r"^[a-z0-9*?\[\]!.-]{1,253}$")


@dataclass(frozen=True)
class Secret:
    """What the secrets directory holds for a reference: the value, or why there is none."""

    value: str | None
    missing_reason: str | None = None


def _problem(reason: str, field: str, message: str) -> c.Problem:
    return c.Problem(reason=reason, field=field, message=message[:4096])


def asn_problem(asn: int, field: str) -> c.Problem | None:
    for low, high in _RESERVED_ASNS:
        if low <= asn <= high:
            return _problem(
                "AsnOutOfRange",
                field,
                f"AS{asn} is reserved (AS_TRANS, 65535, 65552-131071, 4294967295) "
                "and cannot be used on a BGP session",
            )
    return None


def peer_applies_to(peer: c.PeerDesired, node: str) -> bool:
    return not peer.nodes or any(fnmatch.fnmatchcase(node, glob) for glob in peer.nodes)


def validate_peer(peer: c.PeerDesired, secret: Secret | None) -> PeerConfig | list[c.Problem]:
    """A PeerConfig, or every problem found (not just the first: the user fixes them at once).

    ``secret`` is what the secrets directory holds for ``peer.password`` (None when the peer
    names no password).
    """
    problems: list[c.Problem] = []
    for asn, field in ((peer.peer_asn, "spec.peerASN"), (peer.local_asn, "spec.localASN")):
        found = asn_problem(asn, field)
        if found is not None:
            problems.append(found)
    address = ipaddress.ip_address(peer.address)
    if (
        address.is_unspecified
        or address.is_loopback
        or address.is_multicast
        or address.is_link_local
        or (
            isinstance(address, ipaddress.IPv4Address)
            and address == ipaddress.IPv4Address("255.255.255.255")
        )
    ):
        problems.append(
            _problem(
                "InvalidPeerAddress",
                "spec.address",
                f"{peer.address} is not a unicast address a BGP neighbour can have "
                "(unspecified, loopback, multicast, link-local and broadcast are refused)",
            )
        )
    if peer.hold_time_seconds != 0 and peer.hold_time_seconds < 3:
        problems.append(
            _problem(
                "InvalidTimers",
                "spec.holdTimeSeconds",
                f"hold time {peer.hold_time_seconds}s: RFC 4271 allows 0 or at least 3 seconds",
            )
        )
    if (
        peer.keepalive_seconds is not None
        and peer.hold_time_seconds != 0
        and peer.keepalive_seconds >= peer.hold_time_seconds
    ):
        problems.append(
            _problem(
                "InvalidTimers",
                "spec.keepaliveSeconds",
                f"keepalive {peer.keepalive_seconds}s must be shorter than the hold time "
                f"{peer.hold_time_seconds}s",
            )
        )
    for i, glob in enumerate(peer.nodes):
        if not _NODE_GLOB_RE.match(glob):
            problems.append(
                _problem("InvalidNodeSelector", f"spec.nodes[{i}]", f"{glob!r} is not a node glob")
            )
    password: str | None = None
    if peer.password is not None:
        ref = f"{peer.password.namespace}/{peer.password.name}[{peer.password.key}]"
        if secret is None or secret.value is None:
            why = secret.missing_reason if secret is not None else "not found"
            problems.append(
                _problem(
                    "PasswordSecretMissing",
                    "spec.passwordSecretRef",
                    f"the MD5 password Secret {ref} cannot be read: {why}",
                )
            )
        elif not _PASSWORD_RE.match(secret.value):
            problems.append(
                _problem(
                    "InvalidPassword",
                    "spec.passwordSecretRef",
                    f"the password in {ref} must be 1-80 printable ASCII characters "
                    "without spaces, quotes or backslashes",
                )
            )
        elif (
            peer.password_hash is not None
            and hashlib.sha256(secret.value.encode()).hexdigest() != peer.password_hash
        ):
            problems.append(
                _problem(
                    "PasswordSecretStale",
                    "spec.passwordSecretRef",
                    f"the mounted Secret {ref} does not match the hash of the current Secret "
                    "yet (the kubelet refreshes mounted Secrets with a delay)",
                )
            )
        else:
            password = secret.value
    if problems:
        return problems
    return PeerConfig(
        name=peer.peer,
        address=peer.address,
        peer_asn=peer.peer_asn,
        local_asn=peer.local_asn,
        password=password,
        hold_time_seconds=peer.hold_time_seconds,
        keepalive_seconds=peer.keepalive_seconds,
        graceful_restart=peer.graceful_restart,
        bfd=peer.bfd,
        max_prefixes=peer.max_prefixes,
        generation=peer.generation,
    )


def _parse_community(text: str, parts: int, limit: int) -> tuple[int, ...] | None:
    pieces = text.split(":")
    if len(pieces) != parts or not all(p.isdigit() and len(p) <= 10 for p in pieces):
        return None
    values = tuple(int(p) for p in pieces)
    return values if all(v <= limit for v in values) else None


def validate_pool(pool: c.PoolDesired) -> PoolConfig | list[c.Problem]:
    problems: list[c.Problem] = []
    networks: list[Network] = [ipaddress.ip_network(cidr) for cidr in pool.cidrs]
    for i, rng in enumerate(pool.ranges):
        first, last = ipaddress.ip_address(rng.first), ipaddress.ip_address(rng.last)
        if first.version != last.version or int(first) > int(last):
            problems.append(
                _problem(
                    "InvalidRange",
                    f"spec.ranges[{i}]",
                    f"{rng.first}-{rng.last} is not an address range of one family, first <= last",
                )
            )
            continue
        networks.extend(ipaddress.summarize_address_range(first, last))
    communities: list[tuple[int, int]] = []
    large: list[tuple[int, int, int]] = []
    local_pref: int | None = None
    if pool.announce is not None:
        for i, text in enumerate(pool.announce.communities):
            parsed = _parse_community(text, 2, 0xFFFF)
            if parsed is None:
                problems.append(
                    _problem(
                        "InvalidCommunity",
                        f"spec.announce.communities[{i}]",
                        f"{text!r} is not a standard community ASN:VALUE (two 16-bit numbers)",
                    )
                )
            else:
                communities.append((parsed[0], parsed[1]))
        for i, text in enumerate(pool.announce.large_communities):
            parsed = _parse_community(text, 3, 0xFFFFFFFF)
            if parsed is None:
                problems.append(
                    _problem(
                        "InvalidLargeCommunity",
                        f"spec.announce.largeCommunities[{i}]",
                        f"{text!r} is not a large community GLOBAL:DATA1:DATA2 "
                        "(three 32-bit numbers)",
                    )
                )
            else:
                large.append((parsed[0], parsed[1], parsed[2]))
        local_pref = pool.announce.local_preference
    if problems:
        return problems
    return PoolConfig(
        name=pool.pool,
        networks=tuple(networks),
        priority=pool.priority,
        communities=tuple(communities),
        large_communities=tuple(large),
        local_preference=local_pref,
    )

"""Constrained field types shared by the event models.

Events are checked when they are built and when they are parsed: a consumer can trust that an
address is a canonical IP address and a hostname is already normalized (see names.py).
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, StringConstraints

from .names import InvalidHostname, normalize_hostname


@functools.lru_cache(maxsize=1 << 16)
def _canonical_ip(value: str) -> str:
    # Cached: the same endpoint and VIP addresses are validated again and again. IPv4 goes
    # through the C library first (a tenth of the cost: 100,000 endpoints are validated at a
    # watcher's start); it accepts and canonicalizes exactly what ipaddress does for IPv4
    # (tests/test_types.py), and anything it refuses is decided by ipaddress.
    try:
        return socket.inet_ntop(socket.AF_INET, socket.inet_pton(socket.AF_INET, value))
    except (OSError, ValueError):
        pass
    try:
        return str(ipaddress.ip_address(value))
    except ValueError as exc:
        raise ValueError(f"not an IP address: {value!r}") from exc


def _canonical_cidr(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=True))
    except ValueError as exc:
        raise ValueError(f"not a network in CIDR form (host bits must be zero): {value!r}") from exc


def _canonical_host(value: str) -> str:
    try:
        canonical = normalize_hostname(value)
    except InvalidHostname as exc:
        raise ValueError(str(exc)) from exc
    if canonical != value:
        raise ValueError(f"hostname {value!r} is not canonical; producers send {canonical!r}")
    return value


IpAddress = Annotated[str, AfterValidator(_canonical_ip)]
Cidr = Annotated[str, AfterValidator(_canonical_cidr)]
Hostname = Annotated[str, AfterValidator(_canonical_host)]
Port = Annotated[int, Field(ge=1, le=65535)]
Weight = Annotated[int, Field(ge=0, le=1_000_000)]
Generation = Annotated[int, Field(ge=1)]
# Kubernetes object names: DNS-1123 subdomain (253) for most kinds; namespaces are labels.
K8sName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"),
]
Namespace = Annotated[
    str, StringConstraints(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
]
NodeName = K8sName
Protocol = Literal["TCP", "UDP", "SCTP"]
IpFamily = Literal["IPv4", "IPv6"]
Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
# Machine-readable reasons, CamelCase like Kubernetes condition reasons.
Reason = Annotated[str, StringConstraints(pattern=r"^[A-Z][A-Za-z0-9]{0,127}$")]
Message = Annotated[str, StringConstraints(max_length=4096)]

"""Which managed zone a name belongs to, its registry name, and the checks user names must pass."""

from __future__ import annotations

from ingress_events.names import InvalidHostname, normalize_hostname

from .model import Rejection

MAX_WIRE_NAME = 253
"""Presentation length limit of a name without its trailing dot (255 octets on the wire)."""


def zone_for(fqdn: str, zones: list[str]) -> str | None:
    """The longest managed zone that contains ``fqdn`` (a delegated child zone wins)."""
    best: str | None = None
    for zone in zones:
        if (fqdn == zone or fqdn.endswith("." + zone)) and (best is None or len(zone) > len(best)):
            best = zone
    return best


def registry_name(fqdn: str, prefix: str) -> str:
    # A wildcard must stay the left-most label, so its registry lives beside it, not above it.
    if fqdn.startswith("*."):
        return f"{prefix}-wildcard.{fqdn[2:]}"
    return f"{prefix}.{fqdn}"


def check_name(fqdn: str, zones: list[str], prefix: str) -> tuple[str, Rejection | None]:
    """The zone of a name, or why it cannot be published."""
    try:
        canonical = normalize_hostname(fqdn)
    except InvalidHostname as exc:
        return "", Rejection(fqdn, "InvalidName", exc.reason)
    if canonical != fqdn:
        return "", Rejection(
            fqdn, "InvalidName", f"not in canonical form (lower case, punycode): {canonical!r}"
        )
    zone = zone_for(fqdn, zones)
    if zone is None:
        return "", Rejection(
            fqdn,
            "OutsideManagedZones",
            f"{fqdn} is in none of the managed zones ({', '.join(sorted(zones)) or 'none'})",
        )
    registry = registry_name(fqdn, prefix)
    if len(registry) > MAX_WIRE_NAME:
        return "", Rejection(
            fqdn,
            "NameTooLong",
            f"its ownership record {registry[:40]}... would be {len(registry)} characters, "
            f"more than DNS allows ({MAX_WIRE_NAME})",
        )
    return zone, None

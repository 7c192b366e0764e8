"""Hostname normalization and validation shared by every service.

Every service compares and stores hostnames in one canonical form: lower case, no trailing dot,
internationalized labels in their punycode (``xn--``) form. A wildcard is only allowed as the whole
left-most label and covers exactly one label (Kubernetes Ingress semantics).
"""

from __future__ import annotations

import functools
import re

MAX_NAME_LENGTH = 253
MAX_LABEL_LENGTH = 63
_LABEL_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")


class InvalidHostname(ValueError):
    def __init__(self, host: str, reason: str) -> None:
        super().__init__(f"invalid hostname {host!r}: {reason}")
        self.host = host
        self.reason = reason


def _to_ascii_label(label: str, host: str) -> str:
    if label.isascii():
        return label.lower()
    try:
        # IDNA 2003 via the stdlib codec; it maps case and rejects what cannot be encoded.
        return label.encode("idna").decode("ascii").lower()
    except UnicodeError as exc:
        raise InvalidHostname(
            host, f"label {label!r} is not a valid internationalized name"
        ) from exc


def normalize_hostname(host: str, *, allow_wildcard: bool = True) -> str:
    """Return the canonical form of ``host`` or raise :class:`InvalidHostname` with the reason."""
    return _normalize(host, allow_wildcard)


@functools.lru_cache(maxsize=1 << 16)
def _normalize(host: str, allow_wildcard: bool) -> str:
    # Cached (a failure is not): every host is normalized several times per reconcile, and
    # 20,000 of them at a watcher's start.
    original = host
    if not host or not host.strip():
        raise InvalidHostname(original, "empty")
    if host != host.strip():
        raise InvalidHostname(original, "leading or trailing whitespace")
    if host.endswith("."):
        host = host[:-1]
    labels = host.split(".")
    if any(label == "" for label in labels):
        raise InvalidHostname(original, "empty label (two dots in a row, or a leading dot)")
    out: list[str] = []
    for index, label in enumerate(labels):
        if label == "*":
            if not allow_wildcard:
                raise InvalidHostname(original, "wildcards are not allowed here")
            if index != 0:
                raise InvalidHostname(original, "a wildcard may only be the whole left-most label")
            out.append("*")
            continue
        if "*" in label:
            raise InvalidHostname(original, "a wildcard must be a whole label ('*.example.com')")
        ascii_label = _to_ascii_label(label, original)
        if len(ascii_label) > MAX_LABEL_LENGTH:
            raise InvalidHostname(original, f"label longer than {MAX_LABEL_LENGTH} characters")
        if not _LABEL_RE.match(ascii_label):
            raise InvalidHostname(
                original,
                f"label {label!r} may contain only letters, digits and inner hyphens",
            )
        out.append(ascii_label)
    if out[0] == "*" and len(out) < 3:
        raise InvalidHostname(
            original, "a wildcard needs at least two labels below it ('*.example.com')"
        )
    if len(out) < 2 and out[0] != "*":
        # Single-label names (localhost, intranet shortnames) cannot be published in DNS.
        raise InvalidHostname(original, "a fully qualified name needs at least two labels")
    if all(label.isdigit() for label in out[-1:]):
        raise InvalidHostname(original, "the top-level label cannot be numeric (an IP address?)")
    name = ".".join(out)
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidHostname(original, f"longer than {MAX_NAME_LENGTH} characters")
    return name


def is_wildcard(host: str) -> bool:
    return host.startswith("*.")


def wildcard_covers(pattern: str, host: str) -> bool:
    """True when canonical ``pattern`` matches canonical ``host``; a wildcard covers one label."""
    if not is_wildcard(pattern):
        return pattern == host
    suffix = pattern[1:]  # ".example.com"
    if not host.endswith(suffix):
        return False
    head = host[: -len(suffix)]
    return head != "" and "." not in head and head != "*"

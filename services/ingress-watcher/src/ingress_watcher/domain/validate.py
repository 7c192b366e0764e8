"""Validation of user-controlled strings: hostnames, paths, annotations.

Each check returns the canonical value or raises :class:`Invalid` with a machine-readable reason
(CamelCase, the ``Problem.reason`` of the catalogue) and a message a user can act on. Nothing here
is lenient on purpose: these strings end up in Envoy, BIRD and DNS configuration.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from ingress_events.catalogue import RetryOn
from ingress_events.names import InvalidHostname, normalize_hostname

ANNOTATION_PREFIX = "ingress-domain.io/"
MAX_ANNOTATION_VALUE = 256
MAX_PATH_LENGTH = 1024


class Invalid(ValueError):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


def ingress_host(host: str) -> str:
    """An Ingress rule host must already be canonical: Kubernetes stores what the user wrote, and
    silently rewriting it would make the Ingress and its DNS name disagree."""
    try:
        canonical = normalize_hostname(host)
    except InvalidHostname as exc:
        if "*" in host:
            raise Invalid("InvalidWildcard", str(exc)) from exc
        if exc.reason.startswith("label longer"):
            raise Invalid("HostnameLabelTooLong", str(exc)) from exc
        if "longer than" in exc.reason:
            raise Invalid("HostnameTooLong", str(exc)) from exc
        if "internationalized" in exc.reason:
            raise Invalid("InvalidIdn", str(exc)) from exc
        raise Invalid("InvalidHostname", str(exc)) from exc
    if canonical == host:
        return host
    if not host.isascii():
        raise Invalid("HostnameNotPunycode", f"write {host!r} in its punycode form {canonical!r}")
    if host.endswith("."):
        raise Invalid("HostnameTrailingDot", f"write {host!r} without the trailing dot")
    if host != host.lower():
        raise Invalid("HostnameNotLowercase", f"write {host!r} in lower case: {canonical!r}")
    raise Invalid("InvalidHostname", f"{host!r} is not canonical; write {canonical!r}")


def claim_host(host: str) -> str:
    """Hosts in Zone / Domain / PathClaim objects are compared after normalization."""
    try:
        return normalize_hostname(host, allow_wildcard=False)
    except InvalidHostname as exc:
        raise Invalid("InvalidHostname", str(exc)) from exc


def is_subdomain_or_same(host: str, parent: str) -> bool:
    """``host`` equals ``parent`` or lies under it; ``*.parent`` lies under ``parent``."""
    return host == parent or host.endswith("." + parent)


_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_WHITESPACE_RE = re.compile(r"\s")
_FORBIDDEN = set("{};#")
# Characters that mean something in a regular expression and never in a literal Prefix path as
# Envoy matches it: a user writing them expects regex semantics they would not get.
_REGEX = set("^$*+?()[]|\\")
_PATH_RE = re.compile(r"^/[A-Za-z0-9._~!$&'()*+,=:@%/-]*$")
_PERCENT_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def ingress_path(path: str, path_type: str) -> str:
    if path == "":
        return "/"
    if _WHITESPACE_RE.search(path):
        raise Invalid("PathWhitespace", f"path {path!r} contains whitespace")
    if _CONTROL_RE.search(path):
        raise Invalid("PathControlCharacter", f"path {path!r} contains a control character")
    bad = sorted(set(path) & _FORBIDDEN)
    if bad:
        raise Invalid("PathForbiddenCharacter", f"path {path!r} contains {''.join(bad)!r}")
    if not path.startswith("/"):
        raise Invalid("PathNotAbsolute", f"path {path!r} must start with '/'")
    if len(path) > MAX_PATH_LENGTH:
        raise Invalid("PathTooLong", f"path longer than {MAX_PATH_LENGTH} characters")
    if path_type != "Exact":
        regex = sorted(set(path) & _REGEX)
        if regex:
            raise Invalid(
                "PathRegexSyntax",
                f"{path_type} path {path!r} contains {''.join(regex)!r}: prefixes are literal",
            )
    if _PERCENT_RE.search(path):
        raise Invalid("PathBadPercentEncoding", f"path {path!r} has a '%' not followed by 2 hex")
    if not _PATH_RE.match(path):
        raise Invalid("PathInvalidCharacter", f"path {path!r} contains a character not allowed")
    segments = path.split("/")
    if ".." in segments or "." in segments:
        raise Invalid("PathDotSegment", f"path {path!r} contains a '.' or '..' segment")
    return path


def path_covers(prefix: str, path: str) -> bool:
    """Prefix semantics of Ingress: element-wise, so ``/api`` covers ``/api/x`` but not
    ``/apix``."""
    if prefix == "/":
        return True
    base = prefix.rstrip("/")
    return path == base or path.startswith(base + "/")


_DURATION_RE = re.compile(r"^(?:(\d{1,5})h)?(?:(\d{1,5})m(?!s))?(?:(\d{1,7})s)?(?:(\d{1,7})ms)?$")


def duration_seconds(value: str) -> float:
    match = _DURATION_RE.match(value)
    if not value or match is None:
        raise Invalid("InvalidDuration", f"{value!r} is not a duration like 30s, 1m30s, 500ms")
    hours, minutes, seconds, millis = (int(g) if g else 0 for g in match.groups())
    total = hours * 3600 + minutes * 60 + seconds + millis / 1000
    if total <= 0:
        raise Invalid("InvalidDuration", f"{value!r} must be longer than zero")
    return total


_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SHARING_RE = re.compile(r"^[A-Za-z0-9._-]{1,63}$")
_RETRY_ON: frozenset[str] = frozenset(
    {"5xx", "gateway-error", "reset", "connect-failure", "retriable-4xx"}
)


@dataclass(frozen=True)
class Annotations:
    """The validated ``ingress-domain.io/*`` annotations of one object (documented in
    docs/ingress-watcher.md)."""

    pool: str | None = None
    vips: tuple[str, ...] = ()
    sharing_key: str | None = None
    request_timeout: float | None = None
    idle_timeout: float | None = None
    rewrite_prefix: str | None = None
    rewrite_host: str | None = None
    canary_weight: int | None = None
    ssl_redirect: bool | None = None
    dns_ttl: int | None = None
    retry_attempts: int | None = None
    retry_on: tuple[RetryOn, ...] = ()
    problems: tuple[tuple[str, str, str], ...] = field(default=())
    """(reason, annotation, message) for every rejected annotation."""


def _int_in(value: str, low: int, high: int, what: str) -> int:
    if not re.fullmatch(r"-?\d{1,10}", value):
        raise Invalid("InvalidAnnotation", f"{what} must be an integer, got {value!r}")
    number = int(value)
    if not low <= number <= high:
        raise Invalid("InvalidAnnotation", f"{what} must be between {low} and {high}")
    return number


def _bool(value: str) -> bool:
    if value in ("true", "false"):
        return value == "true"
    raise Invalid("InvalidAnnotation", f"must be 'true' or 'false', got {value!r}")


def _vips(value: str) -> tuple[str, ...]:
    out: list[str] = []
    for part in value.split(","):
        try:
            address = ipaddress.ip_address(part.strip())
        except ValueError as exc:
            raise Invalid("InvalidAnnotation", f"{part.strip()!r} is not an IP address") from exc
        out.append(str(address))
    if len(out) > 2 or len({ipaddress.ip_address(a).version for a in out}) != len(out):
        raise Invalid("InvalidAnnotation", "at most one IPv4 and one IPv6 address")
    return tuple(out)


def parse_annotations(raw: dict[str, str] | None, *, kind: str) -> Annotations:
    """Validate the ``ingress-domain.io/*`` annotations; other annotations are not ours."""
    values: dict[str, object] = {}
    problems: list[tuple[str, str, str]] = []
    allowed = _INGRESS_KEYS if kind == "Ingress" else _SERVICE_KEYS
    for name, value in sorted((raw or {}).items()):
        if not name.startswith(ANNOTATION_PREFIX):
            continue
        short = name[len(ANNOTATION_PREFIX) :]
        if short not in allowed:
            problems.append(
                ("UnknownAnnotation", name, f"{name} is not an annotation of {kind}s we know")
            )
            continue
        if not isinstance(value, str):
            problems.append(("InvalidAnnotation", name, f"{name} must be a string"))
            continue
        if len(value) > MAX_ANNOTATION_VALUE:
            problems.append(
                (
                    "AnnotationTooLong",
                    name,
                    f"{name} is {len(value)} characters; at most {MAX_ANNOTATION_VALUE}",
                )
            )
            continue
        try:
            values[allowed[short]] = _PARSERS[short](value)
        except Invalid as exc:
            problems.append((exc.reason, name, f"{name}: {exc.message}"))
    return Annotations(**values, problems=tuple(problems))  # type: ignore[arg-type]


def _pool(value: str) -> str:
    if not _NAME_RE.match(value) or len(value) > 253:
        raise Invalid("InvalidAnnotation", f"{value!r} is not a pool name")
    return value


def _sharing(value: str) -> str:
    if not _SHARING_RE.match(value):
        raise Invalid("InvalidAnnotation", f"{value!r} may hold only A-Z a-z 0-9 . _ - (1-63)")
    return value


def _timeout(limit: int) -> Callable[[str], float]:
    def parse(value: str) -> float:
        seconds = duration_seconds(value)
        if seconds > limit:
            raise Invalid("InvalidAnnotation", f"{value!r} is longer than {limit}s")
        return seconds

    return parse


def _rewrite_prefix(value: str) -> str:
    return ingress_path(value, "Prefix")


def _rewrite_host(value: str) -> str:
    if value.startswith("*"):
        raise Invalid("InvalidAnnotation", "a rewrite host cannot be a wildcard")
    return ingress_host(value)


def _retry_on(value: str) -> tuple[str, ...]:
    parts = tuple(p.strip() for p in value.split(","))
    unknown = [p for p in parts if p not in _RETRY_ON]
    if unknown:
        raise Invalid(
            "InvalidAnnotation", f"unknown retry condition(s) {unknown}; use {sorted(_RETRY_ON)}"
        )
    return parts


_PARSERS: dict[str, Callable[[str], object]] = {
    "pool": _pool,
    "vip": _vips,
    "sharing-key": _sharing,
    "request-timeout": _timeout(3600),
    "idle-timeout": _timeout(86400),
    "rewrite-prefix": _rewrite_prefix,
    "rewrite-host": _rewrite_host,
    "canary-weight": lambda v: _int_in(v, 0, 100, "canary-weight"),
    "ssl-redirect": _bool,
    "dns-ttl": lambda v: _int_in(v, 1, 86400, "dns-ttl"),
    "retry-attempts": lambda v: _int_in(v, 0, 10, "retry-attempts"),
    "retry-on": _retry_on,
}
_INGRESS_KEYS = {
    "pool": "pool",
    "vip": "vips",
    "sharing-key": "sharing_key",
    "request-timeout": "request_timeout",
    "idle-timeout": "idle_timeout",
    "rewrite-prefix": "rewrite_prefix",
    "rewrite-host": "rewrite_host",
    "canary-weight": "canary_weight",
    "ssl-redirect": "ssl_redirect",
    "dns-ttl": "dns_ttl",
    "retry-attempts": "retry_attempts",
    "retry-on": "retry_on",
}
_SERVICE_KEYS = {"pool": "pool", "vip": "vips", "sharing-key": "sharing_key"}

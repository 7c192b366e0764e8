"""Allowlist validation of user input before any of it reaches Envoy.

The event models already constrain hosts and paths when events are built and parsed; these checks
run again here because l7-config is the last line before Envoy, and they add what a schema cannot
say: dot segments and percent-escapes that Envoy's path normalization would rewrite (so the rule
would silently never match), header values with CR/LF, and the TLS material itself.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtensionOID
from ingress_events import catalogue as c
from ingress_events.names import InvalidHostname, normalize_hostname, wildcard_covers

from .model import Problem, SecretLookup, SecretMaterial, SecretMissing

_PATH_RE = re.compile(r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*$")
_PERCENT_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")
# Escapes Envoy decodes or rejects before routing: an encoded slash, backslash, NUL or control
# character would make the rule unreachable or ambiguous.
_FORBIDDEN_ESCAPE_RE = re.compile(r"%(?:2[Ff]|5[Cc]|[01][0-9A-Fa-f]|7[Ff])")
MAX_PATH = 1024
_SIGNING_KEYS = (
    rsa.RSAPrivateKey,
    ec.EllipticCurvePrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
)


def check_path(path: str, what: str) -> Problem | None:
    if len(path) > MAX_PATH:
        return Problem("InvalidPath", f"{what} is longer than {MAX_PATH} characters")
    if not _PATH_RE.match(path):
        bad = sorted({ch for ch in path if not re.match(r"[A-Za-z0-9._~!$&'()*+,;=:@%/-]", ch)})
        shown = ", ".join(repr(ch) for ch in bad[:5]) or "it does not start with '/'"
        return Problem(
            "InvalidPath",
            f"{what} {path!r} must start with '/' and contain only URL path characters "
            f"(found {shown})",
        )
    if _PERCENT_RE.search(path):
        return Problem("InvalidPath", f"{what} {path!r} has a '%' that is not a %XX escape")
    if _FORBIDDEN_ESCAPE_RE.search(path):
        return Problem(
            "InvalidPath",
            f"{what} {path!r} encodes a slash, backslash or control character",
        )
    segments = path.split("/")
    if any(s in (".", "..") for s in segments):
        return Problem(
            "InvalidPath",
            f"{what} {path!r} has a '.' or '..' segment, which request normalization removes",
        )
    return None


def check_host(host: str, what: str, *, allow_wildcard: bool) -> Problem | None:
    if any(ord(ch) < 0x21 or ord(ch) == 0x7F or ch in "{}" for ch in host):
        return Problem("InvalidHostname", f"{what} {host!r} contains control characters or braces")
    try:
        canonical = normalize_hostname(host, allow_wildcard=allow_wildcard)
    except InvalidHostname as exc:
        return Problem("InvalidHostname", f"{what}: {exc.reason}")
    if canonical != host:
        return Problem("InvalidHostname", f"{what} {host!r} is not canonical ({canonical!r})")
    return None


def _san_names(cert: x509.Certificate) -> list[str]:
    try:
        ext = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
    except x509.ExtensionNotFound:
        return []
    san = ext.value
    assert isinstance(san, x509.SubjectAlternativeName)
    return [n.lower() for n in san.get_values_for_type(x509.DNSName)]


def _cert_covers(names: list[str], host: str) -> bool:
    for name in names:
        if name == host:
            return True
        # A certificate wildcard covers one label, like an Ingress wildcard.
        if name.startswith("*.") and not host.startswith("*.") and wildcard_covers(name, host):
            return True
    return False


def check_tls(material: SecretLookup, host: str, secret: str, now: dt.datetime) -> Problem | None:
    """The Secret's certificate must parse, match its key, be valid at ``now`` and name ``host``.

    Key sizes and curves are left to Envoy: its TLS library is the authority on what it loads, and
    a refusal comes back as a NACK that becomes an l7.rejected with Envoy's own words.
    """
    if isinstance(material, SecretMissing):
        return Problem(material.reason, material.message)
    assert isinstance(material, SecretMaterial)
    try:
        certs = x509.load_pem_x509_certificates(material.cert_pem)
    except ValueError as exc:
        return Problem("InvalidCertificate", f"Secret {secret}: tls.crt is not PEM X.509: {exc}")
    if not certs:
        return Problem("InvalidCertificate", f"Secret {secret}: tls.crt holds no certificate")
    try:
        key = serialization.load_pem_private_key(material.key_pem, password=None)
    except (ValueError, TypeError) as exc:
        return Problem("InvalidCertificate", f"Secret {secret}: tls.key is not a PEM key: {exc}")
    leaf = certs[0]
    if not isinstance(key, _SIGNING_KEYS):
        return Problem("InvalidCertificate", f"Secret {secret}: unsupported key type")
    der, spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if leaf.public_key().public_bytes(der, spki) != key.public_key().public_bytes(der, spki):
        return Problem(
            "CertificateKeyMismatch", f"Secret {secret}: tls.key does not belong to tls.crt"
        )
    if now < leaf.not_valid_before_utc:
        return Problem(
            "CertificateNotYetValid",
            f"Secret {secret}: certificate is valid only from "
            f"{leaf.not_valid_before_utc:%Y-%m-%dT%H:%M:%SZ}",
        )
    if now > leaf.not_valid_after_utc:
        return Problem(
            "CertificateExpired",
            f"Secret {secret}: certificate expired at "
            f"{leaf.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}",
        )
    names = _san_names(leaf)
    if not _cert_covers(names, host):
        return Problem(
            "CertificateHostMismatch",
            f"Secret {secret}: certificate names {names[:5]} do not cover {host}",
        )
    return None


def secret_name(ref: c.ObjectRef) -> str:
    return f"{ref.namespace}/{ref.name}"


def validate_domain(
    desired: c.DomainDesired,
    secrets: dict[str, SecretLookup],
    now: dt.datetime,
) -> list[Problem]:
    """Every problem of one domain; an empty list means it can be configured."""
    problems: list[Problem] = []
    host_problem = check_host(desired.host, "host", allow_wildcard=True)
    if host_problem:
        return [host_problem]
    for index, route in enumerate(desired.routes):
        where = f"routes[{index}]"
        p = check_path(route.path, f"{where}.path")
        if p:
            problems.append(p)
        if route.rewrite is not None:
            if route.rewrite.prefix is not None:
                p = check_path(route.rewrite.prefix, f"{where}.rewrite.prefix")
                if p:
                    problems.append(p)
            if route.rewrite.host is not None:
                p = check_host(route.rewrite.host, f"{where}.rewrite.host", allow_wildcard=False)
                if p:
                    problems.append(p)
        if sum(b.weight for b in route.backends) == 0:
            problems.append(
                Problem(
                    "NoBackendWeight", f"{where}: every backend has weight 0, nothing can serve"
                )
            )
    if desired.default_backend is not None and desired.default_backend.weight == 0:
        problems.append(Problem("NoBackendWeight", "default_backend has weight 0"))
    for index, remote in enumerate(desired.remote_backends):
        address = ipaddress.ip_address(remote.address)
        if address.is_unspecified or address.is_multicast:
            problems.append(
                Problem(
                    "InvalidRemoteBackend",
                    f"remote_backends[{index}] ({remote.cluster}): {remote.address} "
                    "cannot be a remote cluster's VIP",
                )
            )
    if not desired.routes and desired.default_backend is None:
        problems.append(Problem("NoRoutes", "the domain has neither routes nor a default backend"))
    if desired.tls is not None:
        name = secret_name(desired.tls.secret)
        lookup = secrets.get(name)
        if lookup is None:
            lookup = SecretMissing("SecretNotFound", f"Secret {name} was not looked up")
        p = check_tls(lookup, desired.host, name, now)
        if p:
            problems.append(p)
    return problems

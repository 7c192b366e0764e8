"""Reversible encoding of key parts (hostnames, namespaces, addresses) into NATS subject tokens.

A NATS token may not contain ``.``, ``*``, ``>`` or whitespace, and JetStream KV keys are limited
to ``[-/_=.a-zA-Z0-9]``. Hostnames are full of dots and wildcard hosts start with ``*``, so every
key part goes through :func:`encode_token` before it becomes part of a subject or a KV key.

The rules (documented in docs/events/naming.md):

* ``A-Z a-z 0-9 -`` stand for themselves, so the common case stays readable;
* ``.`` becomes ``_`` (``www.example.com`` -> ``www_example_com``);
* every other character becomes ``=`` followed by the two lower-case hex digits of each byte of
  its UTF-8 encoding (``*`` -> ``=2a``, ``_`` -> ``=5f``, ``:`` -> ``=3a``, ``=`` -> ``=3d``).

The output alphabet is a subset of both the NATS token and the KV key alphabets, and decoding is
exact because ``_`` and ``=`` never stand for themselves.
"""

from __future__ import annotations

import re

_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")
_SIMPLE_RE = re.compile(r"^[A-Za-z0-9.-]+$")
_TOKEN_RE = re.compile(r"^(?:[A-Za-z0-9_-]|=[0-9a-f]{2})+$")


class KeyEncodingError(ValueError):
    """A token that no key part encodes to, or a key part that cannot be encoded."""


def encode_token(part: str) -> str:
    if _SIMPLE_RE.match(part):
        # The common case (hostnames, namespaces, IPv4 addresses): only dots need replacing.
        return part.replace(".", "_")
    if not part:
        raise KeyEncodingError("an empty key part cannot become a subject token")
    out: list[str] = []
    for char in part:
        if char in _PLAIN:
            out.append(char)
        elif char == ".":
            out.append("_")
        else:
            out.extend(f"={byte:02x}" for byte in char.encode("utf-8"))
    return "".join(out)


def decode_token(token: str) -> str:
    if not _TOKEN_RE.match(token):
        raise KeyEncodingError(f"not an encoded key token: {token!r}")
    raw = bytearray()
    i = 0
    while i < len(token):
        char = token[i]
        if char == "_":
            raw += b"."
            i += 1
        elif char == "=":
            raw.append(int(token[i + 1 : i + 3], 16))
            i += 3
        else:
            raw += char.encode("ascii")
            i += 1
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise KeyEncodingError(f"token {token!r} does not decode to UTF-8") from exc


def encode_key(parts: tuple[str, ...]) -> str:
    """Encode several key parts as dot-separated tokens (a subject suffix or a KV key)."""
    return ".".join(encode_token(p) for p in parts)


def decode_key(suffix: str) -> tuple[str, ...]:
    return tuple(decode_token(t) for t in suffix.split("."))

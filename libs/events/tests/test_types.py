"""The canonical IP address type: the fast IPv4 path decides exactly as ipaddress does."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from ingress_events.types import _canonical_ip

pytestmark = pytest.mark.unit


def _reference(value: str) -> str | None:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None


def _ours(value: str) -> str | None:
    try:
        return _canonical_ip.__wrapped__(value)
    except ValueError:
        return None


# \u0661 is an Arabic-Indic digit: int() reads it, an address parser must not.
@given(st.text(alphabet="0123456789.x: \n\x00\u0661", min_size=0, max_size=18))
@example("01.2.3.4")  # leading zeros: refused by both
@example("1.2.3")
@example("256.0.0.1")
@example("0.0.0.0")
@example("::ffff:1.2.3.4")
@example("2001:DB8::1")  # upper case: canonical lower case
def test_canonical_ip_agrees_with_ipaddress(value: str) -> None:
    assert _ours(value) == _reference(value)


@given(st.ip_addresses())
def test_every_address_canonicalizes_to_its_ipaddress_text(address: object) -> None:
    assert _canonical_ip.__wrapped__(str(address)) == str(address)

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ingress_events.keys import KeyEncodingError, decode_key, decode_token, encode_key, encode_token
from ingress_events.names import InvalidHostname, normalize_hostname, wildcard_covers

pytestmark = pytest.mark.unit

NATS_TOKEN = re.compile(r"^[^\s.*>]+$")
KV_KEY = re.compile(r"^[-/_=.a-zA-Z0-9]+$")


@given(st.text(min_size=1))
def test_any_text_round_trips_through_a_subject_and_kv_safe_token(part: str) -> None:
    token = encode_token(part)
    assert NATS_TOKEN.match(token)
    assert KV_KEY.match(token)
    assert "." not in token
    assert decode_token(token) == part


@given(st.lists(st.text(min_size=1), min_size=1, max_size=5))
def test_keys_of_several_parts_round_trip(parts: list[str]) -> None:
    assert decode_key(encode_key(tuple(parts))) == tuple(parts)


@given(st.text(min_size=1), st.text(min_size=1))
def test_different_parts_never_share_a_token(a: str, b: str) -> None:
    assert (encode_token(a) == encode_token(b)) == (a == b)


@pytest.mark.parametrize(
    ("part", "token"),
    [
        ("www.example.com", "www_example_com"),
        ("*.example.com", "=2a_example_com"),
        ("my_host", "my=5fhost"),
        ("2001:db8::1", "2001=3adb8=3a=3a1"),
        ("10.0.0.7", "10_0_0_7"),
        ("a=b", "a=3db"),
    ],
)
def test_readable_examples(part: str, token: str) -> None:
    assert encode_token(part) == token


@pytest.mark.parametrize("bad", ["", "a.b", "=zz", "=4", "a b", "*", ">"])
def test_tokens_that_no_key_encodes_to_are_refused(bad: str) -> None:
    with pytest.raises(KeyEncodingError):
        decode_token(bad)


def test_empty_part_is_refused() -> None:
    with pytest.raises(KeyEncodingError):
        encode_token("")


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("Shop.Example.COM", "shop.example.com"),
        ("shop.example.com.", "shop.example.com"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("*.example.com", "*.example.com"),
    ],
)
def test_hostnames_normalize(raw: str, canonical: str) -> None:
    assert normalize_hostname(raw) == canonical


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("", "empty"),
        ("a..b.com", "empty label"),
        ("-a.example.com", "letters, digits"),
        ("a_b.example.com", "letters, digits"),
        ("a" * 64 + ".example.com", "longer than 63"),
        (".".join(["abcdefghi"] * 26), "longer than 253"),
        ("*", "wildcard needs"),
        ("*.com", "wildcard needs"),
        ("a.*.example.com", "left-most"),
        ("a*.example.com", "whole label"),
        ("localhost", "two labels"),
        ("10.0.0.1", "numeric"),
        (" shop.example.com", "whitespace"),
    ],
)
def test_bad_hostnames_are_rejected_with_a_reason(raw: str, why: str) -> None:
    with pytest.raises(InvalidHostname, match=why):
        normalize_hostname(raw)


def test_a_wildcard_covers_exactly_one_label() -> None:
    assert wildcard_covers("*.example.com", "shop.example.com")
    assert not wildcard_covers("*.example.com", "a.shop.example.com")
    assert not wildcard_covers("*.example.com", "example.com")
    assert wildcard_covers("shop.example.com", "shop.example.com")
    assert not wildcard_covers("shop.example.com", "other.example.com")

import inspect
import json
from datetime import UTC, datetime

import pytest
from ingress_events import catalogue as c
from ingress_events.envelope import EnvelopeError, decode, encode, event_class_for
from ingress_events.examples import examples
from ingress_events.subjects import Subjects
from pydantic import ValidationError

pytestmark = pytest.mark.unit


def test_every_event_type_has_an_example_and_a_unique_type() -> None:
    assert {type(e) for e in examples()} == set(c.ALL_EVENTS)
    assert len({cls.ce_type() for cls in c.ALL_EVENTS}) == len(c.ALL_EVENTS)


@pytest.mark.parametrize("cls", c.ALL_EVENTS, ids=lambda cls: cls.event_type())
def test_every_event_declares_its_place(cls: type[c.Event]) -> None:
    assert not inspect.isabstract(cls)
    assert cls.ce_type() == f"io.ingress-domain.{cls.family.value}.{cls.name}.v1"
    assert cls.producer and cls.summary
    assert cls.family in c.CONSUMERS


@pytest.mark.parametrize("event", examples(), ids=lambda e: e.event_type())
def test_the_key_matches_a_declared_subject_shape(event: c.Event) -> None:
    key = event.key()
    shapes = c.KEY_PARTS[event.family]
    assert any(
        len(shape) == len(key)
        and all(
            part.split("=")[1] == value
            for part, value in zip(shape, key, strict=True)
            if "=" in part
        )
        for shape in shapes
    ), (key, shapes)
    subjects = Subjects()
    assert subjects.parse(subjects.for_event(event)) == (event.family, key)


def test_the_base_event_cannot_be_instantiated() -> None:
    with pytest.raises(TypeError):
        c.Event(generation=1)  # type: ignore[abstract]


@pytest.mark.parametrize(
    ("factory", "field"),
    [
        (lambda: c.DomainDeleted(generation=1, host="Shop.Example.com"), "host"),
        (lambda: c.DomainDeleted(generation=0, host="shop.example.com"), "generation"),
        (lambda: c.VipOwner(kind="domain", namespace="x"), "domain owner"),
        (lambda: c.L4Removed(generation=1, node="node-a", vip="10.0.0.300"), "vip"),
        (lambda: c.PoolDesired(generation=1, pool="p", cidrs=["10.0.0.1/24"]), "cidrs"),
        (
            lambda: c.PeerDesired(
                generation=1, peer="p", address="10.0.0.1", peer_asn=0, local_asn=1
            ),
            "peer_asn",
        ),
        (
            lambda: c.Route(
                path="/a b",
                path_type="Prefix",
                backends=[],
                source=c.ObjectRef(kind="Ingress", namespace="a", name="b"),
            ),
            "path",
        ),
    ],
)
def test_invalid_events_cannot_be_built(factory: object, field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        factory()  # type: ignore[operator]


def test_ip_addresses_are_stored_canonically() -> None:
    event = c.L4Removed(generation=1, node="n", vip="2001:DB8:0::1")
    assert event.vip == "2001:db8::1"


@pytest.mark.parametrize("event", examples(), ids=lambda e: e.event_type())
def test_envelope_round_trip(event: c.Event) -> None:
    subject = Subjects().for_event(event)
    headers, body = encode(
        event,
        nats_subject=subject,
        source="//test",
        trace_headers={"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"},
        now=datetime(2026, 11, 22, tzinfo=UTC),
    )
    assert headers["Nats-Msg-Id"] == headers["ce-id"]
    assert headers["ce-type"] == event.ce_type()
    assert headers["ce-time"] == "2026-11-22T00:00:00Z"
    envelope = decode(headers, body, nats_subject=subject)
    assert envelope.event == event
    assert envelope.traceparent is not None


def test_event_ids_are_stable_for_identical_events_and_differ_otherwise() -> None:
    a, b = (
        c.DomainDeleted(generation=5, host="a.example.com"),
        c.DomainDeleted(generation=6, host="a.example.com"),
    )
    ids = [encode(e, nats_subject="s", source="x")[0]["ce-id"] for e in (a, a, b)]
    assert ids[0] == ids[1] != ids[2]


def _headers(event: c.Event) -> tuple[dict[str, str], bytes]:
    return encode(event, nats_subject="s", source="//test")


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda h, b: ({k: v for k, v in h.items() if k != "ce-type"}, b), "MissingHeaders"),
        (
            lambda h, b: ({**h, "ce-type": "io.ingress-domain.domain.deleted.v2"}, b),
            "UnsupportedVersion",
        ),
        (lambda h, b: ({**h, "ce-type": "io.ingress-domain.domain.exploded.v1"}, b), "UnknownType"),
        (lambda h, b: ({**h, "ce-type": "com.example.other"}, b), "UnknownType"),
        (lambda h, b: (h, b"{not json"), "MalformedBody"),
        (lambda h, b: (h, json.dumps({"generation": 1}).encode()), "SchemaViolation"),
        (lambda h, b: ({**h, "ce-specversion": "0.3"}, b), "UnsupportedSpecVersion"),
    ],
)
def test_bad_messages_are_named_by_reason(mutate: object, reason: str) -> None:
    headers, body = _headers(c.DomainDeleted(generation=1, host="a.example.com"))
    bad_headers, bad_body = mutate(headers, body)  # type: ignore[operator]
    with pytest.raises(EnvelopeError) as caught:
        decode(bad_headers, bad_body, nats_subject="s")
    assert caught.value.reason == reason


def test_unknown_fields_from_a_newer_minor_are_ignored() -> None:
    headers, body = _headers(c.DomainDeleted(generation=1, host="a.example.com"))
    body = json.dumps({**json.loads(body), "added_later": True}).encode()
    assert decode(headers, body, nats_subject="s").event == c.DomainDeleted(
        generation=1, host="a.example.com"
    )


def test_type_lookup() -> None:
    assert event_class_for("io.ingress-domain.vip.assigned.v1") is c.VipAssigned

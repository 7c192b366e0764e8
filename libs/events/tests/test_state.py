import gc
import weakref
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ingress_events import catalogue as c
from ingress_events.envelope import Envelope
from ingress_events.generation import GenerationClock
from ingress_events.state import LatestByKey

pytestmark = pytest.mark.unit


def _env(event: c.Event) -> Envelope[c.Event]:
    return Envelope(
        event=event,
        id="x",
        source="s",
        type=event.ce_type(),
        time=datetime.now(UTC),
        subject="/".join(event.key()),
        nats_subject="n",
    )


def _event(generation: int, deleted: bool) -> c.Event:
    if deleted:
        return c.DomainDeleted(generation=generation, host="a.example.com")
    return c.L7Removed(generation=generation, host="a.example.com")


@given(st.lists(st.tuples(st.integers(1, 50), st.booleans()), min_size=1, max_size=30))
def test_any_order_of_deliveries_converges_on_the_highest_generation(
    deliveries: list[tuple[int, bool]],
) -> None:
    state: LatestByKey[c.Event] = LatestByKey()
    for generation, deleted in deliveries:
        state.offer(
            _env(
                c.DomainDeleted(generation=generation, host="a.example.com")
                if deleted
                else _domain(generation)
            )
        )
    best = max(g for g, _ in deliveries)
    winner = state.get(c.Family.DOMAIN, ("a.example.com",))
    assert winner is not None and winner.generation == best


def _domain(generation: int) -> c.Event:
    return c.DomainDesired(
        generation=generation,
        host="a.example.com",
        owner_namespace="a",
        ingress_class="x",
        sources=[c.ObjectRef(kind="Ingress", namespace="a", name="i")],
    )


def test_duplicates_and_older_generations_are_not_news_and_tombstones_hide_keys() -> None:
    state: LatestByKey[c.Event] = LatestByKey()
    assert state.offer(_env(_domain(2)))
    assert not state.offer(_env(_domain(2)))
    assert not state.offer(_env(_domain(1)))
    assert [e.generation for e in state.live(c.Family.DOMAIN)] == [2]
    assert state.offer(_env(c.DomainDeleted(generation=3, host="a.example.com")))
    assert not state.offer(_env(_domain(2)))  # a late older desired cannot resurrect the key
    assert list(state.live(c.Family.DOMAIN)) == []


def test_generation_clock_always_moves_forward() -> None:
    now = [1_000]
    clock = GenerationClock(lambda: now[0])
    assert clock.next() == 1_000
    assert clock.next(1_000) == 1_001  # clock stood still
    now[0] = 10
    assert clock.next(1_001) == 1_002  # clock stepped back
    now[0] = 5_000
    assert clock.next(1_002) == 5_000  # a restarted producer jumps above its predecessor


def test_the_event_is_kept_and_its_envelope_let_go() -> None:
    state: LatestByKey[c.Event] = LatestByKey()
    envelope = _env(_domain(2))
    event = envelope.event
    gone = weakref.ref(envelope)
    assert state.offer(envelope)
    del envelope
    gc.collect()
    assert gone() is None  # its ~1.8 KB of CloudEvents attributes are not held
    assert state.get(c.Family.DOMAIN, ("a.example.com",)) is event

"""Property tests of the pure core: plans converge, generations only grow, deletes only for keys
that really went away, and one bad Ingress never changes anything else."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ingress_events import catalogue as c
from ingress_events.catalogue import Family
from ingress_watcher.domain.normalize import Policy, StateKey, key_of_event, normalize
from ingress_watcher.domain.plan import kept, plan, suspicious_emptiness
from ingress_watcher.domain.validate import Invalid, ingress_host, ingress_path
from watcher_objects import base, domain, ingress, service

pytestmark = pytest.mark.unit

labels = st.sampled_from(["a", "b", "shop", "api", "x1"])
hosts = st.lists(labels, min_size=1, max_size=2).map(lambda ls: ".".join(ls) + ".example.com")
paths = st.lists(st.sampled_from(["api", "v1", "img", "x"]), max_size=3).map(
    lambda ps: "/" + "/".join(ps)
)
namespaces = st.sampled_from(["team-a", "team-b"])


@st.composite
def clusters(draw: st.DrawFn) -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = [service("team-b", "web")]
    for i in range(draw(st.integers(0, 3))):
        objects.append(
            domain(
                draw(namespaces),
                draw(hosts),
                name=f"d{i}",
                created=f"2026-01-0{draw(st.integers(1, 9))}T00:00:00Z",
            )
        )
    for i in range(draw(st.integers(0, 6))):
        objects.append(
            ingress(
                draw(namespaces),
                f"i{i}",
                draw(hosts),
                draw(paths),
                path_type=draw(st.sampled_from(["Exact", "Prefix"])),
                created=f"2026-02-0{draw(st.integers(1, 9))}T00:00:00Z",
            )
        )
    return objects


def desired_of(objects: list[dict[str, Any]]) -> dict[StateKey, c.Event]:
    return normalize(base(*objects).objects, Policy())


def apply(published: dict[StateKey, c.Event], events: list[c.Event]) -> None:
    for event in events:
        published[key_of_event(event)] = event


@settings(max_examples=150, deadline=None)
@given(clusters(), clusters(), st.integers(1, 10**15))
def test_plans_converge_and_generations_grow(
    first: list[dict[str, Any]], second: list[dict[str, Any]], now: int
) -> None:
    published: dict[StateKey, c.Event] = {}
    apply(published, plan(desired_of(first), published, now).publish)
    assert plan(desired_of(first), published, now + 1).empty  # converged: zero writes

    before = dict(published)
    result = plan(desired_of(second), published, now + 2)
    for event in result.publish:
        key = key_of_event(event)
        if key in before:
            assert event.generation > before[key].generation
    apply(published, result.publish)
    assert plan(desired_of(second), published, now + 3).empty
    # Deletes only for keys that were published and are no longer desired.
    second_desired = desired_of(second)
    for event in result.publish:
        if isinstance(event, (c.DomainDeleted, c.BackendDeleted)):
            assert key_of_event(event) in before
            assert key_of_event(event) not in second_desired


@settings(max_examples=100, deadline=None)
@given(clusters(), clusters(), st.integers(1, 10**15))
def test_stamps_plan_like_the_events_they_stand_for(
    first: list[dict[str, Any]], second: list[dict[str, Any]], now: int
) -> None:
    published: dict[StateKey, c.Event] = {}
    apply(published, plan(desired_of(first), published, now).publish)
    stamped = {k: kept(e) for k, e in published.items()}
    assert plan(desired_of(second), stamped, now + 1) == plan(
        desired_of(second), published, now + 1
    )


@settings(max_examples=100, deadline=None)
@given(clusters(), st.randoms(use_true_random=False))
def test_normalize_ignores_object_order(objects: list[dict[str, Any]], rnd: random.Random) -> None:
    shuffled = list(objects)
    rnd.shuffle(shuffled)
    assert desired_of(objects) == desired_of(shuffled)


bad_hosts = st.sampled_from(["Shop.example.com", "*", "*.com", "a.*.b", "x.example.com.", "ü.de"])
bad_paths = st.sampled_from(["/a b", "/{x}", "/a;b", "/.*", "/a#", "/\x01"])


@settings(max_examples=100, deadline=None)
@given(clusters(), bad_hosts, bad_paths, namespaces, st.booleans())
def test_one_bad_ingress_changes_nothing_else(
    objects: list[dict[str, Any]], host: str, path: str, ns: str, bad_host: bool
) -> None:
    bad = ingress(
        ns,
        "zz-bad",
        host if bad_host else "shop.example.com",
        "/" if bad_host else path,
        created="2020-01-01T00:00:00Z",
    )
    without = desired_of(objects)
    with_bad = desired_of([*objects, bad])
    key = (Family.ADMISSION, ("ingress-watcher", "Ingress", ns, "zz-bad"))
    assert isinstance(with_bad.pop(key), c.AdmissionRejected)
    assert with_bad == without


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_validators_never_crash_and_accept_only_what_they_return(text: str) -> None:
    for check in (ingress_host, lambda t: ingress_path(t, "Prefix")):
        reason = None
        try:
            value = check(text)
        except Invalid as exc:
            reason = exc.reason
        if reason is None:
            assert value == (text or "/")
        else:
            assert reason[0].isupper()


def test_a_family_vanishing_at_once_is_held() -> None:
    objects = [
        ingress("team-a", "w", "shop.example.com"),
        domain("team-a", "blog.example.com"),
        service("team-a", "blog"),
        ingress("team-a", "b", "blog.example.com", service_name="blog"),
    ]
    published: dict[StateKey, c.Event] = {}
    apply(published, plan(desired_of(objects), published, 1).publish)
    empty: dict[StateKey, c.Event] = {}
    held = plan(empty, published, 2, suspicious_emptiness(empty, published))
    assert not any(isinstance(e, c.DomainDeleted) for e in held.publish)
    assert len(held.held_deletes) >= 2
    # Without protection (watch DELETED events), the deletes go out.
    direct = plan(empty, published, 2)
    assert sum(isinstance(e, c.DomainDeleted) for e in direct.publish) == 2


def test_pools_and_peers_lead_the_batch() -> None:
    # ipam refuses a domain whose pool it has not seen: what others resolve against goes first,
    # whatever the order the objects were listed in.
    domains = {
        (Family.DOMAIN, (f"d{i}.example.com",)): c.DomainDesired(
            generation=1,
            host=f"d{i}.example.com",
            owner_namespace="shop",
            ingress_class="ingress-domain",
            sources=[c.ObjectRef(kind="Ingress", namespace="shop", name=f"d{i}")],
        )
        for i in range(3)
    }
    pool = c.PoolDesired(generation=1, pool="public", cidrs=["198.51.100.0/24"])
    desired: dict[StateKey, c.Event] = {**domains, (Family.POOL, ("public",)): pool}
    published = plan(desired, {}, 10).publish
    assert [e.family for e in published] == [Family.POOL] + [Family.DOMAIN] * 3
    assert [e.host for e in published[1:]] == [f"d{i}.example.com" for i in range(3)]  # type: ignore[attr-defined]

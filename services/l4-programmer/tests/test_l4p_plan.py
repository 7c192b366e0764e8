"""The planner: fewest writes, convergence, ownership and drain, as properties and examples."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ingress_l4_programmer.domain.model import (
    EMPTY_KERNEL,
    AddDest,
    CurrentDest,
    CurrentVs,
    DelAddress,
    DelDest,
    DelService,
    DesiredState,
    KernelState,
    Real,
    SetDest,
    VsKey,
    VsSpec,
    apply_ops,
)
from ingress_l4_programmer.domain.plan import plan

pytestmark = pytest.mark.unit

VIPS = [f"198.51.100.{i}" for i in range(1, 5)]
FOREIGN = [f"192.0.2.{i}" for i in range(1, 3)]
REALS = [Real(f"10.0.0.{i}", 80) for i in range(1, 6)]
keys = st.builds(
    VsKey, st.sampled_from(VIPS), st.sampled_from(["TCP", "UDP"]), st.sampled_from([80, 443])
)
specs = st.builds(
    VsSpec,
    st.sampled_from(["mh", "wlc"]),
    st.dictionaries(st.sampled_from(REALS), st.integers(0, 3), max_size=4),
)
dests = st.builds(
    CurrentDest,
    st.integers(0, 3),
    st.sampled_from(["tunnel", "masq"]),
    st.integers(0, 2),
    st.integers(0, 2),
)
current_vs = st.builds(
    CurrentVs,
    st.sampled_from(["mh", "wlc", "rr"]),
    st.dictionaries(st.sampled_from(REALS), dests, max_size=4),
)


@st.composite
def states(draw: st.DrawFn) -> tuple[DesiredState, KernelState]:
    services = draw(st.dictionaries(keys, specs, max_size=5))
    served = frozenset(k.vip for k in services) | draw(
        st.frozensets(st.sampled_from(VIPS), max_size=2)
    )
    released = draw(st.frozensets(st.sampled_from(VIPS), max_size=2)) - served
    all_keys = keys | st.builds(VsKey, st.sampled_from(FOREIGN), st.just("TCP"), st.just(80))
    current = KernelState(
        services=draw(st.dictionaries(all_keys, current_vs, max_size=6)),
        addresses=draw(st.frozensets(st.sampled_from(VIPS), max_size=4)),
    )
    return DesiredState(services, served, released), current


def _idle(state: KernelState) -> KernelState:
    """The kernel after every connection closed: what lets a drain finish."""
    return KernelState(
        {
            k: CurrentVs(
                v.scheduler, {r: CurrentDest(d.weight, d.forward) for r, d in v.dests.items()}
            )
            for k, v in state.services.items()
        },
        state.addresses,
    )


@settings(max_examples=300, deadline=None)
@given(states())
def test_converges_and_then_plans_zero_writes(pair: tuple[DesiredState, KernelState]) -> None:
    desired, current = pair
    first = plan(desired, current, forward="tunnel", now=0.0)
    after = _idle(apply_ops(current, first.ops))
    # Draining servers need one more pass (weight 0 first, delete once idle); then nothing.
    second = plan(desired, after, forward="tunnel", now=1.0, drains=first.drains)
    final = apply_ops(after, second.ops)
    assert plan(desired, final, forward="tunnel", now=2.0, drains=second.drains).ops == []
    for key, spec in desired.services.items():
        assert {r: d.weight for r, d in final.services[key].dests.items()} == dict(spec.reals)
        assert final.services[key].scheduler == spec.scheduler
    assert desired.addresses <= final.addresses
    assert not (desired.released & final.addresses)


@settings(max_examples=300, deadline=None)
@given(states())
def test_never_touches_what_is_not_ours(pair: tuple[DesiredState, KernelState]) -> None:
    desired, current = pair
    ops = plan(desired, current, forward="tunnel", now=0.0).ops
    ours = desired.addresses | desired.released
    for op in ops:
        key = getattr(op, "key", None)
        vip = key.vip if key is not None else op.vip
        assert vip in ours, op
    final = apply_ops(current, ops)
    for key, vs in current.services.items():
        if key.vip not in ours:
            assert final.services[key] == vs


@settings(max_examples=200, deadline=None)
@given(states())
def test_writes_are_the_fewest(pair: tuple[DesiredState, KernelState]) -> None:
    """Each write changes something real: no op is a no-op and no object is written twice."""
    desired, current = pair
    ops = plan(desired, current, forward="tunnel", now=0.0).ops
    assert len(set(ops)) == len(ops)
    state = current
    for op in ops:
        nxt = apply_ops(state, [op])
        assert nxt != state, op
        state = nxt


def test_empty_desired_state_deletes_nothing() -> None:
    key = VsKey(VIPS[0], "TCP", 80)
    current = KernelState(
        {key: CurrentVs("mh", {REALS[0]: CurrentDest(1, "tunnel")})}, frozenset({VIPS[0]})
    )
    assert plan(DesiredState({}, frozenset()), current, forward="tunnel", now=0.0).ops == []


def test_release_removes_services_then_address() -> None:
    key = VsKey(VIPS[0], "TCP", 80)
    current = KernelState(
        {key: CurrentVs("mh", {REALS[0]: CurrentDest(1, "tunnel")})}, frozenset({VIPS[0]})
    )
    ops = plan(
        DesiredState({}, frozenset(), frozenset({VIPS[0]})), current, forward="tunnel", now=0.0
    ).ops
    assert ops == [DelService(key), DelAddress(VIPS[0])]


def test_drain_goes_to_weight_zero_then_waits_for_connections_or_timeout() -> None:
    key = VsKey(VIPS[0], "TCP", 80)
    desired = DesiredState({key: VsSpec("mh", {REALS[0]: 1})}, frozenset({VIPS[0]}))
    busy = KernelState(
        {
            key: CurrentVs(
                "mh",
                {REALS[0]: CurrentDest(1, "tunnel"), REALS[1]: CurrentDest(1, "tunnel", active=3)},
            )
        },
        frozenset({VIPS[0]}),
    )
    p1 = plan(desired, busy, forward="tunnel", now=100.0, drain_timeout=30.0)
    assert p1.ops == [SetDest(key, REALS[1], 0, "tunnel")]
    draining = apply_ops(busy, p1.ops)
    p2 = plan(desired, draining, forward="tunnel", now=110.0, drains=p1.drains, drain_timeout=30.0)
    assert p2.ops == [] and p2.drains == {(key, REALS[1]): 100.0}
    p3 = plan(desired, draining, forward="tunnel", now=130.0, drains=p2.drains, drain_timeout=30.0)
    assert p3.ops == [DelDest(key, REALS[1])]
    # A restart mid-drain forgets the start time: the server stays at weight 0, clock restarts.
    p4 = plan(desired, draining, forward="tunnel", now=500.0, drains={}, drain_timeout=30.0)
    assert p4.ops == [] and p4.drains == {(key, REALS[1]): 500.0}


def test_a_new_real_server_is_one_write() -> None:
    key = VsKey(VIPS[0], "TCP", 80)
    current = KernelState(
        {key: CurrentVs("mh", {REALS[0]: CurrentDest(1, "tunnel")})}, frozenset({VIPS[0]})
    )
    desired = DesiredState({key: VsSpec("mh", {REALS[0]: 1, REALS[1]: 1})}, frozenset({VIPS[0]}))
    assert plan(desired, current, forward="tunnel", now=0.0).ops == [
        AddDest(key, REALS[1], 1, "tunnel")
    ]


def test_from_empty_kernel_everything_is_added() -> None:
    key = VsKey(VIPS[0], "TCP", 80)
    desired = DesiredState({key: VsSpec("mh", {REALS[0]: 1})}, frozenset({VIPS[0]}))
    assert len(plan(desired, EMPTY_KERNEL, forward="tunnel", now=0.0).ops) == 3

"""Endpoint churn under constant traffic fails no request.

A client in the client namespace sends one request after another to blog.example.com's VIP, each
on a fresh connection (ToR -> L4 DNAT -> Envoy -> backend), while blog's EndpointSlice gains,
loses and swaps endpoints and marks one not ready. The local topology runs the backends like
pods: a new one listens before the slice names it, one that left the slice keeps serving for a
grace period (as a terminating pod does). Every request must succeed, and traffic must move to
the new endpoints and off the removed ones.
"""

from __future__ import annotations

import asyncio
import collections
from pathlib import Path
from typing import Any

import pytest
import yaml
from ingress_local.testing import ready
from ingress_local.topology.system import LocalSystem, wait_for
from ingress_local.topology.traffic import TrafficLoop

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

HOST = "blog.example.com"


def _set_endpoints(manifests: Path, endpoints: dict[str, bool]) -> None:
    """blog's EndpointSlice ``blog-1`` with exactly these addresses (address -> ready)."""
    path = manifests / "blog.yaml"
    docs: list[Any] = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    [slice_] = [
        d for d in docs if d["kind"] == "EndpointSlice" and d["metadata"]["name"] == "blog-1"
    ]
    slice_["endpoints"] = [
        {"addresses": [a], "conditions": {"ready": r}} for a, r in endpoints.items()
    ]
    tmp = path.with_name(".blog.yaml.tmp")
    tmp.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    tmp.replace(path)


def _addresses(loop: TrafficLoop, start: int) -> collections.Counter[str]:
    return collections.Counter(s.backend.split(":")[0] for s in loop.since(start) if s.ok)


async def _moved(loop: TrafficLoop, serving: set[str], gone: set[str], what: str) -> None:
    """Wait until every address in ``serving`` answered and then 40 answers in a row came
    from none of ``gone``."""
    start = len(loop.samples)

    def check() -> bool:
        recent = loop.since(start)
        seen = _addresses(loop, start)
        if not serving <= set(seen):
            return False
        tail = [s.backend.split(":")[0] for s in recent[-40:]]
        return len(tail) == 40 and not set(tail) & gone

    try:
        await wait_for(what, check, 45, 0.2)
    except TimeoutError as exc:
        raise AssertionError(f"{what}: since the change {dict(_addresses(loop, start))}") from exc


async def test_endpoint_churn_under_constant_traffic_fails_no_request(
    system: LocalSystem,
) -> None:
    assert system.plan is not None
    vip = (await ready(system))[HOST].vip
    # Ready means our node announces the /32; the ToR installs it a BGP UPDATE later. Traffic
    # before that finds no route (ENETUNREACH), which is start-up, not churn.
    hop = system.plan.l4_down_addr
    await wait_for(f"ToR route {vip}", lambda: system.tor_routes().get(f"{vip}/32") == [hop], 30)
    manifests = system.o.manifests
    loop = TrafficLoop(system.plan.ns_client, vip, HOST).start()
    try:
        await wait_for("first answers", lambda: len(loop.samples) >= 20, 30)
        assert _addresses(loop, 0).keys() == {"127.0.0.21"}, _addresses(loop, 0)

        # Scale out: two new endpoints.
        _set_endpoints(manifests, {"127.0.0.21": True, "127.0.0.24": True, "127.0.0.25": True})
        await _moved(loop, {"127.0.0.21", "127.0.0.24", "127.0.0.25"}, set(), "scale out")
        # The first endpoint goes away (a pod deleted).
        _set_endpoints(manifests, {"127.0.0.24": True, "127.0.0.25": True})
        await _moved(loop, {"127.0.0.24", "127.0.0.25"}, {"127.0.0.21"}, "127.0.0.21 removed")
        # A rolling step in one edit: one in, one out.
        _set_endpoints(manifests, {"127.0.0.25": True, "127.0.0.26": True})
        await _moved(loop, {"127.0.0.25", "127.0.0.26"}, {"127.0.0.24"}, "24 -> 26")
        # One endpoint turns not ready (terminating) while its pod still listens.
        _set_endpoints(manifests, {"127.0.0.25": False, "127.0.0.26": True})
        await _moved(loop, {"127.0.0.26"}, {"127.0.0.25"}, "25 not ready")
        # Back to the original endpoint only.
        _set_endpoints(manifests, {"127.0.0.21": True})
        await _moved(loop, {"127.0.0.21"}, {"127.0.0.25", "127.0.0.26"}, "back to 21")
    finally:
        samples = await asyncio.to_thread(loop.stop)

    failed = [(i, s) for i, s in enumerate(samples) if not s.ok]
    assert len(samples) >= 200, f"only {len(samples)} requests"
    assert not failed, f"{len(failed)} of {len(samples)} failed (index, sample): {failed[:5]}"
    served = collections.Counter(s.backend.split(":")[0] for s in samples)
    for address in ("127.0.0.21", "127.0.0.24", "127.0.0.25", "127.0.0.26"):
        assert served[address] > 0, served
    assert set(served) == {"127.0.0.21", "127.0.0.24", "127.0.0.25", "127.0.0.26"}, served

"""Rendered BIRD configs against golden files (UPDATE_GOLDEN=1 rewrites them), and every golden
parsed by the real BIRD (``bird -p``) so a golden can never be a config BIRD would refuse."""

from __future__ import annotations

import ipaddress
import os
import subprocess
from pathlib import Path

import pytest
from ingress_bgp_speaker.domain.model import BirdDesired, PeerConfig, PoolConfig
from ingress_bgp_speaker.domain.render import peer_protocol_name, render

pytestmark = pytest.mark.unit

GOLDEN = Path(__file__).parent / "golden"


def _peer(name: str, address: str, **kw: object) -> PeerConfig:
    values: dict[str, object] = {
        "name": name,
        "address": address,
        "peer_asn": 64500,
        "local_asn": 64512,
        "password": None,
        "hold_time_seconds": 90,
        "keepalive_seconds": None,
        "graceful_restart": True,
        "bfd": False,
        "max_prefixes": None,
        "generation": 1,
    }
    values.update(kw)
    return PeerConfig(**values)  # type: ignore[arg-type]


def _pool(name: str, *nets: str, **kw: object) -> PoolConfig:
    return PoolConfig(name, tuple(ipaddress.ip_network(n) for n in nets), **kw)  # type: ignore[arg-type]


CASES = {
    "empty": BirdDesired(node="l4-a", router_id=None, peers=(), pools=()),
    "one-peer-two-pools": BirdDesired(
        node="l4-a",
        router_id="10.0.0.11",
        peers=(
            _peer(
                "tor-1",
                "10.0.0.1",
                password="s3cret-Md5",
                hold_time_seconds=9,
                keepalive_seconds=3,
                max_prefixes=500,
            ),
        ),
        pools=(
            _pool("public", "203.0.113.0/24", communities=((65000, 100),), local_preference=200),
            _pool(
                "internal",
                "10.100.0.0/24",
                "10.101.0.0/25",
                priority=10,
                large_communities=((4200000000, 1, 2),),
            ),
        ),
        routes=frozenset({"203.0.113.10", "10.100.0.5", "10.101.0.7"}),
    ),
    "dual-stack-bfd-no-gr": BirdDesired(
        node="l4-b",
        router_id="10.0.0.12",
        peers=(
            _peer("tor-v4", "10.0.0.1", bfd=True, graceful_restart=False),
            _peer("tor-v6", "2001:db8:ff::1", bfd=True, peer_asn=4200000001),
            _peer("tor.v4", "10.0.0.2"),
        ),
        pools=(_pool("dual", "203.0.113.0/24", "2001:db8:100::/64"),),
        routes=frozenset({"203.0.113.10", "2001:db8:100::10", "2001:db8:100::9"}),
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case: str, tmp_path: Path) -> None:
    text = render(CASES[case])
    golden = GOLDEN / f"{case}.conf"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()
    conf = tmp_path / "bird.conf"
    conf.write_text(text)
    parsed = subprocess.run(["bird", "-p", "-c", str(conf)], capture_output=True, text=True)
    assert parsed.returncode == 0, parsed.stderr


def test_same_state_renders_identically_whatever_the_order() -> None:
    desired = CASES["one-peer-two-pools"]
    shuffled = BirdDesired(
        node=desired.node,
        router_id=desired.router_id,
        peers=tuple(reversed(desired.peers)),
        pools=tuple(reversed(desired.pools)),
        routes=frozenset(sorted(desired.routes, reverse=True)),
    )
    assert render(shuffled) == render(desired)


def test_protocol_names_stay_distinct_for_names_bird_cannot_spell() -> None:
    assert peer_protocol_name("tor-v4") != peer_protocol_name("tor.v4")
    assert peer_protocol_name("tor-v4").startswith("peer_tor_v4_")

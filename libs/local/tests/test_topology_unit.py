"""The pure parts of the local topology: address plan, manifest overlay, backend discovery."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
import yaml
from ingress_local.topology.addresses import AddressPlan
from ingress_local.topology.components import tor_bird_config
from ingress_local.topology.overlay import (
    OWN_FILE,
    BackendAddress,
    L7Pool,
    Overlay,
    adapt,
    backend_addresses,
    zones,
)

pytestmark = pytest.mark.unit

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
PLAN = AddressPlan(
    tag="abc123",
    block=ipaddress.IPv4Network("10.201.7.32/28"),
    vip_pool=ipaddress.IPv4Network("198.51.100.0/28"),
)


def test_the_plan_cuts_three_30s_out_of_its_block_and_names_fit_the_kernel() -> None:
    assert (PLAN.root_addr, PLAN.l4_up_addr) == ("10.201.7.33", "10.201.7.34")
    assert (PLAN.l4_down_addr, PLAN.tor_up_addr) == ("10.201.7.37", "10.201.7.38")
    assert (PLAN.tor_down_addr, PLAN.client_addr) == ("10.201.7.41", "10.201.7.42")
    assert [PLAN.link(1), PLAN.link(5), PLAN.link(9)] == [
        "10.201.7.32/30",
        "10.201.7.36/30",
        "10.201.7.40/30",
    ]
    names = [PLAN.if_root, PLAN.if_l4_up, PLAN.if_l4_down, PLAN.if_tor_up, PLAN.if_client]
    assert all(len(n) <= 15 for n in names) and len(set(names)) == len(names)
    assert PLAN.namespaces == ("idlabc123-l4", "idlabc123-tor", "idlabc123-cl")


def test_pools_and_peers_are_rewritten_and_everything_else_is_untouched() -> None:
    pool = {
        "kind": "VipPool",
        "metadata": {"name": "local"},
        "spec": {"cidrs": ["127.77.0.0/28"], "exclude": ["127.77.0.0"], "default": True},
    }
    peer = {"kind": "BgpPeer", "spec": {"address": "127.0.1.1", "peerASN": 65000}}
    ingress = {"kind": "Ingress", "spec": {"rules": []}}
    assert adapt(pool, PLAN)["spec"] == {
        "default": True,
        "cidrs": ["198.51.100.0/28"],
        "exclude": ["198.51.100.0"],
    }
    assert adapt(peer, PLAN)["spec"] == {"address": "10.201.7.38", "peerASN": 65000}
    assert adapt(ingress, PLAN) is ingress
    assert pool["spec"]["cidrs"] == ["127.77.0.0/28"], "the input is not modified"


def test_the_overlay_mirrors_edits_deletes_and_secrets(tmp_path: Path) -> None:
    source, target = tmp_path / "src", tmp_path / "dst"
    (source / "secrets" / "ns" / "s").mkdir(parents=True)
    (source / "secrets" / "ns" / "s" / "password").write_text("pw")
    (source / "a.yaml").write_text("kind: BgpPeer\nspec: {address: 127.0.1.1}\n")
    (source / "broken.yaml").write_text("kind: [\n")
    overlay = Overlay(source, target, PLAN, L7Pool("10.201.7.33", 8080, 8443))
    assert overlay.sync()
    assert not overlay.sync(), "a converged overlay writes nothing"
    assert yaml.safe_load((target / "a.yaml").read_text())["spec"]["address"] == "10.201.7.38"
    assert (target / "broken.yaml").read_text() == "kind: [\n"
    assert "broken.yaml" in overlay.errors
    assert (target / "secrets/ns/s/password").read_text() == "pw"
    own = list(yaml.safe_load_all((target / OWN_FILE).read_text()))
    assert [d["kind"] for d in own] == ["Service", "EndpointSlice"]
    assert own[1]["endpoints"][0]["addresses"] == ["10.201.7.33"]
    (source / "a.yaml").unlink()
    (source / "secrets/ns/s/password").unlink()
    assert overlay.sync()
    assert not (target / "a.yaml").exists() and not (target / "secrets/ns").exists()
    assert (target / OWN_FILE).exists()


def test_backends_and_zones_come_from_the_examples(tmp_path: Path) -> None:
    overlay = Overlay(EXAMPLES, tmp_path / "o", PLAN, L7Pool("10.201.7.33", 8080, 8443))
    overlay.sync()
    found = backend_addresses(overlay.documents())
    assert BackendAddress("shop/web", "127.0.0.11", 18080) in found
    assert BackendAddress("blog/feed", "127.0.0.23", 18082) in found
    assert all(b.address.startswith("127.") for b in found), "the L7 pool is not a backend"
    assert zones(overlay.documents()) == ["example.com"]


def test_the_tor_config_peers_with_the_node_and_refuses_unquotable_passwords() -> None:
    text = tor_bird_config(PLAN, 65001, 65000, "s3cret")
    assert "neighbor 10.201.7.37 as 65001;" in text and 'password "s3cret";' in text
    assert "export all" in text  # the learned VIPs reach the ToR's kernel table
    with pytest.raises(ValueError, match="BIRD"):
        tor_bird_config(PLAN, 65001, 65000, 'a"b')

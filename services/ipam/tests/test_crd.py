"""The VipPool CRD's spec mirrors PoolDesired: the watcher maps one onto the other by field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ingress_events.catalogue import PoolAnnouncement, PoolDesired

pytestmark = pytest.mark.unit

CRD = Path(__file__).parents[3] / "deploy" / "ipam" / "vippool-crd.yaml"


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


def test_crd_spec_fields_are_pool_desired_in_camel_case() -> None:
    crd = yaml.safe_load(CRD.read_text())
    assert crd["spec"]["group"] == "ingress-domain.io"
    [version] = crd["spec"]["versions"]
    assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    # observed_generation is the object's metadata.generation, not a spec field.
    wanted = {camel(f) for f in PoolDesired.model_fields} - {
        "generation",
        "pool",
        "observedGeneration",
    }
    assert set(spec) == wanted
    announce = spec["announce"]["properties"]
    assert set(announce) == {camel(f) for f in PoolAnnouncement.model_fields}
    assert spec["priority"]["minimum"] == -1000 and spec["priority"]["maximum"] == 1000

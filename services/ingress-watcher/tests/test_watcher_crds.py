"""The CRDs in deploy/ are well-formed, and every example object validates against its schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]


def _crds() -> dict[str, dict[str, Any]]:
    # Each CRD lives with the service that owns it; the watcher reads all of them.
    crds: dict[str, dict[str, Any]] = {}
    for path in sorted((ROOT / "deploy").glob("*/*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                kind = doc["spec"]["names"]["kind"]
                assert kind not in crds, f"{kind} is defined twice ({path})"
                crds[kind] = doc
    return crds


def test_each_crd_has_a_schema_and_a_status_subresource() -> None:
    crds = _crds()
    assert set(crds) == {"Zone", "Domain", "PathClaim", "VipPool", "BgpPeer"}
    for kind, crd in crds.items():
        assert crd["spec"]["group"] == "ingress-domain.io"
        [version] = crd["spec"]["versions"]
        assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
        jsonschema.Draft7Validator.check_schema(version["schema"]["openAPIV3Schema"])
        assert crd["metadata"]["name"] == f"{crd['spec']['names']['plural']}.ingress-domain.io", (
            kind
        )


def test_examples_validate_against_the_crds_and_a_bad_one_does_not() -> None:
    crds = _crds()
    seen = set()
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") in crds:
                schema = crds[doc["kind"]]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
                jsonschema.validate(doc, schema)
                seen.add(doc["kind"])
    assert seen == set(crds)
    schema = crds["PathClaim"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(
            {"spec": {"host": "a.example.com", "path": "x", "namespace": "b"}}, schema
        )

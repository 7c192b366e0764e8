import copy
import json
from pathlib import Path

import pytest
import yaml
from ingress_events import asyncapi, schemas

pytestmark = pytest.mark.unit


def test_committed_schemas_match_the_models() -> None:
    assert schemas.drift() == [], "run `ingress-events write` and commit the result"


def test_models_make_no_breaking_change_against_the_committed_schemas() -> None:
    assert schemas.compatibility_report() == {}


def test_generated_docs_are_committed() -> None:
    for path, text in asyncapi.outputs().items():
        assert path.read_text() == text, f"{path} drifted: run `ingress-events write`"


def _vip_assigned() -> dict[str, object]:
    return copy.deepcopy(schemas.generated()["vip.assigned.json"])


def test_a_removed_field_is_breaking() -> None:
    new = _vip_assigned()
    del new["properties"]["pool"]  # type: ignore[attr-defined]
    new["required"].remove("pool")  # type: ignore[attr-defined]
    assert "pool: removed or renamed" in schemas.breaking_changes(_vip_assigned(), new)


def test_a_changed_type_is_breaking() -> None:
    new = _vip_assigned()
    new["properties"]["pool"] = {"type": "integer"}  # type: ignore[index]
    assert "pool: type changed" in schemas.breaking_changes(_vip_assigned(), new)


def test_a_new_required_field_is_breaking_and_a_new_optional_one_is_not() -> None:
    new = _vip_assigned()
    new["properties"]["zone"] = {"type": "string"}  # type: ignore[index]
    assert schemas.breaking_changes(_vip_assigned(), new) == []
    new["required"].append("zone")  # type: ignore[attr-defined]
    assert "zone: new required field" in schemas.breaking_changes(_vip_assigned(), new)


def test_a_nested_change_is_breaking() -> None:
    new = _vip_assigned()
    owner = new["$defs"]["VipOwner"]  # type: ignore[index]
    owner["properties"]["kind"]["enum"] = ["domain"]
    assert "owner.kind: type changed" in schemas.breaking_changes(_vip_assigned(), new)


def test_write_refuses_a_breaking_change(tmp_path: Path) -> None:
    schemas.write(tmp_path)
    target = tmp_path / "vip.assigned.json"
    old = json.loads(target.read_text())
    old["properties"]["legacy"] = {"type": "string"}
    target.write_text(json.dumps(old))
    assert schemas.compatibility_report(tmp_path) == {
        "vip.assigned.json": ["legacy: removed or renamed"]
    }


def test_asyncapi_document_is_version_3_and_every_reference_resolves() -> None:
    doc = yaml.safe_load(asyncapi.render_asyncapi())
    assert doc["asyncapi"] == "3.0.0"

    def walk(node: object) -> list[str]:
        if isinstance(node, dict):
            refs = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
            return refs + [r for v in node.values() for r in walk(v)]
        if isinstance(node, list):
            return [r for v in node for r in walk(v)]
        return []

    refs = walk(doc)
    assert len(refs) > 50
    for ref in refs:
        target: object = doc
        for part in ref.removeprefix("#/").split("/"):
            assert isinstance(target, dict) and part in target, ref
            target = target[part]
    assert (
        doc["channels"]["vip-service"]["address"] == "ingress.v1.vip.service.{namespace}.{service}"
    )

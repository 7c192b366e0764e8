"""The normalized state of examples/ as a golden file (regenerate with UPDATE_GOLDEN=1)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from ingress_watcher.adapters.manifests import ManifestDirectory
from ingress_watcher.domain.normalize import Policy, normalize
from ingress_watcher.domain.store import ObjectStore

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
GOLDEN = Path(__file__).parent / "golden" / "examples.json"


def test_examples_normalize_to_the_golden_state() -> None:
    directory = ManifestDirectory(ROOT / "examples")
    store = ObjectStore()
    for kind, items in directory.load().items():
        store.replace(kind, items)
    assert directory.errors == {}
    events = normalize(store.objects, Policy())
    rendered = json.dumps(
        [
            {"type": e.ce_type(), "key": list(e.key()), "event": e.model_dump(mode="json")}
            for e in sorted(events.values(), key=lambda e: (e.ce_type(), e.key()))
        ],
        indent=1,
        sort_keys=True,
    )
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_text(rendered + "\n")
    assert GOLDEN.read_text() == rendered + "\n"

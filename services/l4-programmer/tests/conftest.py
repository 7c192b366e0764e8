"""Kernel tests (IPVS, IP-in-IP) run only inside the virtme-ng VM of scripts/test-kernel, which
sets L4_PROGRAMMER_IN_VM=1; elsewhere they are deselected (this kernel lacks the modules), not
skipped, and scripts/test runs scripts/test-kernel after the other tiers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("L4_PROGRAMMER_IN_VM") == "1":
        return
    keep, drop = [], []
    for item in items:
        mine = HERE in Path(str(item.fspath)).parents
        (drop if mine and item.get_closest_marker("kernel") else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep

"""The k3s runs of test_watcher_clusters.py need a Docker engine (testcontainers starts k3s in
a container). Where none answers they are deselected, not skipped, and the run's header says
so; the same tests run against the local API server everywhere."""

from __future__ import annotations

import pytest
from api_clusters import docker_engine_answers

_ENGINE: bool | None = None


def _engine() -> bool:
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = docker_engine_answers()
    return _ENGINE


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not any(item.get_closest_marker("k3s") for item in items) or _engine():
        return
    keep, drop = [], []
    for item in items:
        (drop if item.get_closest_marker("k3s") else keep).append(item)
    config.hook.pytest_deselected(items=drop)
    items[:] = keep
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(
            f"ingress-watcher: {len(drop)} k3s tests deselected: no Docker engine answers "
            "`docker info` here (they run where one does)"
        )

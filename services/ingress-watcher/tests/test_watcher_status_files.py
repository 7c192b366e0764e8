"""The local default's status files: what is written, and that writing them leaves the event
loop free (the watcher publishes new domains on the same loop)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from ingress_watcher.adapters import status as status_files
from ingress_watcher.adapters.status import FileStatusWriter
from ingress_watcher.domain.status import Target

SHOP = Target("Ingress", "shop", "web")


async def test_a_patch_replaces_the_whole_file_and_is_remembered(tmp_path: Path) -> None:
    writer = FileStatusWriter(tmp_path)
    await writer.patch(SHOP, {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}})
    await writer.patch(SHOP, {"loadBalancer": {"ingress": [{"ip": "192.0.2.2"}]}})
    path = tmp_path / "Ingress" / "shop" / "web.json"
    document = json.loads(path.read_text())
    assert document["name"] == "web"
    assert document["status"] == {"loadBalancer": {"ingress": [{"ip": "192.0.2.2"}]}}
    assert not path.with_suffix(".json.tmp").exists()
    assert writer.current(SHOP, None) == document["status"]
    await writer.forget({SHOP})
    assert not path.exists()
    assert writer.current(SHOP, None) is None


async def test_writing_a_file_does_not_hold_up_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = status_files._replace_file

    def slow_disk(path: Path, text: str) -> None:
        time.sleep(0.3)
        real(path, text)

    monkeypatch.setattr(status_files, "_replace_file", slow_disk)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        await FileStatusWriter(tmp_path).patch(SHOP, {"conditions": []})
    finally:
        task.cancel()
    assert ticks >= 10, f"the loop ran only {ticks} times while a 0.3 s write was under way"
    assert (tmp_path / "Ingress" / "shop" / "web.json").exists()

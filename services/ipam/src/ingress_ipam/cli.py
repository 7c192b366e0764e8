"""``ingress-ipam-allocations``: the allocations as the KV bucket holds them (read-only).

Reads IPAM_NATS_URL / IPAM_SUBJECT_ROOT / IPAM_KV_BUCKET like the service does.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import time
from datetime import UTC, datetime

from ingress_events.bus import Bus

from .adapters.store import NatsAllocationStore, Snapshot
from .settings import IpamSettings


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def rows(snapshot: Snapshot, now: float, pool: str | None = None) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    ordered = sorted(snapshot.addresses.values(), key=lambda x: ipaddress.ip_address(x[0].address))
    for record, revision in ordered:
        if pool is not None and record.pool != pool:
            continue
        if record.holders:
            state = "held"
        elif record.reusable_after is not None and record.reusable_after > now:
            state = f"cooling until {_when(record.reusable_after)}"
        else:
            state = "free (cool-down over)"
        out.append(
            {
                "address": record.address,
                "pool": record.pool,
                "state": state,
                "owners": ["/".join(h.owner) for h in record.holders],
                "ports": sorted(
                    {f"{p}/{proto}" for h in record.holders for p, proto in h.ports},
                    key=lambda s: (int(s.split("/")[0]), s),
                ),
                "sharing_key": next((h.sharing_key for h in record.holders if h.sharing_key), None),
                "revision": revision,
            }
        )
    return out


def render(table: list[dict[str, object]]) -> str:
    headers = ["ADDRESS", "POOL", "STATE", "OWNERS", "PORTS", "SHARING"]
    lines = [
        [
            str(r["address"]),
            str(r["pool"]),
            str(r["state"]),
            ",".join(r["owners"]) or "-",  # type: ignore[arg-type]
            ",".join(r["ports"]) or "-",  # type: ignore[arg-type]
            str(r["sharing_key"] or "-"),
        ]
        for r in table
    ]
    widths = [max(len(x) for x in col) for col in zip(headers, *lines, strict=False)]
    return (
        "\n".join(
            "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
            for line in [headers, *lines]
        )
        + "\n"
    )


async def _load(settings: IpamSettings) -> Snapshot:
    bus = await Bus.connect(settings.bus_settings("ipam-allocations"))
    try:
        return await NatsAllocationStore(await bus.kv(settings.bucket())).load()
    finally:
        await bus.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ingress-ipam-allocations", description=__doc__)
    parser.add_argument("--pool", help="only this pool")
    parser.add_argument("--json", action="store_true", help="JSON instead of a table")
    args = parser.parse_args(argv)
    settings = IpamSettings()
    snapshot = asyncio.run(_load(settings))
    table = rows(snapshot, time.time(), args.pool)
    if args.json:
        print(json.dumps(table, indent=2))
    else:
        print(render(table), end="")
    return 0

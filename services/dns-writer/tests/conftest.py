from __future__ import annotations

from collections.abc import Iterator

import pytest
from ingress_dns_writer.adapters.knot_process import KnotServer, TsigKey

ZONE = "example.test"


@pytest.fixture
def tsig_keys() -> list[TsigKey]:
    return [TsigKey.generate("writer-a."), TsigKey.generate("writer-b.")]


@pytest.fixture
def knot(tsig_keys: list[TsigKey]) -> Iterator[KnotServer]:
    """A knotd of this test's own, with foreign records already in the zone (apex included)."""
    server = KnotServer(
        zones=[ZONE],
        keys=tsig_keys,
        zone_extra={
            ZONE: [
                "@ IN A 192.0.2.10",
                '@ IN TXT "v=spf1 -all"',
                "legacy IN A 192.0.2.20",
                "alias IN CNAME elsewhere.example.net.",
            ]
        },
    )
    try:
        yield server.start()
    finally:
        server.cleanup()

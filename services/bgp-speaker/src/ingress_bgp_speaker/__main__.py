"""bgp-speaker: announces the VIPs this L4 node is ready to serve through BIRD 2 to the ToR
switches (static host routes, one BGP session per BgpPeer, export only pool prefixes)."""

from __future__ import annotations

from ingress_runtime import service_main

from .app import BgpSpeakerApp
from .settings import BgpSpeakerSettings


def main() -> int:
    return service_main("bgp-speaker", BgpSpeakerSettings, BgpSpeakerApp, __doc__ or "")


if __name__ == "__main__":
    raise SystemExit(main())

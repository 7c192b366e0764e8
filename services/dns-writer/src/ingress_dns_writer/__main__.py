"""dns-writer: publishes A/AAAA records for ingress domains to DNS (RFC 2136 + TSIG), owning only
its own values through a TXT registry, so several clusters can share one name."""

from __future__ import annotations

from ingress_runtime import service_main

from .app import DnsWriterApp
from .settings import DnsWriterSettings


def main() -> int:
    return service_main("dns-writer", DnsWriterSettings, DnsWriterApp, __doc__ or "dns-writer")


if __name__ == "__main__":
    raise SystemExit(main())

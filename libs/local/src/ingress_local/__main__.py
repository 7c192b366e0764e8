"""``ingress-local``: the whole system on this machine, on its embedded local default.

Starts a nats-server with JetStream (state in .state/), declares the streams, and builds the
topology of a small data centre out of network namespaces: the services, one Envoy, knotd and
echo backends in this namespace; an L4 node namespace (l4-programmer's nftables DNAT and a BIRD
that bgp-speaker drives); a ToR namespace whose BIRD learns the VIPs; a client namespace behind
the ToR. Ingresses come from examples/ (edits take effect at once). It prints a live status
table and, when a domain becomes Ready, one real request from the client namespace
(DNS -> VIP -> ToR -> L4 -> Envoy -> backend). Ctrl-C stops every process it started and
removes every namespace, interface and route it made.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path

from ingress_testkit.nats_server import free_port

from ingress_local.status import Row, collect, render
from ingress_local.topology.addresses import DEFAULT_VIP_POOL
from ingress_local.topology.client import request
from ingress_local.topology.system import SERVICES, LocalSystem, Options, ServiceEntry

__all__ = ["SERVICES", "ServiceEntry", "main", "run"]


async def _probe(system: LocalSystem, row: Row) -> str:
    assert system.plan is not None
    result = await asyncio.to_thread(request, system.plan.ns_client, f"http://{row.domain}/")
    return result.summary()


async def run(
    manifests: Path, state_dir: Path, port: int, once: bool, interval: float, vip_pool: str
) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    system = LocalSystem(
        Options(manifests=manifests, state_dir=state_dir, nats_port=port, vip_pool=vip_pool)
    )
    status = 0
    try:
        start = asyncio.create_task(system.start())
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({start, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if not start.done():
            start.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await start
            return 130
        stopper.cancel()
        try:
            start.result()
        except (RuntimeError, TimeoutError, OSError) as exc:
            print(f"ingress-local could not start: {exc}", file=sys.stderr)
            return 1
        assert system.bus is not None
        print("watch every event: .venv/bin/ingress-events tail --server", system.nats_url)
        print(f"manifests: {manifests} (mirrored for this topology to {system.overlay_dir})")
        probed: dict[str, str] = {}
        while True:
            rows = await collect(system.bus)
            print()
            print(render(rows))
            for row in rows:
                if row.condition == "Ready" and probed.get(row.domain) != row.vip:
                    probed[row.domain] = row.vip
                    print(await _probe(system, row))
            for line in system.exited():
                print(f"!! {line}")
            if once:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)
            if stop.is_set():
                break
    finally:
        problems = await system.stop()
        if problems:
            status = status or 1
        print(
            "stopped: every process this run started has exited"
            + ("" if problems else "; namespaces, interfaces and routes removed")
        )
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ingress-local",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--manifests", type=Path, default=Path("examples"))
    parser.add_argument("--state-dir", type=Path, default=Path(".state"))
    parser.add_argument("--nats-port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--vip-pool", default=DEFAULT_VIP_POOL, help="VIPs of this topology")
    parser.add_argument("--once", action="store_true", help="print the status once and stop")
    parser.add_argument("--interval", type=float, default=2.0)
    args = parser.parse_args(argv)
    return asyncio.run(
        run(
            args.manifests.resolve(),
            args.state_dir.resolve(),
            args.nats_port or free_port(),
            args.once,
            args.interval,
            args.vip_pool,
        )
    )


if __name__ == "__main__":
    raise SystemExit(main())

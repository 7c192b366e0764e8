"""``ingress-local``: the whole system on this machine, on its embedded local default.

Starts a nats-server with JetStream (state in .state/), declares the streams, starts every service
that is installed, says plainly which are not built yet, and prints a live status table. Ctrl-C
stops every process it started and leaves nothing behind.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ingress_events.bus import Bus, BusSettings
from ingress_testkit.nats_server import NatsServer, find_nats_server, free_port

from ingress_local.status import collect, render


@dataclass(frozen=True)
class ServiceEntry:
    name: str
    issue: int

    @property
    def command(self) -> str:
        return self.name if self.name.startswith("ingress-") else f"ingress-{self.name}"

    @property
    def env_prefix(self) -> str:
        return self.name.upper().replace("-", "_") + "_"


SERVICES = (
    ServiceEntry("ingress-watcher", 3),
    ServiceEntry("ipam", 4),
    ServiceEntry("l4-programmer", 5),
    ServiceEntry("l7-config", 6),
    ServiceEntry("dns-writer", 7),
    ServiceEntry("bgp-speaker", 8),
)


def _find(command: str) -> str | None:
    venv_bin = Path(sys.executable).parent
    return shutil.which(command, path=f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}")


async def run(state_dir: Path, port: int, once: bool, interval: float) -> int:
    binary = find_nats_server()
    if binary is None:
        print("nats-server is not installed: run scripts/setup first", file=sys.stderr)
        return 1
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "logs").mkdir(exist_ok=True)
    nats = NatsServer(binary, port=port, store_dir=state_dir / "nats").start()
    print(f"nats-server (JetStream) on {nats.url}, store {nats.store_dir}")
    procs: dict[str, subprocess.Popen[bytes]] = {}
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    bus: Bus | None = None
    try:
        bus = await Bus.connect(
            BusSettings(servers=[nats.url], source="//ingress-domain/local/ingress-local")
        )
        await bus.ensure_streams()
        missing = []
        for entry in SERVICES:
            path = _find(entry.command)
            if path is None:
                missing.append(entry)
                continue
            env = {
                **os.environ,
                f"{entry.env_prefix}NATS_URL": nats.url,
                f"{entry.env_prefix}CLUSTER": "local",
            }
            log = (state_dir / "logs" / f"{entry.name}.log").open("ab")
            procs[entry.name] = subprocess.Popen(
                [path, "run"], env=env, stdout=log, stderr=subprocess.STDOUT
            )
            print(f"started {entry.name} (log: {state_dir / 'logs' / (entry.name + '.log')})")
        for entry in missing:
            print(
                f"not built yet: {entry.name} (issue #{entry.issue}) -- its stage stays empty below"
            )
        print("watch every event: .venv/bin/ingress-events tail --server", nats.url)
        while True:
            print()
            print(render(await collect(bus)))
            for name, proc in procs.items():
                if proc.poll() is not None:
                    print(f"!! {name} exited with {proc.returncode}; see its log")
            if once:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)
            if stop.is_set():
                break
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in procs.items():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                print(f"{name} did not stop in 30 s; killed")
                proc.kill()
        if bus is not None:
            await bus.close()
        nats.stop()
        print("stopped: every process this run started has exited")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ingress-local",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--state-dir", type=Path, default=Path(".state"))
    parser.add_argument("--nats-port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--once", action="store_true", help="print the status once and stop")
    parser.add_argument("--interval", type=float, default=2.0)
    args = parser.parse_args(argv)
    return asyncio.run(
        run(args.state_dir.resolve(), args.nats_port or free_port(), args.once, args.interval)
    )


if __name__ == "__main__":
    raise SystemExit(main())

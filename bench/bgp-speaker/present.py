"""bgp-speaker with N VIPs already announced: l4.programmed for a new VIP -> its /32 in the
ToR's kernel, p50 and max over S samples. Real BIRDs (node and ToR, network namespaces), a real
nats-server, the app in-process. ``PROF=1`` adds a cProfile of the samples.

Run as root: ``.venv/bin/python bench/bgp-speaker/present.py 10000 20``. Prints only.
"""

import asyncio
import cProfile
import ipaddress
import os
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

PROF = os.environ.get("PROF") == "1"

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "services/bgp-speaker/tests"))
from birdlab import BirdLab  # noqa: E402
from helpers import context, peer, pool, programmed, vip  # noqa: E402
from ingress_bgp_speaker.adapters.files import MemorySecrets  # noqa: E402
from ingress_bgp_speaker.app import BgpSpeakerApp  # noqa: E402
from ingress_events.bus import Bus, BusSettings  # noqa: E402
from ingress_testkit import NatsServer, find_nats_server  # noqa: E402


async def until(check, timeout=60.0, interval=0.002):
    start = time.perf_counter()
    while not check():
        if time.perf_counter() - start > timeout:
            raise TimeoutError
        await asyncio.sleep(interval)
    return time.perf_counter()


async def main(present: int, samples: int):
    with tempfile.TemporaryDirectory() as tmp:
        lab = BirdLab(Path(tmp) / "lab", ["prof-a"]).start()
        server = NatsServer(find_nats_server() or "nats-server").start()
        node = lab.nodes[0]
        try:
            bus = await Bus.connect(BusSettings(servers=[server.url]))
            await bus.ensure_streams()
            app = BgpSpeakerApp(
                context(
                    bus,
                    node=node.name,
                    bird_socket=node.socket,
                    bird_config=node.config,
                    router_id=node.address,
                    hold_down_seconds=0.0,
                    session_poll_seconds=1.0,
                ),
                secrets=MemorySecrets(),
            )
            await bus.publish(pool(cidrs=("10.100.0.0/16",)))
            await bus.publish(
                peer("tor", node.tor_address, hold_time_seconds=6, keepalive_seconds=2)
            )
            base = ipaddress.ip_address("10.100.64.0")
            events = []
            for i in range(present):
                a = str(base + i)
                events += [vip(f"p-{i}.example.com", a), programmed(node.name, a)]
            for k in range(0, len(events), 1000):
                await bus.publish_many(events[k : k + 1000])
            t0 = time.perf_counter()
            await app.start()
            await until(lambda: (s := app.session_status("tor")) is not None and s.established, 30)
            await until(lambda: len(lab.tor_kernel_routes()) >= present, 120, 0.1)
            print(f"present {present} at ToR after {time.perf_counter() - t0:.1f}s", flush=True)
            await asyncio.sleep(2)
            prof = cProfile.Profile()
            lat = []
            for i in range(samples):
                a = str(ipaddress.ip_address("10.100.1.0") + i)
                await bus.publish(vip(f"s-{i}.example.com", a))
                await asyncio.sleep(0.3)
                prof.enable() if PROF else None
                sent = time.perf_counter()
                await bus.publish(programmed(node.name, a))
                seen = await until(
                    lambda a=a: lab.tor_kernel_route(f"{a}/32") != [], interval=0.005
                )
                prof.disable() if PROF else None
                lat.append(seen - sent)
            lat.sort()
            print("p50", statistics.median(lat), "max", lat[-1], [round(x, 3) for x in lat])
            PROF and pstats.Stats(prof).sort_stats("cumulative").print_stats(35)
            await app.stop()
            await bus.close()
        finally:
            server.cleanup()
            lab.close()


asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))

"""l7-config benchmark: a real Envoy fed by the ADS server, against real echo backends, with a
reload-based nginx (the ingress-nginx mechanism) measured side by side in the same run.

For each size DOMAINS (3 routes and one cluster per domain):

* initial load: every backend.endpoints and domain.desired published -> the last domain answers
  200 through Envoy; the ADS server's resident memory (it runs as its own process, the real
  ``ingress-l7-config`` console script, so VmRSS / VmHWM are its alone);
* new route live: a new domain (endpoints + domain.desired, handed to the bus at t0) -> first 200
  through Envoy, SAMPLES times;
* endpoint change live: backend.endpoints moving a Service to the other echo backend -> first
  answer from it, SAMPLES times;
* zero failed requests: a steady client loop against existing routes while CHANGES changes
  (endpoint moves, new domains, a new path on an existing domain) apply; every non-2xx answer and
  every connection error counts;
* baseline: nginx with a config rendered for the same domains and routes; a new route is a
  re-render, write and ``nginx -s reload`` -> first 200 through nginx, SAMPLES times.

    .venv/bin/python bench/l7-config/run.py --domains 2000 10000 --samples 100 --changes 1000

Results are printed and written to report.md next to this file after every size (a later size
that does not finish leaves the earlier ones reported).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ingress_events import catalogue as c
from ingress_events.bus import Bus, BusSettings
from ingress_l7_config.domain.resources import (
    ROUTE,
    BackendKey,
    BuildOptions,
    build_snapshot,
    http_route_names,
)
from ingress_l7_config.testing import EchoServer, EnvoyProcess, Reply
from ingress_testkit import NatsServer, find_nats_server, free_port
from nats.aio.msg import Msg

NS = "bench"
PATHS = ("/", "/api", "/static")
HERE = Path(__file__).parent
ROOT = HERE.parent.parent


def host_of(i: int) -> str:
    return f"d{i}.bench.example.com"


def _route(path: str, service: str) -> c.Route:
    return c.Route(
        path=path,
        path_type="Prefix",
        backends=[c.WeightedBackend(backend=c.BackendRef(namespace=NS, service=service, port=80))],
        source=c.ObjectRef(kind="Ingress", namespace=NS, name=service),
    )


def domain_event(i: int, generation: int, extra_paths: tuple[str, ...] = ()) -> c.DomainDesired:
    svc = f"svc-{i}"
    return c.DomainDesired(
        generation=generation,
        host=host_of(i),
        owner_namespace=NS,
        ingress_class="ingress-domain",
        sources=[c.ObjectRef(kind="Ingress", namespace=NS, name=svc)],
        routes=[_route(p, svc) for p in PATHS + extra_paths],
    )


def endpoints_event(i: int, port: int, generation: int) -> c.BackendEndpoints:
    return c.BackendEndpoints(
        generation=generation,
        namespace=NS,
        service=f"svc-{i}",
        port=80,
        endpoints=[c.Endpoint(address="127.0.0.1", port=port, ready=True)],
    )


def pct(values: list[float], q: float) -> float:
    """The q-quantile in milliseconds (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000


def proc_mem_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value
    return (
        int(fields["VmRSS"].split()[0]) / 1024,
        int(fields["VmHWM"].split()[0]) / 1024,
    )


# ----------------------------------------------------------------------------- HTTP client


async def http_get(port: int, host: str, path: str, *, timeout: float = 5.0) -> Reply:
    """One GET with ``Connection: close`` that reads the response by its content-length.

    (``ingress_l7_config.testing.http_get`` reads until EOF; on a local reply such as Envoy's
    404 for an unknown host, Envoy waits for the client to close first, up to its 1 s
    ``delayed_close_timeout``, so every 404 seen while polling would add ~1 s to a latency.)
    """

    async def go() -> Reply:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
            )
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ")[1])
            headers = {
                k.strip().lower(): v.strip()
                for k, _, v in (line.partition(":") for line in lines[1:] if line)
            }
            body = await reader.readexactly(int(headers.get("content-length", "0")))
        finally:
            writer.close()
        return Reply(status, headers, body.decode("utf-8", "replace"))

    return await asyncio.wait_for(go(), timeout)


async def wait_for_reply(
    port: int, host: str, path: str, want: int | str, *, timeout: float = 10.0
) -> float:
    """Poll until the reply has status ``want`` (int) or comes from Service ``want`` (str);
    returns the seconds it took."""
    started = time.monotonic()
    last: Reply | BaseException | None = None
    while time.monotonic() - started < timeout:
        try:
            reply = await http_get(port, host, path, timeout=2.0)
            last = reply
            if (isinstance(want, int) and reply.status == want) or reply.service == want:
                return time.monotonic() - started
        except (OSError, TimeoutError, ValueError, IndexError, asyncio.IncompleteReadError) as exc:
            last = exc
        await asyncio.sleep(0.002)
    raise TimeoutError(f"{host}{path}: wanted {want!r}, last {last!r}")


# ----------------------------------------------------------------------------- the service


@dataclass
class Service:
    """ingress-l7-config as its own process (the real console script)."""

    nats_url: str
    http_port: int
    workdir: Path
    xds_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Service:
        (self.workdir / "secrets").mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.update(
            {
                "L7_CONFIG_NATS_URL": self.nats_url,
                "L7_CONFIG_XDS_HOST": "127.0.0.1",
                "L7_CONFIG_XDS_PORT": str(self.xds_port),
                "L7_CONFIG_LISTEN_ADDRESS": "127.0.0.1",
                "L7_CONFIG_HTTP_PORT": str(self.http_port),
                "L7_CONFIG_HTTPS_PORT": str(free_port()),
                "L7_CONFIG_SECRETS_DIR": str(self.workdir / "secrets"),
                "L7_CONFIG_ACCESS_LOG": "false",
                "L7_CONFIG_INSTANCE": f"bench-{uuid.uuid4().hex[:6]}",
                "L7_CONFIG_LOG_LEVEL": "warning",
                "L7_CONFIG_ADMIN_HOST": "127.0.0.1",
                "L7_CONFIG_ADMIN_PORT": "0",
            }
        )
        binary = Path(sys.executable).parent / "ingress-l7-config"
        with (self.workdir / "service.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [str(binary)], env=env, stdout=log, stderr=subprocess.STDOUT
            )
        return self

    def memory(self) -> tuple[float, float]:
        assert self.proc is not None
        return proc_mem_mb(self.proc.pid)

    def log_tail(self, n: int = 20) -> str:
        path = self.workdir / "service.log"
        return (
            "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.exists() else ""
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


# ----------------------------------------------------------------------------- nginx baseline


def nginx_binary() -> str:
    for candidate in (os.environ.get("NGINX_BIN"), shutil.which("nginx"), "/usr/sbin/nginx"):
        if candidate and Path(candidate).is_file():
            return candidate
    raise RuntimeError("nginx is not installed: apt-get install -y nginx-light")


@dataclass
class Nginx:
    """Our own nginx master (own prefix, config, pid file and loopback port), reloaded the way
    ingress-nginx reloads: render the whole configuration, write it, ``nginx -s reload``."""

    workdir: Path
    port: int = field(default_factory=free_port)
    started: bool = False

    @property
    def conf(self) -> Path:
        return self.workdir / "nginx.conf"

    def render(self, domains: list[tuple[int, int]]) -> str:
        """``domains`` is (index, backend port) per domain; one upstream per Service."""
        out = [
            "worker_processes 1;",
            "daemon on;",
            "user root;",
            f"pid {self.workdir}/nginx.pid;",
            f"error_log {self.workdir}/error.log warn;",
            "events { worker_connections 4096; }",
            "http {",
            "  access_log off;",
            f"  client_body_temp_path {self.workdir}/body;",
            f"  proxy_temp_path {self.workdir}/proxy;",
            f"  fastcgi_temp_path {self.workdir}/fastcgi;",
            f"  uwsgi_temp_path {self.workdir}/uwsgi;",
            f"  scgi_temp_path {self.workdir}/scgi;",
            "  server_names_hash_max_size 262144;",
            "  server_names_hash_bucket_size 128;",
            "  variables_hash_bucket_size 256;",
            "  proxy_http_version 1.1;",
            '  proxy_set_header Connection "";',
            "  proxy_set_header Host $host;",
            f"  server {{ listen 127.0.0.1:{self.port} default_server; return 404; }}",
        ]
        for i, backend in domains:
            out.append(f"  upstream {NS}-svc-{i}-80 {{ server 127.0.0.1:{backend}; keepalive 4; }}")
        for i, _ in domains:
            out.append(f"  server {{ listen 127.0.0.1:{self.port}; server_name {host_of(i)};")
            for path in PATHS:
                out.append(f"    location {path} {{ proxy_pass http://{NS}-svc-{i}-80; }}")
            out.append("  }")
        out.append("}")
        return "\n".join(out) + "\n"

    def _run(self, *args: str) -> None:
        subprocess.run(
            [
                nginx_binary(),
                *("-p", str(self.workdir), "-e", str(self.workdir / "error.log")),
                *("-c", str(self.conf), *args),
            ],
            check=True,
            capture_output=True,
        )

    def apply(self, domains: list[tuple[int, int]]) -> None:
        """Render, write and start or reload (what the ingress-nginx controller does per change,
        minus its ``nginx -t`` test run, which would only make the baseline slower)."""
        tmp = self.conf.with_suffix(".tmp")
        tmp.write_text(self.render(domains))
        tmp.replace(self.conf)
        if self.started:
            self._run("-s", "reload")
        else:
            self._run()
            self.started = True

    def master_pid(self) -> int | None:
        path = self.workdir / "nginx.pid"
        with contextlib.suppress(OSError, ValueError):
            return int(path.read_text().strip())
        return None

    def stop(self) -> None:
        if self.started:
            with contextlib.suppress(subprocess.CalledProcessError):
                self._run("-s", "quit")
            pid = self.master_pid()
            deadline = time.monotonic() + 10
            while pid is not None and Path(f"/proc/{pid}").exists():
                if time.monotonic() > deadline:
                    with contextlib.suppress(subprocess.CalledProcessError):
                        self._run("-s", "stop")
                    break
                time.sleep(0.05)
            self.started = False


# ----------------------------------------------------------------------------- traffic


@dataclass
class Traffic:
    """A steady client loop: ``workers`` clients, each one request after another."""

    port: int
    hosts: list[str]
    ok: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def _worker(self, seed: int) -> None:
        rng = random.Random(seed)
        while not self._stop.is_set():
            host = rng.choice(self.hosts)
            path = rng.choice(PATHS)
            try:
                reply = await http_get(self.port, host, path, timeout=5.0)
            except (
                OSError,
                TimeoutError,
                ValueError,
                IndexError,
                asyncio.IncompleteReadError,
            ) as exc:
                self.errors[type(exc).__name__] += 1
                continue
            if 200 <= reply.status < 300:
                self.ok += 1
            else:
                self.statuses[reply.status] += 1

    @property
    def failed(self) -> int:
        return sum(self.statuses.values()) + sum(self.errors.values())

    async def run(self, workers: int) -> None:
        await asyncio.gather(*(self._worker(n) for n in range(workers)))

    def stop(self) -> None:
        self._stop.set()


# ----------------------------------------------------------------------------- one size


def rebuild_cost(domains: int) -> tuple[float, int]:
    """What the service does on every change, whatever it is: one ``build_snapshot`` of every
    domain (timed in this process, best of two; only the first build does that much) and the
    size of the largest plain-HTTP route table, which is what a route change resends."""
    desired = {host_of(i): domain_event(i, 11) for i in range(domains)}
    backends: dict[BackendKey, c.BackendEndpoints] = {}
    for i in range(domains):
        backends[(NS, f"svc-{i}", 80)] = endpoints_event(i, 1000 + i % 4, 11)
    best = float("inf")
    snapshot = None
    for _ in range(2):
        t0 = time.perf_counter()
        snapshot = build_snapshot(desired, backends, {}, BuildOptions())
        best = min(best, time.perf_counter() - t0)
    assert snapshot is not None
    tables = [snapshot.get(ROUTE, name) for name in http_route_names(BuildOptions())]
    size = max(len(t.payload) for t in tables if t is not None)
    return best, size


@dataclass
class Result:
    domains: int
    samples: int
    changes: int
    xds: str = "delta"
    load_publish_s: float = 0.0
    load_live_s: float = 0.0
    load_applied_s: float = 0.0
    rss_mb: float = 0.0
    hwm_mb: float = 0.0
    rss_end_mb: float = 0.0
    hwm_end_mb: float = 0.0
    envoy_rss_mb: float = 0.0
    route_live: list[float] = field(default_factory=list)
    endpoint_live: list[float] = field(default_factory=list)
    churn_s: float = 0.0
    churn_requests: int = 0
    churn_failed: int = 0
    churn_detail: str = ""
    nginx_load_s: float = 0.0
    nginx_route_live: list[float] = field(default_factory=list)
    nginx_rss_mb: float = 0.0
    build_s: float = 0.0
    rds_bytes: int = 0
    notes: list[str] = field(default_factory=list)


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.generation = 10
        self.samples = args.samples[0]
        self.checkpoint: Callable[[Result], None] = lambda result: None

    def gen(self) -> int:
        self.generation += 1
        return self.generation

    async def size(self, domains: int, xds: str, nginx_baseline: bool) -> Result:
        a = self.args
        result = Result(domains, self.samples, a.changes, xds)
        result.build_s, result.rds_bytes = rebuild_cost(domains)
        print(f"[{domains}] one full build_snapshot: {result.build_s:.2f} s", flush=True)
        binary = find_nats_server()
        assert binary, "nats-server missing (apt-get install -y nats-server)"
        nats = NatsServer(binary).start()
        work = Path(tempfile.mkdtemp(prefix="l7-config-bench-"))
        echoes = [await EchoServer(f"echo-{n}").start() for n in range(a.backends)]
        spare = await EchoServer("echo-moved").start()
        bus = await Bus.connect(BusSettings(servers=[nats.url], source="//ingress-domain/bench/l7"))
        await bus.ensure_streams()
        http = free_port()
        service = Service(nats.url, http, work)
        envoy: EnvoyProcess | None = None
        nginx = Nginx(work / "nginx")
        (nginx.workdir).mkdir()
        backend_of = {i: echoes[i % len(echoes)] for i in range(domains)}
        try:
            service.start()
            envoy = EnvoyProcess(
                node=f"l7-bench-{uuid.uuid4().hex[:6]}",
                xds_port=service.xds_port,
                delta=xds == "delta",
            )
            envoy.start()

            # -- initial load
            applied: set[str] = set()
            all_applied = asyncio.Event()

            async def on_l7(msg: Msg) -> None:
                # Only the header and subject: decoding 10,000 events here would take CPU
                # from the service being measured.
                if ".l7.applied.v" in (msg.headers or {}).get("ce-type", ""):
                    applied.add(bus.subjects.parse(msg.subject)[1][0])
                    if len(applied) >= domains:
                        all_applied.set()

            l7_sub = await bus.nats.subscribe(f"{bus.subjects.prefix}.l7.>", cb=on_l7)
            started = time.monotonic()
            events: list[c.Event] = []
            for i in range(domains):
                g = self.gen()
                events += [endpoints_event(i, backend_of[i].port, g), domain_event(i, g)]
            for offset in range(0, len(events), 2000):
                await bus.publish_many(events[offset : offset + 2000], timeout=60)
            result.load_publish_s = time.monotonic() - started
            await wait_for_reply(
                http,
                host_of(domains - 1),
                "/api",
                backend_of[domains - 1].service,
                timeout=a.load_timeout,
            )
            for i in random.Random(1).sample(range(domains), min(20, domains)):
                await wait_for_reply(http, host_of(i), "/static", backend_of[i].service, timeout=60)
            result.load_live_s = time.monotonic() - started
            # Loaded means converged: every domain reported applied, so that the first sample
            # does not share the server with the tail of the load's l7.applied events.
            try:
                await asyncio.wait_for(all_applied.wait(), timeout=a.load_timeout)
            except TimeoutError:
                raise AssertionError(f"{len(applied)} of {domains} domains applied") from None
            result.load_applied_s = time.monotonic() - started
            await l7_sub.unsubscribe()
            result.rss_mb, result.hwm_mb = service.memory()
            assert envoy.proc is not None
            result.envoy_rss_mb = proc_mem_mb(envoy.proc.pid)[0]
            self.checkpoint(result)
            print(
                f"[{domains}] loaded in {result.load_live_s:.1f} s, all applied in "
                f"{result.load_applied_s:.1f} s "
                f"(published in {result.load_publish_s:.1f} s); ADS RSS {result.rss_mb:.0f} MiB",
                flush=True,
            )

            # -- new route live
            next_index = domains
            for n in range(self.samples):
                i = next_index
                next_index += 1
                backend_of[i] = echoes[i % len(echoes)]
                g = self.gen()
                t0 = time.monotonic()
                await bus.publish_many(
                    [endpoints_event(i, backend_of[i].port, g), domain_event(i, g)]
                )
                await wait_for_reply(http, host_of(i), "/api", 200, timeout=120)
                result.route_live.append(time.monotonic() - t0)
                if result.route_live[-1] > 0.1:
                    # With the wall clock, to find it in the service's and Envoy's logs.
                    print(
                        f"[{domains}] slow route live #{n}: {result.route_live[-1] * 1000:.0f} ms"
                        f" at {dt.datetime.now(dt.UTC):%H:%M:%S.%f}",
                        flush=True,
                    )
                if n % 20 == 0:
                    print(
                        f"[{domains}] route live #{n}: {result.route_live[-1] * 1000:.0f} ms",
                        flush=True,
                    )

            self.checkpoint(result)
            # -- endpoint change live (domain 0 moves between its backend and the spare)
            for n in range(self.samples):
                target = spare if n % 2 == 0 else backend_of[0]
                t0 = time.monotonic()
                await bus.publish(endpoints_event(0, target.port, self.gen()))
                await wait_for_reply(http, host_of(0), "/", target.service, timeout=120)
                result.endpoint_live.append(time.monotonic() - t0)
                if n % 20 == 0:
                    print(
                        f"[{domains}] endpoint live #{n}: {result.endpoint_live[-1] * 1000:.0f} ms",
                        flush=True,
                    )

            self.checkpoint(result)
            # -- zero failed requests under constant traffic while CHANGES apply
            steady = list(range(1, min(domains, 200)))
            traffic = Traffic(http, [host_of(i) for i in steady])
            runner = asyncio.create_task(traffic.run(a.workers))
            await asyncio.sleep(1.0)
            rng = random.Random(7)
            t0 = time.monotonic()
            last_new: int | None = None
            last_path: tuple[int, str] | None = None
            last_move: tuple[int, EchoServer] | None = None
            batch: list[c.Event] = []
            for k in range(a.changes):
                kind = k % 4
                if kind in (0, 1):  # an endpoint move of a Service under traffic
                    i = rng.choice(steady)
                    target = spare if backend_of[i] is not spare else echoes[i % len(echoes)]
                    backend_of[i] = target
                    batch.append(endpoints_event(i, target.port, self.gen()))
                    last_move = (i, target)
                elif kind == 2:  # a new domain
                    i = next_index
                    next_index += 1
                    backend_of[i] = echoes[i % len(echoes)]
                    g = self.gen()
                    batch += [endpoints_event(i, backend_of[i].port, g), domain_event(i, g)]
                    last_new = i
                else:  # a new path on a domain under traffic
                    i = rng.choice(steady)
                    path = f"/v{k}"
                    batch.append(domain_event(i, self.gen(), (path,)))
                    last_path = (i, path)
                if len(batch) >= a.batch:
                    await bus.publish_many(batch)
                    batch = []
                    await asyncio.sleep(a.batch / a.rate)
            if batch:
                await bus.publish_many(batch)
            if last_new is not None:
                await wait_for_reply(http, host_of(last_new), "/api", 200, timeout=300)
            if last_path is not None:
                await wait_for_reply(http, host_of(last_path[0]), last_path[1], 200, timeout=300)
            if last_move is not None:
                await wait_for_reply(
                    http, host_of(last_move[0]), "/", last_move[1].service, timeout=300
                )
            result.churn_s = time.monotonic() - t0
            await asyncio.sleep(1.0)
            traffic.stop()
            await runner
            result.churn_requests = traffic.ok + traffic.failed
            result.churn_failed = traffic.failed
            result.churn_detail = ", ".join(
                [f"HTTP {s}: {n}" for s, n in sorted(traffic.statuses.items())]
                + [f"{e}: {n}" for e, n in sorted(traffic.errors.items())]
            )
            result.rss_end_mb, result.hwm_end_mb = service.memory()
            print(
                f"[{domains}] churn: {a.changes} changes in {result.churn_s:.1f} s, "
                f"{result.churn_requests} requests, {result.churn_failed} failed",
                flush=True,
            )
            self.checkpoint(result)
            envoy.stop()
            service.stop()

            # -- baseline: reload-based nginx, same domains and routes
            if nginx_baseline:
                base = [(i, echoes[i % len(echoes)].port) for i in range(domains)]
                t0 = time.monotonic()
                nginx.apply(base)
                await wait_for_reply(nginx.port, host_of(domains - 1), "/api", 200, timeout=120)
                result.nginx_load_s = time.monotonic() - t0
                for n in range(self.samples):
                    i = domains + n
                    base.append((i, echoes[i % len(echoes)].port))
                    t0 = time.monotonic()
                    await asyncio.to_thread(nginx.apply, base)
                    await wait_for_reply(nginx.port, host_of(i), "/api", 200, timeout=120)
                    result.nginx_route_live.append(time.monotonic() - t0)
                    if n % 20 == 0:
                        print(
                            f"[{domains}] nginx route live #{n}: "
                            f"{result.nginx_route_live[-1] * 1000:.0f} ms",
                            flush=True,
                        )
                self.checkpoint(result)
                pid = nginx.master_pid()
                if pid is not None:
                    result.nginx_rss_mb = proc_mem_mb(pid)[0]
        except BaseException:
            print("service log tail:\n" + service.log_tail(), file=sys.stderr)
            if envoy is not None:
                print("envoy log tail:\n" + envoy.log()[-3000:], file=sys.stderr)
            raise
        finally:
            nginx.stop()
            if envoy is not None:
                envoy.cleanup()
            service.stop()
            await bus.close()
            for echo in [*echoes, spare]:
                await echo.stop()
            nats.cleanup()
            shutil.rmtree(work, ignore_errors=True)
        return result


# ----------------------------------------------------------------------------- report


def verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def render(results: list[Result], args: argparse.Namespace, load: str) -> str:
    lines = [
        "| domains, xDS | routes | clusters | load: published | load: live through Envoy "
        "| load: every domain l7.applied "
        "| ADS RSS after load (peak) | ADS RSS after churn (peak) | Envoy RSS |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.domains}, {r.xds} | {3 * r.domains} | {r.domains} | {r.load_publish_s:.1f} s "
            f"| {r.load_live_s:.1f} s | {r.load_applied_s:.1f} s "
            f"| {r.rss_mb:.0f} MiB ({r.hwm_mb:.0f}) "
            f"| {r.rss_end_mb:.0f} MiB ({r.hwm_end_mb:.0f}) | {r.envoy_rss_mb:.0f} MiB |"
        )
    lines += [
        "",
        "| domains, xDS | measure | samples | p50 | p99 | max | target |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        rl, el, nl = r.route_live, r.endpoint_live, r.nginx_route_live
        if not rl:
            continue
        lines.append(
            f"| {r.domains}, {r.xds} | new route live, Envoy + ADS (bus publish -> first 200) "
            f"| {len(rl)} "
            f"| {pct(rl, 0.5):.0f} ms | {pct(rl, 0.99):.0f} ms | {max(rl) * 1000:.0f} ms "
            f"| p99 <= 100 ms: {verdict(pct(rl, 0.99) <= 100)} |"
        )
        if len(nl) == len(rl):
            lines.append(
                f"| {r.domains}, {r.xds} | new route live, nginx render + `nginx -s reload` "
                f"| {len(nl)} "
                f"| {pct(nl, 0.5):.0f} ms | {pct(nl, 0.99):.0f} ms | {max(nl) * 1000:.0f} ms "
                f"| baseline |"
            )
            lines.append(
                f"| {r.domains}, {r.xds} | ratio nginx / Envoy (p50, p99) | | "
                f"{pct(nl, 0.5) / pct(rl, 0.5):.2f}x | {pct(nl, 0.99) / pct(rl, 0.99):.2f}x | | |"
            )
        if not el:
            continue
        lines.append(
            f"| {r.domains}, {r.xds} | endpoint change live (bus publish -> first answer from "
            f"the new endpoint) | {len(el)} | {pct(el, 0.5):.0f} ms | {pct(el, 0.99):.0f} ms "
            f"| {max(el) * 1000:.0f} ms | p99 <= 50 ms: {verdict(pct(el, 0.99) <= 50)} |"
        )
    by_variant = {(r.domains, r.xds): r for r in results if r.route_live}
    pairs = [
        (by_variant[(d, "sotw")], delta)
        for (d, x), delta in by_variant.items()
        if x == "delta" and (d, "sotw") in by_variant
    ]
    if pairs:
        lines += [
            "",
            "| domains | state of the world / delta, same run | new route live p50 | p99 "
            "| endpoint change live p50 | p99 |",
            "|---|---|---|---|---|---|",
        ]
        for sotw, delta in pairs:
            if not (sotw.endpoint_live and delta.endpoint_live):
                continue  # a checkpoint of a size still running
            ratios = [
                pct(a, q) / pct(b, q)
                for a, b in (
                    (sotw.route_live, delta.route_live),
                    (sotw.endpoint_live, delta.endpoint_live),
                )
                for q in (0.5, 0.99)
            ]
            lines.append(
                f"| {delta.domains} | ratio | " + " | ".join(f"{x:.2f}x" for x in ratios) + " |"
            )
    lines += [
        "",
        "| domains, xDS | changes under traffic | time to apply all | requests | failed | detail "
        "| target |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if not r.churn_requests:
            continue
        lines.append(
            f"| {r.domains}, {r.xds} | {r.changes} | {r.churn_s:.1f} s | {r.churn_requests} "
            f"| {r.churn_failed} | {r.churn_detail or '-'} "
            f"| 0 failed: {verdict(r.churn_failed == 0)} |"
        )
    lines += [
        "",
        "| domains | one full `build_snapshot` (the first; a change rebuilds what it touched) "
        "| largest plain-HTTP RouteConfiguration (what a route change resends) |",
        "|---|---|---|",
    ]
    for r in results:
        if r.xds == results[0].xds:
            lines.append(
                f"| {r.domains} | {r.build_s * 1000:.0f} ms | {r.rds_bytes / 1024:.0f} KiB |"
            )
    lines += [
        "",
        "| domains, xDS | target: ADS server memory <= 500 MB (peak VmHWM) |",
        "|---|---|",
    ]
    for r in results:
        peak = max(r.hwm_mb, r.hwm_end_mb)
        lines.append(
            f"| {r.domains}, {r.xds} | {peak:.0f} MiB: {verdict(peak * 1.048576 <= 500)} |"
        )
    if any(r.nginx_load_s for r in results):
        lines += ["", "| domains | nginx initial start, live | nginx master RSS |", "|---|---|---|"]
        for r in results:
            if r.nginx_load_s:
                lines.append(f"| {r.domains} | {r.nginx_load_s:.1f} s | {r.nginx_rss_mb:.0f} MiB |")
    return "\n".join(lines) + "\n"


def command(args: argparse.Namespace) -> str:
    return (
        f"`.venv/bin/python bench/l7-config/run.py --domains {' '.join(map(str, args.domains))} "
        f"--samples {' '.join(map(str, args.samples))} --changes {args.changes}"
        f"{' --xds ' + ' '.join(args.xds) if args.xds != ['delta'] else ''}"
        f"{' --no-nginx' if args.no_nginx else ''}`"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--domains", type=int, nargs="+", default=[2000], help="sizes, in order")
    parser.add_argument(
        "--samples",
        type=int,
        nargs="+",
        default=[100],
        help="changes timed, per size (last repeats)",
    )
    parser.add_argument("--changes", type=int, default=1000, help="changes under traffic")
    parser.add_argument(
        "--rate", type=float, default=200.0, help="changes per second under traffic"
    )
    parser.add_argument("--batch", type=int, default=10, help="changes per publish under traffic")
    parser.add_argument("--workers", type=int, default=4, help="steady traffic clients")
    parser.add_argument("--backends", type=int, default=4, help="echo backend processes")
    parser.add_argument("--load-timeout", type=float, default=1800.0)
    parser.add_argument("--no-nginx", action="store_true", help="skip the reload baseline")
    parser.add_argument(
        "--xds",
        nargs="+",
        choices=["delta", "sotw"],
        default=["delta"],
        help="Envoy's ADS variants, each run in turn per size (delta: what deploy/ configures)",
    )
    args = parser.parse_args()
    results: list[Result] = []
    run = Run(args)

    def write(done: list[Result], partial: bool) -> None:
        load = (
            f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, load average "
            f"{os.getloadavg()[0]:.2f} (2 cores, shared with other test runs)"
        )
        table = render(done, args, load)
        state = "Partial: the last size is still running. " if partial else ""
        if not partial:
            print(table, flush=True)
        (HERE / "report.md").write_text(
            "# l7-config benchmark\n\n"
            f"{command(args)}\n\n{state}Written {load}. One real Envoy 1.40 (concurrency 1) "
            "on the ADS server (the `ingress-l7-config` process), nats-server 2.9 with "
            f"JetStream, {args.backends} echo backends; nginx {nginx_version()} as the "
            "reload baseline.\n\n" + table + NOTES
        )

    run.checkpoint = lambda result: write([*results, result], True)
    for n, domains in enumerate(args.domains):
        run.samples = args.samples[min(n, len(args.samples) - 1)]
        for k, xds in enumerate(args.xds):
            results.append(asyncio.run(run.size(domains, xds, k == 0 and not args.no_nginx)))
            write(results, False)
    return 0


def nginx_version() -> str:
    with contextlib.suppress(Exception):
        out = subprocess.run([nginx_binary(), "-v"], capture_output=True, text=True).stderr
        return out.strip().rpartition("/")[2]
    return "(not installed)"


NOTES = """
## How it is measured
* The load ends when the last domain and 20 others answer through Envoy and every domain's
  `l7.applied` has been published. Until 2026-12-05 it ended at the traffic check alone, and
  the server was still publishing the load's `l7.applied` events (2.6 s of them at 10,000)
  while the first new-route sample ran: that sample took 117-169 ms in four runs, 48 ms once
  the load ends here.
* The ADS server is the real `ingress-l7-config` process (its own RSS), consuming the bus; the
  benchmark publishes the events (a new domain is its `backend.endpoints` plus `domain.desired`
  in one `publish_many`) and t0 is taken just before the publish. "Live" is the first reply
  from the wanted Service through Envoy's HTTP listener, polled every ~2 ms with a fresh
  connection (the reply is read by content-length: reading to EOF, as
  `ingress_l7_config.testing.http_get` does, adds Envoy's 1 s `delayed_close_timeout` to every
  404 seen while polling).
* Each domain has routes `/`, `/api`, `/static` (Prefix) to its own Service; each Service has
  one endpoint on one of the echo backends. Endpoint changes move domain 0's Service between
  two echo backends. Under traffic, the changes are, in turn, endpoint moves of Services that
  the traffic hits, new domains and a new path on a domain the traffic hits, published in
  batches of 10 at up to 200 changes/s; "time to apply all" ends when the last of each kind is
  visible through Envoy. The traffic is 4 clients in a loop (one connection per request) over
  the first 200 domains and their three paths; every non-2xx and every connection error or
  timeout (5 s) counts as failed.
* The baseline is nginx with one `server` per domain and one `upstream` per Service, rendered
  in full on every change, written and reloaded with `nginx -s reload` (the ingress-nginx
  mechanism for a new host or path; ingress-nginx also runs `nginx -t` first, which is left
  out, so the baseline is if anything fast). nginx-light has no Lua, so the ingress-nginx
  dynamic (reload-free) endpoint update is not reproduced and not compared.
* With few samples, p99 is the maximum (nearest rank).
"""

if __name__ == "__main__":
    raise SystemExit(main())

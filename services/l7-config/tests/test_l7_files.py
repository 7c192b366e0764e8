"""File mode against a real Envoy started with a path-based bootstrap (no control plane
connection at all): the app writes the file set, Envoy routes by it, and each update (a new
route, an endpoint change, a TLS domain, a delete) is picked up from files replaced atomically."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import stat
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from ingress_events import catalogue as c
from ingress_events.bus import Bus, BusSettings
from ingress_l7_config.adapters.files import FileXdsServer
from ingress_l7_config.app import L7ConfigApp
from ingress_l7_config.testing import (
    EchoServer,
    EnvoyProcess,
    file_bootstrap,
    http_get,
    issue,
    make_ca,
    wait_for_reply,
    write_secret,
)
from ingress_testkit import EventCapture, NatsServer, find_nats_server, free_port
from l7_fixtures import app_settings, context, domain, endpoints, route, tls

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]


@dataclass
class FileStack:
    bus: Bus
    capture: EventCapture
    app: L7ConfigApp
    envoy: EnvoyProcess
    echo: dict[str, EchoServer]
    http: int
    https: int
    files: Path
    secrets: Path

    async def apply(self, event: c.DomainDesired) -> c.L7Applied:
        await self.bus.publish(event)
        [hit] = await self.capture.wait_for(
            lambda x: (
                isinstance(x.envelope.event, c.L7Applied)
                and x.envelope.event.observed_generation == event.generation
            ),
            timeout=10,
        )
        assert isinstance(hit.envelope.event, c.L7Applied)
        return hit.envelope.event

    @property
    def writer(self) -> FileXdsServer:
        xds = self.app.xds
        assert isinstance(xds, FileXdsServer)
        return xds


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fstack() -> AsyncIterator[FileStack]:
    binary = find_nats_server()
    assert binary is not None, "nats-server is not installed (scripts/setup)"
    nats = NatsServer(binary).start()
    files = Path(tempfile.mkdtemp(prefix="l7-config-files-"))
    secrets = Path(tempfile.mkdtemp(prefix="l7-config-fsecrets-"))
    echo = {s: await EchoServer(s).start() for s in ("svc-a", "svc-b")}
    bus = await Bus.connect(BusSettings(servers=[nats.url], source="//ingress-domain/test/l7f"))
    await bus.ensure_streams()
    capture = await EventCapture(bus).start()
    http, https = free_port(), free_port()
    settings = app_settings(
        http, https, secrets, f"itf-{uuid.uuid4().hex[:6]}", mode="file", files_dir=files
    )
    app = L7ConfigApp(context(bus, settings))
    envoy: EnvoyProcess | None = None
    try:
        await app.start()
        # The app wrote the (empty) core set before serving: Envoy can start on it.
        assert (files / "core" / "lds.json").is_file()
        node = f"l7-config-file-{uuid.uuid4().hex[:6]}"
        envoy = EnvoyProcess(node=node, xds_port=0, config=file_bootstrap(node, str(files)))
        envoy.start()
        for name, server in echo.items():
            await bus.publish(endpoints(name, server.port))
        yield FileStack(bus, capture, app, envoy, echo, http, https, files, secrets)
    finally:
        if envoy is not None:
            envoy.cleanup()
        await app.stop()
        await capture.stop()
        await bus.close()
        for server in echo.values():
            await server.stop()
        nats.cleanup()
        shutil.rmtree(files, ignore_errors=True)
        shutil.rmtree(secrets, ignore_errors=True)
    capture.assert_clean()


async def test_file_mode_routes_and_picks_up_updates(fstack: FileStack) -> None:
    host = "files.example.com"
    applied = await fstack.apply(domain(host, [route("/", "Prefix", "svc-a")]))
    assert applied.envoys == 0  # nobody reports back in file mode: written = applied
    reply, _ = await wait_for_reply(fstack.http, host, "/x", "svc-a", timeout=15)
    assert reply.field("host") == host
    lds = json.loads((fstack.files / "core" / "lds.json").read_text())
    assert lds["type_url"].endswith("Listener") and lds["resources"][0]["name"] == "http"

    # A new route: route table and clusters rewritten (write + rename), Envoy reloads them.
    await fstack.apply(
        domain(host, [route("/", "Prefix", "svc-a"), route("/b", "Prefix", "svc-b")])
    )
    await wait_for_reply(fstack.http, host, "/b/1", "svc-b", timeout=15)
    assert (await http_get(fstack.http, host, "/")).service == "svc-a"

    # An endpoint change rewrites one endpoints file and nothing else.
    moved = await EchoServer("svc-a-moved").start()
    try:
        before = fstack.writer.writer.writes
        await fstack.bus.publish(endpoints("svc-a", moved.port))
        await wait_for_reply(fstack.http, host, "/", "svc-a-moved", timeout=15)
        assert fstack.writer.last_changes == ["endpoints/shop_svc-a_80.json"]
        assert fstack.writer.writer.writes == before + 1
    finally:
        await fstack.bus.publish(endpoints("svc-a", fstack.echo["svc-a"].port))
        await wait_for_reply(fstack.http, host, "/", "svc-a", timeout=15)
        await moved.stop()
    leftovers = [p.name for p in fstack.files.rglob(".tmp-*")]
    assert leftovers == []
    # Envoy refuses a bad file silently (no NACK in file mode) except in its log.
    assert "rejected" not in fstack.envoy.log(), fstack.envoy.log()[-3000:]


async def test_file_mode_tls_domain_and_delete(fstack: FileStack) -> None:
    host = "tlsfiles.example.com"
    ca = make_ca()
    cert, key = issue(ca, [host])
    digest = write_secret(fstack.secrets, "shop", "files-tls", cert, key)
    await fstack.apply(domain(host, [route("/", "Prefix", "svc-b")], tls=tls("files-tls", digest)))
    client = ca.client_context()
    reply, _ = await wait_for_reply(fstack.https, host, "/", "svc-b", tls=client, timeout=15)
    assert reply.status == 200
    secret_file = fstack.files / "secrets" / "shop_files-tls.json"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert (fstack.files / "domains" / host / "rds-https.json").is_file()

    await fstack.bus.publish(
        c.DomainDeleted(generation=dt.datetime.now().microsecond + 3 * 10**9, host=host)
    )
    await fstack.capture.wait_for(
        lambda x: isinstance(x.envelope.event, c.L7Removed) and x.envelope.event.host == host
    )
    await wait_for_reply(fstack.http, host, "/", 404, timeout=15)
    assert not (fstack.files / "domains" / host).exists()
    assert not secret_file.exists()
    assert "rejected" not in fstack.envoy.log(), fstack.envoy.log()[-3000:]


def _kubelet_publish(root: Path, objects: list[dict[str, object]], serial: int) -> None:
    """Lay each rendered ConfigMap / Secret out the way the kubelet's atomic writer updates a
    volume: files in a fresh timestamped directory, the ``..data`` symlink swapped by rename
    (the only move Envoy sees), user-visible ``<key> -> ..data/<key>`` symlinks."""
    import os

    for obj in objects:
        meta = obj["metadata"]
        assert isinstance(meta, dict)
        data = obj.get("data") or obj.get("stringData")
        assert isinstance(data, dict)
        volume = root / meta["annotations"]["ingress-domain.io/mount-path"]
        volume.mkdir(parents=True, exist_ok=True)
        stamp = f"..2026_11_22_00_00_00.{serial:09d}"
        (volume / stamp).mkdir()
        for key, value in data.items():
            (volume / stamp / key).write_text(value)
        old = os.readlink(volume / "..data") if (volume / "..data").is_symlink() else None
        os.symlink(stamp, volume / "..data_tmp")
        os.rename(volume / "..data_tmp", volume / "..data")
        for key in data:
            if not (volume / key).is_symlink():
                os.symlink(f"..data/{key}", volume / key)
        if old is not None:
            shutil.rmtree(volume / old)


async def test_configmap_volumes_swapped_by_the_kubelet_are_picked_up() -> None:
    """The Kubernetes objects of file mode, mounted as the kubelet does it: Envoy starts on them
    and follows a ``..data`` swap of the core ConfigMap (a new route) and of the endpoints
    ConfigMap (an endpoint change)."""
    from ingress_l7_config.domain.files import kubernetes_objects, render_files
    from ingress_l7_config.domain.layout import FileLayout
    from ingress_l7_config.domain.resources import BuildOptions, build_snapshot

    root = Path(tempfile.mkdtemp(prefix="l7-config-kubelet-"))
    echo = {s: await EchoServer(s).start() for s in ("kv-a", "kv-b", "kv-a2")}
    http = free_port()
    layout = FileLayout(str(root))
    options = BuildOptions(listen_address="127.0.0.1", http_port=http, files=layout)
    host = "volume.example.com"
    envoy: EnvoyProcess | None = None

    def publish(routes: list[c.Route], a_port: int, serial: int) -> None:
        d = domain(host, routes)
        backends = {
            ("shop", "kv-a", 80): endpoints("kv-a", a_port),
            ("shop", "kv-b", 80): endpoints("kv-b", echo["kv-b"].port),
        }
        snap = build_snapshot({host: d}, backends, {}, options)
        _kubelet_publish(
            root, kubernetes_objects(render_files(snap, layout), "ingress-domain"), serial
        )

    try:
        publish([route("/", "Prefix", "kv-a")], echo["kv-a"].port, 1)
        node = f"l7-config-kubelet-{uuid.uuid4().hex[:6]}"
        envoy = EnvoyProcess(node=node, xds_port=0, config=file_bootstrap(node, str(root))).start()
        await wait_for_reply(http, host, "/", "kv-a", timeout=15)
        publish([route("/", "Prefix", "kv-a"), route("/b", "Prefix", "kv-b")], echo["kv-a"].port, 2)
        await wait_for_reply(http, host, "/b", "kv-b", timeout=15)
        publish(
            [route("/", "Prefix", "kv-a"), route("/b", "Prefix", "kv-b")], echo["kv-a2"].port, 3
        )
        await wait_for_reply(http, host, "/", "kv-a2", timeout=15)
        assert "rejected" not in envoy.log(), envoy.log()[-3000:]
    finally:
        if envoy is not None:
            envoy.cleanup()
        for server in echo.values():
            await server.stop()
        shutil.rmtree(root, ignore_errors=True)

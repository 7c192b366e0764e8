from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from ingress_events import catalogue as c
from ingress_events.bus import Bus, BusSettings
from ingress_runtime import AdminServer, Readiness, ServiceSettings, setup_logging
from ingress_runtime.cli import service_main
from opentelemetry import trace

HERE = Path(__file__).parent


async def _get(port: int, path: str) -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    raw = (await reader.read()).decode()
    writer.close()
    head, _, body = raw.partition("\r\n\r\n")
    return int(head.split()[1]), body


@pytest.mark.unit
async def test_admin_port_serves_health_readiness_with_reasons_and_metrics() -> None:
    readiness = Readiness()
    readiness.require("state-replayed")
    connected = [True]
    readiness.probe("nats-connected", lambda: connected[0])
    admin = await AdminServer(readiness).start()
    try:
        assert await _get(admin.port, "/healthz") == (200, "ok\n")
        status, body = await _get(admin.port, "/readyz")
        assert status == 503 and json.loads(body) == {"ready": False, "unmet": ["state-replayed"]}
        readiness.set("state-replayed")
        assert (await _get(admin.port, "/readyz"))[0] == 200
        connected[0] = False
        assert json.loads((await _get(admin.port, "/readyz"))[1])["unmet"] == ["nats-connected"]
        status, body = await _get(admin.port, "/metrics")
        assert status == 200 and "python_info" in body
        assert (await _get(admin.port, "/nope"))[0] == 404
    finally:
        await admin.stop()


@pytest.mark.unit
def test_settings_come_from_the_service_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic_settings import SettingsConfigDict

    class IpamSettings(ServiceSettings):
        model_config = SettingsConfigDict(env_prefix="IPAM_", frozen=True)

    monkeypatch.setenv("IPAM_NATS_URL", "nats://a:4222, nats://b:4222")
    monkeypatch.setenv("IPAM_STREAM_REPLICAS", "3")
    monkeypatch.setenv("IPAM_CLUSTER", "eu-west")
    settings = IpamSettings()
    bus = settings.bus_settings("ipam")
    assert list(bus.servers) == ["nats://a:4222", "nats://b:4222"]
    assert bus.streams.replicas == 3
    assert bus.source.startswith("//ingress-domain/eu-west/ipam/")


@pytest.mark.unit
def test_invalid_configuration_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pydantic_settings import SettingsConfigDict

    class S(ServiceSettings):
        model_config = SettingsConfigDict(env_prefix="X_", frozen=True)

    monkeypatch.setenv("X_STREAM_REPLICAS", "9")
    assert service_main("x", S, lambda ctx: None, "x", ["config"]) == 2  # type: ignore[arg-type, return-value]
    assert "X_STREAM_REPLICAS" in capsys.readouterr().out


@pytest.mark.unit
def test_logs_are_json_with_trace_ids(capsys: pytest.CaptureFixture[str]) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    log = setup_logging("svc")
    tracer = TracerProvider().get_tracer("t")
    with tracer.start_as_current_span("work") as span:
        log.info("planned", writes=3)
        logging.getLogger("ingress_events.bus").warning("stdlib line", extra={"consumer": "c1"})
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    trace_id = f"{span.get_span_context().trace_id:032x}"
    assert lines[0]["event"] == "planned" and lines[0]["writes"] == 3
    assert lines[0]["trace_id"] == trace_id and lines[0]["service"] == "svc"
    assert lines[1]["event"] == "stdlib line" and lines[1]["consumer"] == "c1"
    assert lines[1]["trace_id"] == trace_id
    assert trace.get_current_span().get_span_context().is_valid is False


def _domains(n: int) -> list[c.Event]:
    return [
        c.DomainDesired(
            generation=1,
            host=f"h{i}.example.com",
            owner_namespace="a",
            ingress_class="x",
            sources=[c.ObjectRef(kind="Ingress", namespace="a", name="i")],
        )
        for i in range(n)
    ]


async def _wait_ready(port_file: Path, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(200):
        if proc.poll() is not None:
            raise AssertionError(f"service exited with {proc.returncode}")
        await asyncio.sleep(0.05)
        if port_file.exists():
            for line in port_file.read_text().splitlines():
                if '"event": "ready"' in line:
                    return
    raise AssertionError("service never became ready")


@pytest.mark.integration
async def test_sigterm_finishes_in_flight_messages_and_loses_none(
    nats_url: str, tmp_path: Path
) -> None:
    bus = await Bus.connect(BusSettings(servers=[nats_url]))
    await bus.ensure_streams()
    await bus.publish_many(_domains(300))
    env = {
        **os.environ,
        "RELAY_NATS_URL": nats_url,
        "RELAY_DELAY_SECONDS": "0.01",
        "PYTHONPATH": str(HERE),
    }
    log_file = tmp_path / "relay.log"

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, str(HERE / "relay_service.py")],
            env=env,
            stdout=log_file.open("ab"),
            stderr=subprocess.STDOUT,
        )

    proc = start()
    await _wait_ready(log_file, proc)
    await asyncio.sleep(0.5)  # mid-stream
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, 30) == 0, log_file.read_text()
    js = bus.nats.jetstream()
    # Acks are applied by the server asynchronously; a lost ack would stay pending for ack_wait.
    for _ in range(100):
        info = await js.consumer_info(bus.subjects.stream(c.Family.DOMAIN), "relay")
        if info.num_ack_pending == 0:
            break
        await asyncio.sleep(0.02)
    assert info.num_ack_pending == 0  # everything it took, it finished and acked
    done_before = len(await bus.replay(c.Family.L7))
    assert 0 < done_before < 300  # really stopped mid-stream
    assert info.num_pending == 300 - done_before
    log_file.unlink()
    proc = start()
    await _wait_ready(log_file, proc)
    for _ in range(300):
        if len(await bus.replay(c.Family.L7)) == 300:
            break
        await asyncio.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, 30) == 0
    assert len(await bus.replay(c.Family.L7)) == 300
    await bus.close()


def test_a_long_collection_is_reported_and_watching_stops() -> None:
    import gc

    from ingress_runtime.service import watch_gc_pauses

    seen: list[tuple[int, float, int]] = []
    unwatch = watch_gc_pauses(lambda g, ms, n: seen.append((g, ms, n)), min_ms=0.0)
    try:
        cycles = []
        for _ in range(1000):
            a: list[object] = []
            a.append(a)
            cycles.append(a)
        del cycles, a
        gc.collect(2)
    finally:
        unwatch()
    assert any(g == 2 and n >= 1000 and ms >= 0 for g, ms, n in seen)
    count = len(seen)
    gc.collect(2)
    assert len(seen) == count
    # Below the threshold nothing is reported.
    quiet: list[tuple[int, float, int]] = []
    unwatch = watch_gc_pauses(lambda g, ms, n: quiet.append((g, ms, n)), min_ms=60_000.0)
    gc.collect(2)
    unwatch()
    assert quiet == []

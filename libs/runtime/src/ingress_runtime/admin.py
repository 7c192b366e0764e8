"""One admin port per service: ``/metrics`` (Prometheus), ``/healthz`` (alive) and ``/readyz``.

Ready means: connected to NATS, consumers bound, current state replayed, plus whatever the service
adds (e.g. "BIRD answers"). ``/readyz`` lists the conditions that are not met, so an operator
sees why a pod is not ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest


class Readiness:
    """Named conditions; the service is ready when every registered one is true."""

    def __init__(self) -> None:
        self._conditions: dict[str, bool] = {}
        self._probes: dict[str, Callable[[], bool]] = {}
        self.changed = asyncio.Event()

    def require(self, name: str) -> None:
        self._conditions.setdefault(name, False)

    def set(self, name: str, ok: bool = True) -> None:
        self._conditions[name] = ok
        self.changed.set()

    def probe(self, name: str, check: Callable[[], bool]) -> None:
        """A condition computed at every request (e.g. ``bus.connected``)."""
        self._probes[name] = check

    def unmet(self) -> list[str]:
        unmet = [name for name, ok in self._conditions.items() if not ok]
        unmet += [name for name, check in self._probes.items() if not check()]
        return sorted(unmet)

    @property
    def ready(self) -> bool:
        return not self.unmet()


class AdminServer:
    def __init__(
        self,
        readiness: Readiness,
        host: str = "127.0.0.1",
        port: int = 0,
        alive: Callable[[], bool] = lambda: True,
    ) -> None:
        self._readiness = readiness
        self._host = host
        self._port = port
        self._alive = alive
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> AdminServer:
        self._server = await asyncio.start_server(self._serve, self._host, self._port)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def _route(self, path: str) -> tuple[int, str, bytes]:
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(REGISTRY)
        if path == "/healthz":
            ok = self._alive()
            return (200 if ok else 503), "text/plain", b"ok\n" if ok else b"unhealthy\n"
        if path == "/readyz":
            unmet = self._readiness.unmet()
            body = json.dumps({"ready": not unmet, "unmet": unmet}).encode() + b"\n"
            return (200 if not unmet else 503), "application/json", body
        return 404, "text/plain", b"not found\n"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await asyncio.wait_for(reader.readline(), timeout=5)
            while (await asyncio.wait_for(reader.readline(), timeout=5)) not in (
                b"\r\n",
                b"\n",
                b"",
            ):
                pass
            parts = request_line.decode("latin-1").split()
            if len(parts) < 2 or parts[0] not in ("GET", "HEAD"):
                status, ctype, body = 405, "text/plain", b"method not allowed\n"
            else:
                status, ctype, body = self._route(parts[1].split("?", 1)[0])
            reason = {
                200: "OK",
                404: "Not Found",
                405: "Method Not Allowed",
                503: "Service Unavailable",
            }
            head = (
                f"HTTP/1.1 {status} {reason[status]}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            ).encode()
            writer.write(head + (body if parts and parts[0] != "HEAD" else b""))
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

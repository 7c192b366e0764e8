"""Constant traffic from the client namespace: one request after another, each on a fresh TCP
connection to the VIP (so every request crosses ToR, L4 DNAT and Envoy anew), one JSON line per
request on stdout. Run inside a namespace: ``python -m ingress_local.topology.traffic ADDR HOST``;
it stops after the request in hand when stdin closes.

``TrafficLoop`` starts it with ``ip netns exec`` and collects the lines.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Sample:
    at: float
    """Monotonic seconds of the loop process when the request was sent."""
    ok: bool
    status: int
    backend: str
    error: str


def _one(address: str, port: int, host: str, path: str, timeout: float) -> dict[str, object]:
    started = time.monotonic()
    conn = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": host, "Connection": "close"})
        reply = conn.getresponse()
        body = reply.read().decode("utf-8", "replace")
        backend = next(
            (ln.removeprefix("backend=") for ln in body.splitlines() if ln.startswith("backend=")),
            "",
        )
        return {"at": started, "status": reply.status, "backend": backend, "error": ""}
    except (OSError, http.client.HTTPException) as exc:
        return {"at": started, "status": 0, "backend": "", "error": f"{type(exc).__name__}: {exc}"}
    finally:
        conn.close()


def main(argv: list[str]) -> int:
    address, host = argv[0], argv[1]
    port = int(argv[2]) if len(argv) > 2 else 80
    path = argv[3] if len(argv) > 3 else "/"
    stop = threading.Event()

    def wait_stdin() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=wait_stdin, daemon=True).start()
    while not stop.is_set():
        print(json.dumps(_one(address, port, host, path, 5.0)), flush=True)
        time.sleep(0.005)
    return 0


@dataclass
class TrafficLoop:
    """The loop above in ``ns``; ``samples`` grows while it runs."""

    ns: str
    address: str
    host: str
    port: int = 80
    path: str = "/"
    samples: list[Sample] = field(default_factory=list)
    _proc: subprocess.Popen[str] | None = None
    _reader: threading.Thread | None = None

    def start(self) -> TrafficLoop:
        argv = ["ip", "netns", "exec", self.ns, sys.executable, "-m", __name__]
        self._proc = subprocess.Popen(
            [*argv, self.address, self.host, str(self.port), self.path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            with contextlib.suppress(ValueError, KeyError):
                d = json.loads(line)
                status = int(d["status"])
                self.samples.append(
                    Sample(float(d["at"]), status == 200, status, str(d["backend"]), d["error"])
                )

    def stop(self) -> list[Sample]:
        if self._proc is not None:
            assert self._proc.stdin is not None
            with contextlib.suppress(OSError):
                self._proc.stdin.close()
            try:
                self._proc.wait(15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        if self._reader is not None:
            self._reader.join(5)
        return list(self.samples)

    @property
    def failures(self) -> list[Sample]:
        return [s for s in self.samples if not s.ok]

    def since(self, index: int) -> list[Sample]:
        return self.samples[index:]


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

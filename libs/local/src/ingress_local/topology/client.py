"""A real request from the client namespace: the name resolved at knotd through the client's
resolv.conf, TCP to the VIP routed by the ToR, DNAT at the L4 node, Envoy, a backend."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

_MARK = "@@ingress-local@@"


@dataclass(frozen=True)
class ClientResult:
    url: str
    ok: bool
    status: int
    remote_ip: str
    body: str
    error: str = ""
    headers: dict[str, str] = field(default_factory=dict)

    def value(self, name: str) -> str | None:
        for line in self.body.splitlines():
            if line.startswith(f"{name}="):
                return line.removeprefix(f"{name}=")
        return None

    @property
    def service(self) -> str | None:
        return self.value("service")

    def summary(self) -> str:
        if not self.ok:
            return f"curl {self.url} (client netns) -> failed: {self.error}"
        who = self.service
        via = f" via VIP {self.remote_ip}" if self.remote_ip else ""
        if who:
            return (
                f"curl {self.url} (client netns) -> {self.status} from {who} "
                f"(backend {self.value('backend')}){via}"
            )
        location = self.headers.get("location")
        to = f" (location: {location})" if location else ""
        return f"curl {self.url} (client netns) -> {self.status}{to}{via}"


def request(
    ns: str,
    url: str,
    *,
    cacert: Path | None = None,
    resolve: str | None = None,
    timeout: float = 5.0,
) -> ClientResult:
    """``curl`` inside ``ns``. ``resolve`` (``host:port:address``) skips DNS when given."""
    argv = ["ip", "netns", "exec", ns, "curl", "-sS", "-i", "--max-time", str(timeout)]
    argv += ["-w", f"\n{_MARK}%{{remote_ip}} %{{http_code}}"]
    if cacert is not None:
        argv += ["--cacert", str(cacert)]
    if resolve is not None:
        argv += ["--resolve", resolve]
    try:
        proc = subprocess.run([*argv, url], capture_output=True, check=False, timeout=timeout + 5)
    except subprocess.TimeoutExpired:
        return ClientResult(url, False, 0, "", "", error="curl did not return")
    # Bytes, not text mode: universal newlines would turn the header's CRLFs into LFs.
    stdout = proc.stdout.decode("utf-8", "replace")
    stderr = proc.stderr.decode("utf-8", "replace")
    out, _, trailer = stdout.rpartition(_MARK)
    remote_ip, _, code = trailer.strip().partition(" ")
    if proc.returncode != 0:
        return ClientResult(url, False, 0, remote_ip, "", error=stderr.strip())
    head, _, body = out.partition("\r\n\r\n")
    if head.startswith("HTTP/") and " 100 " in head.split("\r\n", 1)[0]:
        head, _, body = body.partition("\r\n\r\n")
    lines = head.split("\r\n")
    headers = {
        k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])
    }
    return ClientResult(url, True, int(code or 0), remote_ip, body.rstrip("\n"), headers=headers)

"""Network namespaces for tests: random names with the service's prefix, always removed."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

ECHO_SERVER = r"""
import socketserver, sys
name = sys.argv[1].encode()
class H(socketserver.StreamRequestHandler):
    def handle(self):
        for line in self.rfile:
            self.wfile.write(name + b" " + line)
            self.wfile.flush()
class S(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
S(("0.0.0.0", int(sys.argv[2])), H).serve_forever()
"""


def sh(*cmd: str, ns: str | None = None, check: bool = True) -> str:
    prefix = ["ip", "netns", "exec", ns] if ns else []
    proc = subprocess.run([*prefix, *cmd], capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} (netns {ns}): {proc.stderr.strip()}")
    return proc.stdout


def suffix() -> str:
    return uuid.uuid4().hex[:6]


@contextlib.contextmanager
def namespaces(*roles: str) -> Iterator[dict[str, str]]:
    tag = suffix()
    names = {role: f"l4p-{role}-{tag}" for role in roles}
    created: list[str] = []
    try:
        for name in names.values():
            sh("ip", "netns", "add", name)
            created.append(name)
            sh("ip", "link", "set", "lo", "up", ns=name)
        yield names
    finally:
        for name in created:
            # Killing what still runs inside keeps nothing behind.
            pids = sh("ip", "netns", "pids", name, check=False).split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), 9)
            sh("ip", "netns", "del", name, check=False)


def link(a: str | None, a_addr: str, b: str | None, b_addr: str) -> tuple[str, str]:
    """A veth pair between two namespaces (None = the current one), addressed /24."""
    tag = suffix()
    left, right = f"l4pa{tag}", f"l4pb{tag}"
    sh("ip", "link", "add", left, "type", "veth", "peer", "name", right)
    for dev, ns, addr in ((left, a, a_addr), (right, b, b_addr)):
        if ns:
            sh("ip", "link", "set", dev, "netns", ns)
        sh("ip", "addr", "add", f"{addr}/24", "dev", dev, ns=ns)
        sh("ip", "link", "set", dev, "up", ns=ns)
    return left, right


def start_echo(ns: str, name: str, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-c", ECHO_SERVER, name, str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while f":{port} " not in sh("ss", "-Hltn", ns=ns):
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"echo server in {ns} did not listen")
        time.sleep(0.05)
    return proc


CLIENT = r"""
import socket, sys, time
vip, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
seen = []
for i in range(n):
    s = socket.create_connection((vip, port), timeout=5)
    s.sendall(b"hello\n")
    seen.append(s.makefile().readline().split()[0])
    s.close()
print(" ".join(seen))
"""


def connect_many(ns: str, vip: str, port: int, n: int) -> list[str]:
    """n fresh TCP connections from ``ns`` to the VIP; who answered each."""
    return sh(sys.executable, "-c", CLIENT, vip, str(port), str(n), ns=ns).split()


PERSISTENT = r"""
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
f = s.makefile("rwb")
for line in sys.stdin:
    f.write(line.encode()); f.flush()
    reply = f.readline()
    sys.stdout.write(reply.decode() if reply else "RESET\n"); sys.stdout.flush()
"""


class Persistent:
    """One long-lived TCP connection from a namespace: ask() sends a line, returns the reply."""

    def __init__(self, ns: str, vip: str, port: int) -> None:
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-u", "-c", PERSISTENT, vip, str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def ask(self, line: str = "ping") -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

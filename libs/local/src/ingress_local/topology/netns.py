"""Network namespaces and veth links of one run: built from an AddressPlan, always removed."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from .addresses import AddressPlan

NETNS_ETC = Path("/etc/netns")


class CommandError(RuntimeError):
    pass


def sh(*cmd: str, ns: str | None = None, check: bool = True, timeout: float = 30.0) -> str:
    prefix = ["ip", "netns", "exec", ns] if ns else []
    proc = subprocess.run(
        [*prefix, *cmd], capture_output=True, text=True, check=False, timeout=timeout
    )
    if check and proc.returncode != 0:
        where = f" (netns {ns})" if ns else ""
        raise CommandError(f"{' '.join(cmd)}{where}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def existing_namespaces() -> set[str]:
    out = sh("ip", "netns", "list", check=False)
    return {line.split()[0] for line in out.splitlines() if line.strip()}


class Network:
    """Creates the namespaces, links, routes and the client's resolv.conf; ``destroy`` undoes
    all of it (also after a partial ``create``)."""

    def __init__(self, plan: AddressPlan, dns_server: str) -> None:
        self.plan = plan
        self.dns_server = dns_server
        self._created: list[str] = []
        self._root_links: list[str] = []

    def create(self) -> None:
        p = self.plan
        for ns in p.namespaces:
            sh("ip", "netns", "add", ns)
            self._created.append(ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            for key in ("ip_forward", "conf.all.rp_filter", "conf.default.rp_filter"):
                value = "1" if key == "ip_forward" else "0"
                sh("sysctl", "-qw", f"net.ipv4.{key}={value}", ns=ns)
        self._veth(p.if_root, None, p.root_addr, p.if_l4_up, p.ns_l4, p.l4_up_addr)
        self._veth(p.if_l4_down, p.ns_l4, p.l4_down_addr, p.if_tor_up, p.ns_tor, p.tor_up_addr)
        self._veth(
            p.if_tor_down, p.ns_tor, p.tor_down_addr, p.if_client, p.ns_client, p.client_addr
        )
        # Static routes for the infrastructure links; the VIPs reach the ToR only through BGP.
        sh("ip", "route", "add", str(p.block), "via", p.l4_up_addr, "dev", p.if_root)
        sh("ip", "-n", p.ns_l4, "route", "add", p.link(9), "via", p.tor_up_addr)
        sh("ip", "-n", p.ns_tor, "route", "add", p.link(1), "via", p.l4_down_addr)
        sh("ip", "-n", p.ns_client, "route", "add", "default", "via", p.tor_down_addr)
        # `ip netns exec <client>` bind-mounts this over /etc/resolv.conf: the client resolves
        # names at our knotd like any host resolves at its DNS server.
        folder = NETNS_ETC / p.ns_client
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "resolv.conf").write_text(
            f"nameserver {self.dns_server}\noptions timeout:1 attempts:2\n"
        )

    def _veth(self, a: str, a_ns: str | None, a_addr: str, b: str, b_ns: str, b_addr: str) -> None:
        sh("ip", "link", "add", a, "type", "veth", "peer", "name", b)
        if a_ns is None:
            self._root_links.append(a)
        else:
            sh("ip", "link", "set", a, "netns", a_ns)
        sh("ip", "link", "set", b, "netns", b_ns)
        for dev, ns, addr in ((a, a_ns, a_addr), (b, b_ns, b_addr)):
            prefix = ["-n", ns] if ns else []
            sh("ip", *prefix, "addr", "add", f"{addr}/30", "dev", dev)
            sh("ip", *prefix, "link", "set", dev, "up")

    def destroy(self) -> list[str]:
        """Kill whatever still runs inside, delete the namespaces (their veths go with them),
        the root end of the L4 link and the client's /etc/netns folder. Returns problems."""
        problems: list[str] = []
        for ns in reversed(self._created):
            pids = sh("ip", "netns", "pids", ns, check=False).split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError, PermissionError):
                    os.kill(int(pid), signal.SIGKILL)
            deadline = time.monotonic() + 5
            while sh("ip", "netns", "pids", ns, check=False).split():
                if time.monotonic() > deadline:
                    problems.append(f"processes still running in {ns}")
                    break
                time.sleep(0.05)
            out = subprocess.run(
                ["ip", "netns", "del", ns], capture_output=True, text=True, check=False
            )
            if out.returncode != 0:
                problems.append(f"ip netns del {ns}: {out.stderr.strip()}")
        self._created.clear()
        for link in self._root_links:
            # Normally gone with its peer's namespace; deleting it here covers a partial start.
            if Path(f"/sys/class/net/{link}").exists():
                sh("ip", "link", "del", link, check=False)
        self._root_links.clear()
        shutil.rmtree(NETNS_ETC / self.plan.ns_client, ignore_errors=True)
        return problems

"""Builders shared by the unit, contract and integration tests."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from typing import Any

import structlog
from ingress_bgp_speaker.settings import BgpSpeakerSettings
from ingress_events import catalogue as c
from ingress_events.bus import Bus
from ingress_runtime import Readiness, ServiceContext

_gen = iter(range(1_000_000, 10**12))


def gen() -> int:
    return next(_gen)


def context(bus: Bus, **settings: Any) -> ServiceContext[BgpSpeakerSettings]:
    values: dict[str, Any] = {"session_poll_seconds": 0.2, "hold_down_seconds": 0.0}
    values.update(settings)
    return ServiceContext(
        name="bgp-speaker",
        settings=BgpSpeakerSettings(**values),
        bus=bus,
        readiness=Readiness(),
        log=structlog.stdlib.get_logger("bgp-speaker-test"),
    )


def pool(
    name: str = "public", cidrs: tuple[str, ...] = ("10.100.0.0/24",), **kw: Any
) -> c.PoolDesired:
    return c.PoolDesired(generation=gen(), pool=name, cidrs=list(cidrs), **kw)


def peer(name: str, address: str, *, password: str | None = None, **kw: Any) -> c.PeerDesired:
    extra: dict[str, Any] = {}
    if password is not None:
        extra["password"] = c.SecretKeyRef(namespace="net", name=f"{name}-md5", key="password")
        extra["password_hash"] = hashlib.sha256(password.encode()).hexdigest()
    values: dict[str, Any] = {"peer_asn": 64500, "local_asn": 64512}
    values.update(kw)
    return c.PeerDesired(generation=gen(), peer=name, address=address, **extra, **values)


def vip(host: str, address: str, pool_name: str = "public") -> c.VipAssigned:
    return c.VipAssigned(
        generation=gen(),
        owner=c.VipOwner(kind="domain", host=host),
        addresses=[address],
        pool=pool_name,
        ports=[c.PortSpec(port=443)],
        observed_generation=1,
    )


def programmed(node: str, address: str, ready: int = 2) -> c.L4Programmed:
    return c.L4Programmed(
        generation=gen(),
        node=node,
        vip=address,
        dataplane="ipvs",
        services=[
            c.VirtualService(port=443, scheduler="mh", real_servers=2, ready_real_servers=ready)
        ],
        observed_generation=1,
    )


def not_ready(node: str, address: str) -> c.L4NotReady:
    return c.L4NotReady(
        generation=gen(), node=node, vip=address, reason="TunnelDown", message="tunnel down"
    )


async def wait_until(
    check: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02
) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)

"""A minimal service built on the runtime, used to test the lifecycle in a real process.

It consumes domain events and, for each, publishes an ``l7.removed`` for the same host, slowly,
so that a SIGTERM always lands while messages are in flight.
"""

from __future__ import annotations

import asyncio

from ingress_events import catalogue as c
from ingress_events.bus import Consumer, ConsumerSpec
from ingress_events.envelope import Envelope
from ingress_runtime import ServiceContext, ServiceSettings, service_main
from pydantic_settings import SettingsConfigDict


class RelaySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="RELAY_", frozen=True)
    delay_seconds: float = 0.005


class RelayApp:
    def __init__(self, ctx: ServiceContext[RelaySettings]) -> None:
        self._ctx = ctx
        self._consumer: Consumer | None = None

    async def _handle(self, env: Envelope[c.Event]) -> None:
        await asyncio.sleep(self._ctx.settings.delay_seconds)
        assert isinstance(env.event, c.DomainDesired)
        await self._ctx.bus.publish(
            c.L7Removed(generation=env.event.generation, host=env.event.host)
        )

    async def start(self) -> None:
        self._ctx.readiness.require("consumer-bound")
        self._consumer = await self._ctx.bus.consume(
            ConsumerSpec("relay", c.Family.DOMAIN, batch=20, fetch_timeout_seconds=0.2),
            self._handle,
        )
        self._ctx.readiness.set("consumer-bound")

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()


if __name__ == "__main__":
    raise SystemExit(service_main("relay", RelaySettings, RelayApp, "test relay"))

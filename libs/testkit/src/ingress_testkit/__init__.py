"""Fixtures shared by every test tier: real nats-server, isolated buses, schema-checked capture."""

from .nats_server import NatsServer, find_nats_server, free_port
from .capture import EventCapture

__all__ = ["EventCapture", "NatsServer", "find_nats_server", "free_port"]

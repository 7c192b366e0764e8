"""Fixtures shared by every test tier: real nats-server, isolated buses, schema-checked capture."""

from .capture import EventCapture
from .nats_server import NatsServer, find_nats_server, free_port

__all__ = ["EventCapture", "NatsServer", "find_nats_server", "free_port"]

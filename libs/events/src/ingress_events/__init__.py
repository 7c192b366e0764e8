"""Ingress Domain events: the versioned catalogue, subjects, CloudEvents envelope and the bus."""

from .bus import (
    Bus,
    BusSettings,
    CasConflict,
    Consumer,
    ConsumerSpec,
    KeyExists,
    KvEntry,
    KvStore,
    PermanentError,
    PublishError,
    ReplayIncomplete,
    RevisionMismatch,
    StreamSettings,
)
from .catalogue import ALL_EVENTS, Event, Family
from .envelope import Envelope, EnvelopeError
from .generation import GenerationClock
from .keys import decode_key, decode_token, encode_key, encode_token
from .state import LatestByKey
from .subjects import Subjects

__all__ = [
    "ALL_EVENTS",
    "Bus",
    "BusSettings",
    "CasConflict",
    "Consumer",
    "ConsumerSpec",
    "Envelope",
    "EnvelopeError",
    "Event",
    "Family",
    "GenerationClock",
    "KeyExists",
    "KvEntry",
    "KvStore",
    "LatestByKey",
    "PermanentError",
    "PublishError",
    "ReplayIncomplete",
    "RevisionMismatch",
    "StreamSettings",
    "Subjects",
    "decode_key",
    "decode_token",
    "encode_key",
    "encode_token",
]

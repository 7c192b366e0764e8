"""Subject and stream naming.

``<root>.v<major>.<family>.<key tokens>``, e.g. ``ingress.v1.domain.shop_example_com`` or
``ingress.v1.l4.node-a.10_0_0_7``. Each key part is encoded by keys.encode_token, so a team can
subscribe to ``ingress.v1.domain.>`` (every domain), ``ingress.v1.l4.node-a.>`` (one node) or
``ingress.v1.vip.service.shop.>`` (one namespace's Services).

Dead letters go to ``<root>.dlq.<consumer>.<original subject without root>``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .catalogue import CATALOGUE_VERSION, Event, Family
from .keys import decode_key, encode_key

DEFAULT_ROOT = "ingress"
_ROOT_RE = re.compile(r"^[a-z][a-z0-9-]{0,31}$")


@dataclass(frozen=True)
class Subjects:
    """Subject names under one root (tests use a root of their own on a shared server)."""

    root: str = DEFAULT_ROOT
    major: int = CATALOGUE_VERSION

    def __post_init__(self) -> None:
        if not _ROOT_RE.match(self.root):
            raise ValueError(f"subject root {self.root!r} must match {_ROOT_RE.pattern}")

    @property
    def prefix(self) -> str:
        return f"{self.root}.v{self.major}"

    def family_wildcard(self, family: Family) -> str:
        return f"{self.prefix}.{family.value}.>"

    def for_key(self, family: Family, key: tuple[str, ...]) -> str:
        return f"{self.prefix}.{family.value}.{encode_key(key)}"

    def for_event(self, event: Event) -> str:
        return self.for_key(event.family, event.key())

    def parse(self, subject: str) -> tuple[Family, tuple[str, ...]]:
        """Split a state subject back into its family and decoded key."""
        head = f"{self.prefix}."
        if not subject.startswith(head):
            raise ValueError(f"{subject!r} is not under {self.prefix}")
        family_token, _, rest = subject[len(head) :].partition(".")
        return Family(family_token), decode_key(rest)

    def stream(self, family: Family) -> str:
        return f"{self.root}_v{self.major}_{family.value}".upper().replace("-", "_")

    @property
    def dlq_wildcard(self) -> str:
        return f"{self.root}.dlq.>"

    @property
    def dlq_stream(self) -> str:
        return f"{self.root}_dlq".upper().replace("-", "_")

    def dlq(self, consumer: str, original_subject: str) -> str:
        tail = (
            original_subject[len(self.root) + 1 :]
            if original_subject.startswith(f"{self.root}.")
            else original_subject
        )
        return f"{self.root}.dlq.{consumer}.{tail}"

"""Bus metrics, registered once per process in the default Prometheus registry.

Every series carries the consumer (or event type) so several services may share one process in
tests and in the local default without clashing.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

PUBLISHED = Counter(
    "ingress_bus_published_total", "Events published and acknowledged by JetStream", ["type"]
)
PUBLISH_FAILURES = Counter(
    "ingress_bus_publish_failures_total", "Publishes that JetStream did not acknowledge", ["type"]
)
CONSUMED = Counter(
    "ingress_bus_consumed_total",
    "Messages handled by a consumer, by outcome (ack, nak, dead_letter, stale)",
    ["consumer", "type", "outcome"],
)
DEAD_LETTERS = Counter(
    "ingress_bus_dead_letters_total",
    "Messages sent to the dead-letter subject",
    ["consumer", "reason"],
)
HANDLE_SECONDS = Histogram(
    "ingress_bus_handle_seconds",
    "Time spent in a consumer's handler per message",
    ["consumer"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
REPLAYED = Counter("ingress_bus_replayed_total", "State messages read during a replay", ["family"])
CONSUMER_PENDING = Gauge(
    "ingress_bus_consumer_pending", "Messages the server still holds for a consumer", ["consumer"]
)

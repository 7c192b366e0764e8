"""Prometheus metrics of bgp-speaker (served on the runtime's admin port)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

SESSION_ESTABLISHED = Gauge(
    "bgp_speaker_session_established",
    "1 when the BGP session to the peer is Established, else 0",
    ["peer"],
)
SESSION_STATE = Gauge(
    "bgp_speaker_session_state",
    "1 for the peer's current BIRD protocol state and BGP state",
    ["peer", "state"],
)
BFD_UP = Gauge(
    "bgp_speaker_bfd_up",
    "1 when the BFD session to the peer is Up, else 0 (peers with BFD on only)",
    ["peer"],
)
ANNOUNCED = Gauge("bgp_speaker_announced_routes", "VIP host routes this node announces")
APPLIES = Counter(
    "bgp_speaker_bird_applies_total",
    "Reconciles against BIRD by outcome (unchanged, applied, refused, failed, unavailable)",
    ["outcome"],
)
APPLY_SECONDS = Histogram(
    "bgp_speaker_bird_apply_seconds",
    "Time to render, check, configure and read back BIRD",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
REJECTIONS = Counter(
    "bgp_speaker_rejections_total", "User objects rejected, by kind and reason", ["kind", "reason"]
)

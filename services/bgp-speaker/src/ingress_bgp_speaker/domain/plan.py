"""Whether BIRD must be reconfigured: compare the rendered config with what is running."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BirdCurrent:
    """What BIRD runs, read back: the config file on disk and BIRD's own view of it."""

    config_text: str | None
    static_routes: frozenset[str]
    """Host prefixes of our static protocols (``show route protocol vips4`` / ``vips6``)."""
    bgp_protocols: frozenset[str]


@dataclass(frozen=True)
class BirdTarget:
    config_text: str
    static_routes: frozenset[str]
    bgp_protocols: frozenset[str]


@dataclass(frozen=True)
class ApplyPlan:
    write: bool
    reason: str


def plan_apply(target: BirdTarget, current: BirdCurrent) -> ApplyPlan:
    """The file alone is not trusted: a configure whose confirm never came is undone by BIRD's
    timeout, leaving the new file on disk and the old config running; BIRD's routes and
    protocols tell."""
    if current.config_text != target.config_text:
        return ApplyPlan(True, "config differs")
    if current.static_routes != target.static_routes:
        return ApplyPlan(True, "BIRD's static routes differ from the config")
    if current.bgp_protocols != target.bgp_protocols:
        return ApplyPlan(True, "BIRD's BGP protocols differ from the config")
    return ApplyPlan(False, "converged")

"""Pure planning for dns-writer: names and zones, route health, (desired, current) -> plan."""

from .health import healthy_vips, next_withdrawn_since, pending_vips, withdrawn_everywhere
from .model import (
    Change,
    Desired,
    NamePlan,
    NameState,
    OwnerRecord,
    Rejection,
    ZoneView,
    record_type,
)
from .names import check_name, registry_name, zone_for
from .plan import apply_to_state, plan_publish, plan_remove, publish_values

__all__ = [
    "Change",
    "Desired",
    "NamePlan",
    "NameState",
    "OwnerRecord",
    "Rejection",
    "ZoneView",
    "apply_to_state",
    "check_name",
    "healthy_vips",
    "next_withdrawn_since",
    "pending_vips",
    "plan_publish",
    "plan_remove",
    "publish_values",
    "record_type",
    "registry_name",
    "withdrawn_everywhere",
    "zone_for",
]

"""Service-level targets: deadlines per kind and priority, a clock that pauses, breach scans.

The resolution clock stops while an order is on hold (waiting for the resident or for parts)
and while it is resolved; a reopened order resumes where it stopped. Escalation fires when an
open order has seen no activity for the escalation target (12 h for P2), excluding pauses.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

from workorders.contract import Kind, Priority, Status
from workorders.models import WorkOrder

PAUSED = frozenset({Status.on_hold, Status.resolved})
OPEN = frozenset({Status.new, Status.accepted, Status.in_progress, Status.on_hold})


@dataclass(frozen=True)
class Targets:
    response: timedelta
    escalation: timedelta
    resolution: timedelta


class SlaPolicy:
    """Targets from configuration: defaults per priority, overridable per kind and priority."""

    def __init__(self, config: dict[str, Any]) -> None:
        self._targets: dict[tuple[Kind, Priority], Targets] = {}
        for kind in Kind:
            for priority in Priority:
                merged = {**config["default"][priority.value]}
                merged.update(config.get("kinds", {}).get(kind.value, {}).get(priority.value, {}))
                self._targets[kind, priority] = Targets(
                    *(
                        timedelta(seconds=float(merged[k]))
                        for k in ("response", "escalation", "resolution")
                    )
                )

    @classmethod
    def from_file(cls, path: Path) -> SlaPolicy:
        return cls(json.loads(path.read_text(encoding="utf-8")))

    def targets(self, kind: Kind, priority: Priority) -> Targets:
        return self._targets[kind, priority]


@lru_cache
def load_policy(path: Path) -> SlaPolicy:
    return SlaPolicy.from_file(path)


def start_clock(order: WorkOrder, targets: Targets, now: datetime) -> None:
    order.created_at = now
    order.updated_at = now
    order.last_activity_at = now
    order.response_due_at = now + targets.response
    order.resolution_due_at = now + targets.resolution
    order.escalation_due_at = now + targets.escalation
    order.paused_seconds = 0.0


def on_transition(
    order: WorkOrder, old: Status, new: Status, targets: Targets, now: datetime
) -> None:
    """Move the clocks for a status change (the caller has checked it is allowed)."""
    order.updated_at = now
    order.last_activity_at = now
    if old == Status.new and new != Status.cancelled and order.first_response_at is None:
        order.first_response_at = now
    if old in PAUSED and order.paused_since is not None:
        paused = (now - order.paused_since).total_seconds()
        order.paused_seconds += paused
        order.resolution_due_at += timedelta(seconds=paused)
        order.paused_since = None
    if new in PAUSED:
        order.paused_since = now
    if old == Status.resolved and new == Status.in_progress:
        order.reopen_count += 1
        order.resolved_at = None
    if new == Status.resolved:
        order.resolved_at = now
    elif new == Status.closed:
        order.closed_at = now
    elif new == Status.cancelled:
        order.cancelled_at = now
    # A new idle period starts with every activity; paused or finished orders do not escalate.
    order.escalated_at = None
    order.escalation_due_at = now + targets.escalation if new in OPEN - PAUSED else None


def touch(order: WorkOrder, targets: Targets, now: datetime) -> None:
    """Activity without a status change (a note, an assignment) restarts the idle timer."""
    order.updated_at = now
    order.last_activity_at = now
    if Status(order.status) in OPEN - PAUSED:
        order.escalated_at = None
        order.escalation_due_at = now + targets.escalation


def response_breached(order: WorkOrder, now: datetime) -> bool:
    return (
        order.first_response_at is None
        and order.status == Status.new
        and order.response_due_at <= now
    )


def resolution_breached(order: WorkOrder, now: datetime) -> bool:
    return Status(order.status) in OPEN - PAUSED and order.resolution_due_at <= now


def escalation_due(order: WorkOrder, now: datetime) -> bool:
    return (
        order.escalation_due_at is not None
        and order.escalated_at is None
        and Status(order.status) in OPEN - PAUSED
        and order.escalation_due_at <= now
    )

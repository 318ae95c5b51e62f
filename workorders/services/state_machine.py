"""The work-order life cycle. The only place that says which status may follow which."""

from __future__ import annotations

from workorders.contract import STATUS_LABELS, Status
from workorders.errors import ApiError

S = Status
TRANSITIONS: dict[Status, frozenset[Status]] = {
    S.new: frozenset({S.accepted, S.cancelled}),
    S.accepted: frozenset({S.in_progress, S.on_hold, S.resolved, S.cancelled}),
    S.in_progress: frozenset({S.on_hold, S.resolved, S.cancelled}),
    S.on_hold: frozenset({S.in_progress, S.resolved, S.cancelled}),
    # Reopening: the resident says it is not fixed after all.
    S.resolved: frozenset({S.in_progress, S.closed}),
    S.closed: frozenset(),
    S.cancelled: frozenset(),
}


def allowed(current: Status) -> list[Status]:
    return sorted(TRANSITIONS[current], key=list(Status).index)


def check(current: Status, target: Status) -> None:
    """Refuse an illegal transition with 409 and say what is allowed instead."""
    if target in TRANSITIONS[current]:
        return
    options = allowed(current)
    hint = (
        "允许改为：" + "、".join(f"{STATUS_LABELS[s]}（{s}）" for s in options)
        if options
        else "该工单已结束，不能再改变状态"
    )
    raise ApiError(
        409,
        "transition_not_allowed",
        f"工单状态不能从“{STATUS_LABELS[current]}”改为“{STATUS_LABELS[target]}”。{hint}。",
        {"from": current.value, "to": target.value, "allowed": [s.value for s in options]},
    )

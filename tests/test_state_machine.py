"""The life cycle: every legal path works, every illegal transition is refused with 409."""

from __future__ import annotations

import pytest

from tests.factories import repair_body, resident_body
from tests.support import Api
from workorders.contract import Status
from workorders.services.state_machine import TRANSITIONS

# A shortest way to reach each status from `new`.
PATHS: dict[Status, list[Status]] = {
    Status.new: [],
    Status.accepted: [Status.accepted],
    Status.in_progress: [Status.accepted, Status.in_progress],
    Status.on_hold: [Status.accepted, Status.in_progress, Status.on_hold],
    Status.resolved: [Status.accepted, Status.in_progress, Status.resolved],
    Status.closed: [Status.accepted, Status.in_progress, Status.resolved, Status.closed],
    Status.cancelled: [Status.cancelled],
}


def test_contract_statuses_are_all_covered() -> None:
    assert set(TRANSITIONS) == set(Status) == set(PATHS)
    open_states = {Status.new, Status.accepted, Status.in_progress, Status.on_hold}
    assert all(Status.cancelled in TRANSITIONS[s] for s in open_states)
    assert TRANSITIONS[Status.closed] == TRANSITIONS[Status.cancelled] == frozenset()


@pytest.mark.parametrize("current", list(Status))
def test_every_illegal_transition_is_refused(api: Api, current: Status) -> None:
    rid = api.call("bot", "POST", "/residents", json=resident_body()).json()["id"]
    order_id = api.call("bot", "POST", "/work-orders", json=repair_body(rid)).json()["id"]
    for step in PATHS[current]:
        moved = api.call("agent", "POST", f"/work-orders/{order_id}/transitions", json={"to": step})
        assert moved.status_code == 200, moved.text
    illegal = [t for t in Status if t != current and t not in TRANSITIONS[current]]
    for target in illegal:
        refused = api.call(
            "agent", "POST", f"/work-orders/{order_id}/transitions", json={"to": target}
        )
        assert refused.status_code == 409, (current, target)
        body = refused.json()
        assert body["code"] == "transition_not_allowed"
        assert body["details"] == {
            "from": current.value,
            "to": target.value,
            "allowed": [s.value for s in Status if s in TRANSITIONS[current]],
        }
    after = api.call("agent", "GET", f"/work-orders/{order_id}").json()
    assert after["status"] == current
    assert len([h for h in after["history"] if h["action"] == "status"]) == len(PATHS[current])

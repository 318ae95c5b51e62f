"""nlu/remote_actions.py: Rasa's check of the action server's answers, validator built once,
judges every answer exactly as `jsonschema.validate` with Rasa's spec does."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
from rasa.core.actions.action import RemoteAction

import nlu.ngram_intents  # noqa: F401 (installs it, as loading the model does)
from nlu.remote_actions import validate_action_result

ANSWERS: list[dict[str, Any]] = [
    {"events": [], "responses": []},
    {
        "events": [
            {"event": "slot", "name": "requested_slot", "value": None, "timestamp": None},
            {"event": "active_loop", "name": "repair_form"},
            {"event": "bot", "text": "好的", "data": {}, "metadata": {}},
        ],
        "responses": [{"text": "已经帮您报修了", "buttons": []}],
    },
    {"events": "slot", "responses": []},
    {"events": [{"event": "slot", "name": 3}], "responses": []},
    {"events": [{"event": "no_such_event"}], "responses": []},
    {"events": [], "responses": ["text"]},
]


def test_rasa_uses_it_once_the_pipeline_is_imported() -> None:
    assert RemoteAction._validate_action_result is validate_action_result


@pytest.mark.parametrize("answer", ANSWERS)
def test_same_verdict_and_message_as_jsonschema_validate(answer: dict[str, Any]) -> None:
    spec = RemoteAction.action_response_format_spec()
    try:
        jsonschema.validate(answer, spec)
        expected = None
    except jsonschema.ValidationError as exc:
        expected = exc.message
    action = RemoteAction("action_test", None)
    if expected is None:
        assert action._validate_action_result(answer) is True
    else:
        with pytest.raises(jsonschema.ValidationError) as raised:
            action._validate_action_result(answer)
        assert raised.value.message.startswith(expected + ". Failed to validate Action server")

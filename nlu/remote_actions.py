"""Rasa's check of the action server's answers, with its validator built once.

Rasa 3.6 checks every answer of the action server with `jsonschema.validate(result, spec)`,
which first checks the spec itself against the JSON Schema 2020-12 metaschema and builds a new
validator: 60-90 ms of CPU for every custom action a turn runs, half of what a dialogue turn
cost the Rasa process (py-spy, bench/README.md `dialogue_turns.py`). The same spec, the same
draft, the same errors (message included), with the spec checked and the validator built once
per process: ~3 ms. Installed when Rasa imports the pipeline's components
(nlu/ngram_intents.py), so every process that loads the model has it.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from jsonschema import exceptions
from jsonschema.protocols import Validator
from jsonschema.validators import validator_for
from rasa.core.actions.action import RemoteAction
from rasa.shared.constants import DOCS_BASE_URL

__all__ = ["install", "validate_action_result"]


@cache
def _validator() -> Validator:
    spec = RemoteAction.action_response_format_spec()
    cls = validator_for(spec)
    cls.check_schema(spec)
    return cls(spec)


def validate_action_result(_action: RemoteAction, result: dict[str, Any]) -> bool:
    """RemoteAction._validate_action_result, as Rasa 3.6 has it, without the per-call setup."""
    error = exceptions.best_match(_validator().iter_errors(result))
    if error is not None:
        error.message += (
            f". Failed to validate Action server response from API, "
            f"make sure your response from the Action endpoint is valid. "
            f"For more information about the format visit "
            f"{DOCS_BASE_URL}/custom-actions"
        )
        raise error
    return True


def install() -> None:
    RemoteAction._validate_action_result = validate_action_result  # type: ignore[method-assign]

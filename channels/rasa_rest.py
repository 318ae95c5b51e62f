"""Rasa's REST channel (same name, same URL: /webhooks/rest/webhook), plus the one thing Rasa
does not do: hear an emergency in a conversation that staff have paused.

Rasa predicts nothing for a paused conversation; the NLU still reads each message. When it
hears `emergency` there, this channel runs `action_screen_paused_emergency` in the same
request (under the conversation's lock), so the alarm is raised and the resident hears the
advice in the reply, while every other message of a paused conversation stays with staff.
What to say and whom to alert is the action's business (actions/emergency.py); this only
makes sure the dialogue gets the chance. Loaded by Rasa from bot/credentials.yml.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from rasa.core.channels.channel import UserMessage
from rasa.core.channels.rest import RestInput
from sanic import Blueprint, Sanic

SCREEN = "action_screen_paused_emergency"


async def screen_paused(message: UserMessage) -> None:
    agent = Sanic.get_app().ctx.agent
    sender = message.sender_id or ""
    async with agent.lock_store.lock(sender):
        tracker = await agent.tracker_store.retrieve(sender)
        if tracker is None or not tracker.is_paused():
            return
        latest = tracker.latest_message
        if latest is None or latest.message_id != message.message_id:
            return
        if (latest.intent or {}).get("name") == "emergency":
            await agent.execute_action(sender, SCREEN, message.output_channel, None, None)


class ScreeningRestInput(RestInput):
    """`rest`, with paused conversations screened for emergencies after each message."""

    def blueprint(self, on_new_message: Callable[[UserMessage], Awaitable[None]]) -> Blueprint:
        async def handle(message: UserMessage) -> None:
            await on_new_message(message)
            await screen_paused(message)

        return super().blueprint(handle)

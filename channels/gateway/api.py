"""The generic JSON endpoint, for channels that cannot push a staff reply (the chat CLI):

    POST /api/messages {conversation, text, client_id} → {replies, state, notice, staff}

Channel `api`; while staff have the conversation they answer by calling the resident back.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, constr

from channels.gateway.deps import gateway, trusted_channel
from channels.gateway.service import Gateway, Incoming
from workorders.contract import Channel

router = APIRouter(prefix="/api", tags=["channels"], dependencies=[Depends(trusted_channel)])


class ApiMessageIn(BaseModel):
    # web- keys are derived from a web chat's secret: nobody may write as one.
    conversation: constr(regex=r"^(?!web-)[A-Za-z0-9_.:@-]{1,100}$")
    text: constr(strip_whitespace=True, min_length=1, max_length=2000, regex=r"^[^\x00]*$")
    client_id: constr(regex=r"^[A-Za-z0-9_.:-]{1,100}$")

    class Config:
        extra = "forbid"


@router.post("/messages")
async def message(body: ApiMessageIn, gw: Gateway = Depends(gateway)) -> dict[str, Any]:
    outcome = await gw.handle(
        Incoming(
            key=body.conversation,
            channel=Channel.api,
            can_push=False,
            text=body.text,
            client_id=body.client_id,
        )
    )
    return outcome.as_dict()

"""Names every part of Linli shares (see ../shared/contract.md).

This module is public: channels, actions and tests import it; it imports nothing of the service.
"""

from __future__ import annotations

from enum import Enum


class StrEnum(str, Enum):
    def __str__(self) -> str:
        return self.value


class Kind(StrEnum):
    medical_appointment = "medical_appointment"
    home_care = "home_care"
    repair = "repair"
    policy_question = "policy_question"
    complaint = "complaint"
    callback = "callback"
    emergency = "emergency"


class Status(StrEnum):
    new = "new"
    accepted = "accepted"
    in_progress = "in_progress"
    on_hold = "on_hold"
    resolved = "resolved"
    closed = "closed"
    cancelled = "cancelled"


class Priority(StrEnum):
    P0 = "P0"
    P1 = "P1"
    P2 = "P2"
    P3 = "P3"


class Channel(StrEnum):
    wechat = "wechat"
    web = "web"  # the resident web chat (channels/gateway)
    hotline = "hotline"
    terminal = "terminal"
    console = "console"
    api = "api"


class Role(StrEnum):
    agent = "agent"
    supervisor = "supervisor"
    admin = "admin"
    service = "service"


class IdentityKind(StrEnum):
    wechat_openid = "wechat_openid"
    phone = "phone"
    terminal = "terminal"
    web = "web"  # a resident web chat on one device (the gateway's conversation key)


# The SIP user an SOS terminal calls the hotline as, and is called back at: terminal-<device id>.
# A prefix, because device ids may be all digits and must never be taken for a phone number.
TERMINAL_SIP_PREFIX = "terminal-"


class TerminalEventType(StrEnum):
    """What a one-button SOS terminal reports (signed, see workorders/signing.py)."""

    sos = "sos"
    heartbeat = "heartbeat"
    self_test = "self_test"


class SosTrigger(StrEnum):
    """How the resident asked for help on the terminal."""

    hold = "hold"  # the button held for 2 s or more
    triple = "triple"  # three quick presses


class CallOutcome(StrEnum):
    """How a hotline or terminal call ended (the call record's `outcome`)."""

    completed = "completed"  # the caller was helped by the assistant
    transferred = "transferred"  # handed to a person (agent, duty phone)
    callback = "callback"  # someone must call back (a callback order was made)
    abandoned = "abandoned"  # the caller hung up before the end
    failed = "failed"  # a technical failure (speech, network, API) ended it


class Speaker(StrEnum):
    """Who said a line of a call transcript."""

    caller = "caller"
    bot = "bot"
    staff = "staff"


OPEN_STATUSES = frozenset({Status.new, Status.accepted, Status.in_progress, Status.on_hold})
DONE_STATUSES = frozenset({Status.resolved, Status.closed})

# Chinese labels used in messages a person reads.
STATUS_LABELS: dict[Status, str] = {
    Status.new: "新建",
    Status.accepted: "已受理",
    Status.in_progress: "处理中",
    Status.on_hold: "挂起",
    Status.resolved: "已办结",
    Status.closed: "已关闭",
    Status.cancelled: "已取消",
}

KIND_LABELS: dict[Kind, str] = {
    Kind.medical_appointment: "看病预约",
    Kind.home_care: "居家养老",
    Kind.repair: "报修",
    Kind.policy_question: "政策咨询",
    Kind.complaint: "投诉",
    Kind.callback: "回电",
    Kind.emergency: "紧急求助",
}

SOS_TRIGGER_LABELS: dict[SosTrigger, str] = {
    SosTrigger.hold: "长按求助键",
    SosTrigger.triple: "连按三次求助键",
}

CALL_OUTCOME_LABELS: dict[CallOutcome, str] = {
    CallOutcome.completed: "已办完",
    CallOutcome.transferred: "已转人工",
    CallOutcome.callback: "待回电",
    CallOutcome.abandoned: "中途挂断",
    CallOutcome.failed: "通话故障",
}

SPEAKER_LABELS: dict[Speaker, str] = {
    Speaker.caller: "来电人",
    Speaker.bot: "邻里助手",
    Speaker.staff: "工作人员",
}

EVENT_STREAM = "linli:events"
"""Redis stream carrying every work-order event (create, status change, SLA, escalation)."""

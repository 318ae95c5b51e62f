"""Request and response bodies. Validation lives here; business rules live in services/."""

from __future__ import annotations

import json
import re
from datetime import date, datetime, timezone
from typing import Any, Literal

from pydantic import (
    BaseModel,
    Field,
    HttpUrl,
    confloat,
    conint,
    conlist,
    constr,
    root_validator,
    validator,
)

from workorders.contract import (
    CallOutcome,
    Channel,
    IdentityKind,
    Kind,
    Priority,
    Role,
    SosTrigger,
    Speaker,
    Status,
    TerminalEventType,
)
from workorders.crypto import normalize_phone

_MOBILE = re.compile(r"^1[3-9]\d{9}$")
_LANDLINE = re.compile(r"^0\d{9,11}$")
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"

Text64 = constr(strip_whitespace=True, min_length=1, max_length=64)
Text200 = constr(strip_whitespace=True, min_length=1, max_length=200)
Text1000 = constr(strip_whitespace=True, min_length=1, max_length=1000)
AddressPart = constr(
    strip_whitespace=True, min_length=1, max_length=10, regex=r"^[0-9A-Za-z一-龥-]+$"
)


def valid_phone(value: str) -> str:
    digits = normalize_phone(value)
    if not (_MOBILE.match(digits) or _LANDLINE.match(digits)):
        raise ValueError("不是有效的手机号或固定电话号码")
    return digits


def valid_id_number(value: str) -> str:
    value = value.strip().upper()
    if not re.fullmatch(r"\d{17}[\dX]", value):
        raise ValueError("身份证号应为18位")
    total = sum(int(d) * w for d, w in zip(value[:17], _ID_WEIGHTS, strict=True))
    if _ID_CHECK[total % 11] != value[-1]:
        raise ValueError("身份证号校验位不正确")
    return value


class Model(BaseModel):
    """Pydantic 1 omits `null` from optional fields' JSON schema; add it, so the OpenAPI
    document describes what clients really send and receive."""

    class Config:
        @staticmethod
        def schema_extra(schema: dict[str, Any], model: type[BaseModel]) -> None:
            for name, field in model.__fields__.items():
                prop = schema.get("properties", {}).get(field.alias or name)
                if prop is not None and field.allow_none:
                    title = prop.pop("title", None)
                    description = prop.pop("description", None)
                    options = prop.pop("anyOf", None) or [dict(prop)]
                    prop.clear()
                    prop["anyOf"] = [*options, {"type": "null"}]
                    if title:
                        prop["title"] = title
                    if description:
                        prop["description"] = description


class Out(Model):
    """Response bodies."""


class Strict(Model):
    class Config:
        extra = "forbid"
        anystr_strip_whitespace = True


# --- errors -----------------------------------------------------------------------------


class ErrorOut(Out):
    code: str = Field(..., description="Machine-readable error code")
    message: str = Field(..., description="Chinese message a person can act on")
    details: dict[str, Any] | None = None


# --- residents --------------------------------------------------------------------------


class Address(Strict):
    building: AddressPart
    unit: AddressPart | None = None  # towers and many older blocks have none: 5号楼1201
    room: AddressPart


class ServiceNotes(Strict):
    mobility: constr(max_length=200) | None = None
    hearing: constr(max_length=200) | None = None
    chronic_illness: constr(max_length=200) | None = None
    other: constr(max_length=500) | None = None


class ContactIn(Strict):
    name: Text64
    relation: constr(strip_whitespace=True, min_length=1, max_length=32)
    phone: str
    notify_on_emergency: bool = True

    _phone = validator("phone", allow_reuse=True)(valid_phone)


class IdentityIn(Strict):
    kind: IdentityKind
    value: constr(strip_whitespace=True, min_length=1, max_length=128)

    @root_validator(skip_on_failure=True)
    def _normalise(cls, values: dict[str, Any]) -> dict[str, Any]:
        if values["kind"] == IdentityKind.phone:
            values["value"] = valid_phone(values["value"])
        return values


class ResidentCreate(Strict):
    name: Text64
    phone: str | None = None
    id_number: str | None = None
    community: Text64
    address: Address | None = None
    birth_year: conint(ge=1900, le=2100) | None = None
    service_notes: ServiceNotes | None = None
    contacts: list[ContactIn] = Field(default_factory=list, max_items=10)
    identities: list[IdentityIn] = Field(default_factory=list, max_items=10)

    _phone = validator("phone", allow_reuse=True)(lambda v: v and valid_phone(v))
    _id = validator("id_number", allow_reuse=True)(lambda v: v and valid_id_number(v))

    @validator("birth_year")
    def _not_future(cls, value: int | None) -> int | None:
        if value is not None and value > date.today().year:
            raise ValueError("出生年份不能晚于今年")
        return value


class ResidentUpdate(Strict):
    name: Text64 | None = None
    phone: str | None = None
    id_number: str | None = None
    address: Address | None = None
    birth_year: conint(ge=1900, le=2100) | None = None
    service_notes: ServiceNotes | None = None
    contacts: list[ContactIn] | None = Field(None, max_items=10)

    _phone = validator("phone", allow_reuse=True)(lambda v: v and valid_phone(v))
    _id = validator("id_number", allow_reuse=True)(lambda v: v and valid_id_number(v))


class AddressOut(Out):
    building: str
    unit: str | None
    room: str
    text: str = Field(..., description="3号楼2单元502 (5号楼1201: no unit), masked 3号楼*单元***")


class ContactOut(Out):
    id: int
    name: str
    relation: str
    phone: str
    notify_on_emergency: bool


class IdentityOut(Out):
    kind: IdentityKind
    value: str


class ResidentOut(Out):
    id: int
    name: str
    phone: str | None
    id_number: str | None
    community: str
    address: AddressOut | None
    birth_year: int | None
    service_notes: ServiceNotes | None
    contacts: list[ContactOut]
    identities: list[IdentityOut]
    masked: bool = Field(..., description="True when personal numbers and the address are masked")
    created_at: datetime


class ResidentPage(Out):
    items: list[ResidentOut]
    total: int
    limit: int
    offset: int


# --- work-order details per kind ------------------------------------------------------------


class MedicalDetails(Strict):
    department: Text64
    slot_id: constr(strip_whitespace=True, min_length=1, max_length=100)
    person: Text64 | None = Field(None, description="For whom, when not the resident (老伴儿)")
    # Filled by the service when the hospital confirms the booking.
    appointment_id: str | None = None
    slot_start: datetime | None = None
    slot_end: datetime | None = None


class HomeCareDetails(Strict):
    service: Text64
    person: Text64 | None = None
    window_start: datetime
    window_end: datetime
    address: Address | None = Field(None, description="Defaults to the resident's address")
    note: Text200 | None = None

    @root_validator(skip_on_failure=True)
    def _window(cls, values: dict[str, Any]) -> dict[str, Any]:
        start, end = values["window_start"], values["window_end"]
        if start.tzinfo is None or end.tzinfo is None:
            raise ValueError("时间必须带时区，例如 2026-11-22T09:00:00+08:00")
        if end <= start:
            raise ValueError("服务时段的结束时间必须晚于开始时间")
        return values


class RepairDetails(Strict):
    category: Text64
    location: Literal["home", "public"]
    place: Text200 | None = Field(None, description="Which public place, e.g. 3号楼电梯")
    description: Text1000
    photos: list[HttpUrl] = Field(default_factory=list, max_items=9)
    address: Address | None = Field(
        None, description="For home repairs; defaults to the resident's"
    )

    @root_validator(skip_on_failure=True)
    def _place(cls, values: dict[str, Any]) -> dict[str, Any]:
        if values["location"] == "public" and not values.get("place"):
            raise ValueError("公共区域报修需要说明具体位置（place）")
        return values


class PolicyQuestionDetails(Strict):
    question: Text1000
    topic: Text64 | None = None


class ComplaintDetails(Strict):
    text: Text1000
    about_order_id: conint(ge=1, le=2**31 - 1) | None = None


class CallbackDetails(Strict):
    reason: Text200
    summary: Text1000 | None = None
    phone: str | None = Field(None, description="Number to call back; defaults to the resident's")

    _phone = validator("phone", allow_reuse=True)(lambda v: v and valid_phone(v))


class EmergencyDetails(Strict):
    description: Text1000 | None = None
    source: constr(max_length=64) | None = Field(None, description="e.g. the SOS terminal id")
    danger: constr(max_length=32) | None = Field(
        None, description="The danger recognised (data/emergencies.yml): gas, fire, fall …"
    )
    during_takeover: bool | None = Field(
        None, description="Raised while staff owned the conversation: they see it flagged"
    )
    # Filled by the service from the resident's profile at creation, or by PATCH …/whereabouts.
    address: Address | None = None
    location: Text200 | None = Field(None, description="Where the person is, in their words")
    at_home: bool | None = Field(None, description="Said whether they are at the address")
    service_notes: ServiceNotes | None = None
    caller_phone: str | None = None

    _phone = validator("caller_phone", allow_reuse=True)(lambda v: v and valid_phone(v))


class WhereaboutsIn(Strict):
    """Where the person in an emergency is and how to reach them, as they say it, one answer
    at a time: what is given replaces what the order had, the rest stays."""

    address: Address | None = None
    location: Text200 | None = Field(None, description="Free words: 小区东门, 菜市场旁边")
    at_home: bool | None = Field(
        None, description="true: at the address on file; false: somewhere else (say where)"
    )
    phone: str | None = Field(None, description="A number that reaches them now")

    _phone = validator("phone", allow_reuse=True)(lambda v: v and valid_phone(v))

    @root_validator(skip_on_failure=True)
    def _something(cls, values: dict[str, Any]) -> dict[str, Any]:
        if all(values.get(k) is None for k in ("address", "location", "at_home", "phone")):
            raise ValueError("请至少提供地址、位置、是否在家或电话中的一项")
        return values


DETAILS_BY_KIND: dict[Kind, type[Strict]] = {
    Kind.medical_appointment: MedicalDetails,
    Kind.home_care: HomeCareDetails,
    Kind.repair: RepairDetails,
    Kind.policy_question: PolicyQuestionDetails,
    Kind.complaint: ComplaintDetails,
    Kind.callback: CallbackDetails,
    Kind.emergency: EmergencyDetails,
}


# --- work orders ------------------------------------------------------------------------


class OrderCreate(Strict):
    kind: Kind
    channel: Channel
    priority: Priority | None = Field(None, description="Default: P0 for emergencies, else P2")
    resident_id: conint(ge=1, le=2**31 - 1) | None = Field(
        None, description="Required except for emergencies and callbacks from unknown callers"
    )
    details: dict[str, Any] = Field(..., description="Shape depends on kind; see DETAILS_BY_KIND")
    scheduled_at: datetime | None = None
    notes: Text1000 | None = None
    assignee_team: Text64 | None = None
    proxy_id: conint(ge=1, le=2**31 - 1) | None = Field(
        None,
        description="A family member acting for the resident (代办): their proxy, which must be "
        "active (the elder consented) and the resident's, else 403 proxy_not_active",
    )

    @root_validator(skip_on_failure=True)
    def _by_kind(cls, values: dict[str, Any]) -> dict[str, Any]:
        kind = values["kind"]
        values["details"] = (
            # Through JSON, so datetimes and URLs are stored in their ISO/str form.
            json.loads(DETAILS_BY_KIND[kind].parse_obj(values["details"]).json(exclude_none=True))
        )
        if values.get("resident_id") is None and kind not in (Kind.emergency, Kind.callback):
            raise ValueError("除紧急求助和回电外，工单必须关联居民（resident_id）")
        if kind == Kind.medical_appointment:
            for server_field in ("appointment_id", "slot_start", "slot_end"):
                if server_field in values["details"]:
                    raise ValueError(f"details.{server_field} 由系统在预约成功后填写")
        scheduled = values.get("scheduled_at")
        if scheduled is not None and scheduled.tzinfo is None:
            raise ValueError("scheduled_at 必须带时区")
        return values


class TransitionIn(Strict):
    to: Status
    reason: constr(strip_whitespace=True, max_length=500) | None = None
    proxy_id: conint(ge=1, le=2**31 - 1) | None = Field(
        None, description="A family member acting for the resident (代办): their active proxy"
    )


class AssignIn(Strict):
    assignee_id: conint(ge=1, le=2**31 - 1) | None = None
    team: Text64 | None = None

    @root_validator(skip_on_failure=True)
    def _someone(cls, values: dict[str, Any]) -> dict[str, Any]:
        if values.get("assignee_id") is None and values.get("team") is None:
            raise ValueError("请指定处理人（assignee_id）或班组（team）")
        return values


class ScheduleIn(Strict):
    scheduled_at: datetime = Field(
        ..., description="When staff come or the service starts, with its time zone"
    )

    @validator("scheduled_at")
    def _zoned(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("scheduled_at 必须带时区")
        return value


class RatingIn(Strict):
    score: conint(ge=1, le=5)
    comment: constr(strip_whitespace=True, max_length=500) | None = None
    proxy_id: conint(ge=1, le=2**31 - 1) | None = Field(
        None, description="A family member acting for the resident (代办): their active proxy"
    )


class NoteIn(Strict):
    text: Text1000


class NotificationResultIn(Strict):
    """How a `notification.requested` event was delivered (the hotline's call to a family
    contact). Idempotent by `event_id`: a worker that retries reports once."""

    event_id: conint(ge=1, le=2**63 - 1) = Field(..., description="The event's `event_id`")
    outcome: Literal["acknowledged", "answered", "no_answer", "failed"] = Field(
        ...,
        description="acknowledged: the person confirmed (key 1), which stops the escalation "
        "chain; answered: heard it without confirming; no_answer; failed: could not be placed",
    )
    contact_id: conint(ge=1, le=2**31 - 1) | None = None
    proxy_id: conint(ge=1, le=2**31 - 1) | None = Field(
        None, description="A family member acting for the elder, told on WeChat"
    )
    detail: constr(max_length=200) | None = None


class HistoryOut(Out):
    at: datetime
    actor_id: int | None
    action: str
    from_status: Status | None
    to_status: Status | None
    reason: str | None


class SlaOut(Out):
    response_due_at: datetime
    resolution_due_at: datetime
    escalation_due_at: datetime | None
    response_breached: bool
    resolution_breached: bool
    escalated: bool
    paused_seconds: float
    paused_since: datetime | None


class RatingOut(Out):
    score: int
    comment: str | None
    rated_at: datetime


class RequestedByOut(Out):
    proxy_id: int
    name: str = Field(..., description="The family member; masked (李*明) unless revealed")
    relation: str


class OrderOut(Out):
    id: int
    kind: Kind
    status: Status
    priority: Priority
    channel: Channel
    resident_id: int | None
    community: str | None
    details: dict[str, Any]
    notes: str | None
    scheduled_at: datetime | None
    assignee_id: int | None
    assignee_team: str | None
    related_order_id: int | None
    created_at: datetime
    updated_at: datetime
    first_response_at: datetime | None
    resolved_at: datetime | None
    closed_at: datetime | None
    cancelled_at: datetime | None
    reopen_count: int
    sla: SlaOut
    rating: RatingOut | None
    allowed_transitions: list[Status]
    requested_by: RequestedByOut | None = Field(
        None, description="A family member made it for the resident (代办)"
    )
    masked: bool


class PhotoOut(Out):
    id: int
    content_type: Literal["image/jpeg", "image/png"]
    size: int = Field(..., description="Bytes")
    created_at: datetime


class OrderDetailOut(OrderOut):
    history: list[HistoryOut]
    photos: list[PhotoOut] = Field(
        default_factory=list,
        description="Photos the resident sent (oldest first); the image at "
        "GET /work-orders/{id}/photos/{photo_id} (staff, audited)",
    )


class PhotoAttachedOut(Out):
    order_id: int = Field(..., description="The repair order the photo was kept with")
    photo_id: int


class OrderPage(Out):
    items: list[OrderOut]
    total: int
    limit: int
    offset: int


# --- family members acting for an elder (代办) ----------------------------------------------

ProxyStatus = Literal["requested", "active", "refused", "withdrawn"]
ProxyVia = Literal["hotline", "console"]


class ProxyRequestIn(Strict):
    identity: IdentityIn = Field(..., description="Who asks: today a WeChat openid")
    name: Text64 = Field(..., description="The family member's name")
    relation: constr(strip_whitespace=True, min_length=1, max_length=32) = Field(
        ..., description="儿子, 女儿, 老伴 …"
    )
    phone: str | None = None

    _phone = validator("phone", allow_reuse=True)(lambda v: v and valid_phone(v))


class ConsentIn(Strict):
    granted: bool
    via: ProxyVia = Field(..., description="hotline: svc-hotline (proxies:consent); console: staff")
    event_id: constr(strip_whitespace=True, min_length=1, max_length=64) | None = Field(
        None, description="The proxy.consent_requested event answered (kept in the audit entry)"
    )


class WithdrawIn(Strict):
    via: ProxyVia


class ProxyBriefOut(Out):
    id: int
    resident_id: int
    resident_name: str = Field(..., description="Masked: 李*英")
    relation: str
    status: ProxyStatus


class ProxyIdentityOut(Out):
    kind: IdentityKind
    value: str


class ProxyOut(Out):
    id: int
    resident_id: int
    resident_name: str = Field(..., description="Masked (李*英) unless staff reveal")
    name: str = Field(..., description="The family member; masked unless staff reveal")
    relation: str
    phone: str | None = Field(..., description="Masked unless staff reveal")
    status: ProxyStatus
    requested_at: datetime
    decided_at: datetime | None
    decided_via: ProxyVia | None
    withdrawn_at: datetime | None
    identity: ProxyIdentityOut | None = Field(
        None,
        description="The family member's channel identity: only for the services that write to "
        "them (proxies:request), so the channel can tell them the elder's answer and alerts",
    )


# --- staff and auth -------------------------------------------------------------------------


class LoginIn(Strict):
    username: Text64
    password: constr(min_length=1, max_length=200)


class TokenOut(Out):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_at: datetime | None


class PrincipalCreate(Strict):
    username: constr(strip_whitespace=True, min_length=3, max_length=64, regex=r"^[a-z0-9_.-]+$")
    display_name: Text64
    role: Role
    password: constr(min_length=8, max_length=200) | None = None
    scopes: list[str] = Field(default_factory=list, description="Service accounts only")
    team: Text64 | None = None


class PrincipalOut(Out):
    id: int
    username: str
    display_name: str
    role: Role
    scopes: list[str]
    team: str | None
    active: bool


class AuditOut(Out):
    id: int
    at: datetime
    principal_id: int
    action: str
    resource_type: str
    resource_id: int | None
    detail: str | None


class AuditPage(Out):
    items: list[AuditOut]
    total: int
    limit: int
    offset: int


# --- events --------------------------------------------------------------------------------


class EventOut(Out):
    id: str = Field(..., description="Redis stream id; pass it back as `after` to resume")
    type: str
    order_id: int | None
    data: dict[str, Any]


class EventPage(Out):
    items: list[EventOut]
    last_id: str


# --- SOS terminals -------------------------------------------------------------------------

DeviceId = constr(
    strip_whitespace=True, min_length=1, max_length=64, regex=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"
)


class TerminalCreate(Strict):
    device_id: DeviceId = Field(..., description="The id printed on the device, e.g. sos-0000")
    resident_id: conint(ge=1, le=2**31 - 1)


class TerminalOut(Out):
    id: int
    device_id: str = Field(..., description="Masked (sos***00) unless revealed")
    resident_id: int
    active: bool
    online: bool = Field(..., description="Heard from within two heartbeat intervals")
    heartbeat_seconds: int
    last_seen_at: datetime | None
    silent_since: datetime | None = Field(
        None, description="Flagged as silent by the sweep (a visit order was made)"
    )
    visit_order_id: int | None
    last_self_test_at: datetime | None
    status: dict[str, Any] | None = Field(None, description="What the last heartbeat reported")
    secret_rotated_at: datetime
    created_at: datetime
    masked: bool


class TerminalSecretOut(TerminalOut):
    secret: str = Field(..., description="Shown only now: store it on the device")
    signing: dict[str, str] = Field(..., description="How to sign requests with it")


class TerminalSipDigestOut(Out):
    """For the hotline to check a terminal's SIP digest answer (RFC 2617/8760)."""

    terminal_id: int
    resident_id: int
    username: str = Field(..., description="The SIP user the terminal calls as: terminal-<id>")
    realm: str
    ha1: dict[str, str] = Field(
        ..., description="Algorithm (MD5, SHA-256) -> hex H(username:realm:password)"
    )


class TerminalPage(Out):
    items: list[TerminalOut]
    total: int
    limit: int
    offset: int


class TerminalInfo(Strict):
    firmware: constr(max_length=32) | None = None
    queue_depth: conint(ge=0, le=1_000_000) | None = None
    uptime_seconds: conint(ge=0, le=10**10) | None = None
    battery_percent: conint(ge=0, le=100) | None = None
    sip_contact: constr(max_length=200, regex=r"^sip:[\x21-\x7e]+$") | None = Field(
        None, description="Where the hotline calls the terminal back (SIP URI)"
    )


class TerminalEventIn(Strict):
    """One signed event. Its bytes must not change between retries: they are signed and
    `event_id` is the idempotency key."""

    event_id: constr(regex=r"^[A-Za-z0-9_-]{8,64}$") = Field(
        ..., description="Chosen by the device once per event; retries reuse it"
    )
    type: TerminalEventType
    occurred_at: datetime = Field(..., description="When it happened on the device (with zone)")
    trigger: SosTrigger | None = Field(None, description="sos only: hold or triple press")
    info: TerminalInfo | None = None

    @validator("occurred_at")
    def _aware(cls, value: datetime) -> datetime:
        # A device clock may be far off (no RTC before NTP): never refuse an SOS for that;
        # the service shows the press time only when it is plausible.
        if value.tzinfo is None:
            raise ValueError("occurred_at 必须带时区")
        return value


class TerminalEventOut(Out):
    event_id: str
    type: TerminalEventType
    status: Literal["created", "joined", "duplicate", "recorded"] = Field(
        ...,
        description="created: a new emergency order; joined: added to the open one; "
        "duplicate: this event was already received (a retry); recorded: heartbeat/self-test",
    )
    order_id: int | None
    message: str = Field(..., description="Chinese text the device may speak")
    heartbeat_seconds: int = Field(..., description="How often the device should report")
    server_time: datetime


# --- call records ----------------------------------------------------------------------------

# What telephony systems put where a withheld number would be.
_WITHHELD = frozenset({"", "anonymous", "unknown", "private", "restricted", "unavailable"})
_CALLER = re.compile(r"^\+?[0-9 ()\-]{1,32}$")
# A call is recorded whatever its length, but not a day-long one: that is a clock error.
MAX_CALL = 24 * 3600


def caller_number(value: str | None) -> str | None:
    """The caller as received: digits (like other phone fields), or None when withheld.

    Every call must leave a record, so extensions and foreign numbers are kept, not refused
    as `valid_phone` would; only what is not a number at all is refused.
    """
    if value is None or value.strip().lower() in _WITHHELD:
        return None
    digits = normalize_phone(value)
    if not _CALLER.match(value.strip()) or not digits:
        raise ValueError(
            "来电号码只能含数字（可带 +、空格、括号、短横线）；号码隐藏时传 anonymous 或不传"
        )
    return digits


def _plausible(value: datetime) -> bool:
    """Within what a call's clock can say (and what every database stores)."""
    try:
        return 1970 <= value.astimezone(timezone.utc).year < 2100
    except OverflowError:
        return False


class CallTurn(Strict):
    at: datetime = Field(..., description="When the line was said (with zone)")
    speaker: Speaker
    text: constr(max_length=2000) = Field(
        ..., description="What was said; numbers in it are masked before it is stored"
    )
    confidence: confloat(ge=0, le=1) | None = Field(
        None, description="Speech recognition confidence (caller lines)"
    )

    @validator("at")
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("at 必须带时区")
        return value


class CallCreate(Strict):
    """One finished call. `call_id` is its idempotency key: the same body again is answered
    with the record (200), a different body under the same id is refused (422)."""

    call_id: constr(min_length=1, max_length=255, regex=r"^[\x21-\x7e]+$") = Field(
        ..., description="The SIP Call-ID (or the channel's own unique call id)"
    )
    channel: Literal["hotline", "terminal"]
    caller: constr(max_length=64) | None = Field(
        None, description="Caller number as received; empty, null or anonymous when withheld"
    )
    resident_id: conint(ge=1, le=2**31 - 1) | None = Field(
        None, description="The resident recognised on the call, if any"
    )
    started_at: datetime
    ended_at: datetime
    outcome: CallOutcome
    transcript: list[CallTurn] = Field(default_factory=list, max_items=2000)
    order_ids: list[conint(ge=1, le=2**31 - 1)] = Field(
        default_factory=list, max_items=50, description="Work orders made during the call"
    )
    keypad: constr(max_length=200, regex=r"^[0-9*#A-Da-d]*$") | None = Field(
        None, description="DTMF digits pressed, in order"
    )
    transfer_target: constr(min_length=1, max_length=64) | None = Field(
        None, description="Whom the call was transferred to (team, account or number)"
    )
    audio_path: constr(min_length=1, max_length=500, regex=r"^[^\r\n]+$") | None = Field(
        None, description="Where the recording is; refused unless KEEP_CALL_AUDIO is on"
    )

    _caller = validator("caller", allow_reuse=True)(caller_number)

    @validator("order_ids")
    def _once_each(cls, value: list[int]) -> list[int]:
        return list(dict.fromkeys(value))

    @root_validator(skip_on_failure=True)
    def _times(cls, values: dict[str, Any]) -> dict[str, Any]:
        start, end = values["started_at"], values["ended_at"]
        if start.tzinfo is None or end.tzinfo is None:
            raise ValueError("started_at 和 ended_at 必须带时区")
        if not (_plausible(start) and _plausible(end)):
            raise ValueError("started_at 和 ended_at 应在1970年到2100年之间")
        if end < start:
            raise ValueError("ended_at 不能早于 started_at")
        if (end - start).total_seconds() > MAX_CALL:
            raise ValueError("一通电话不会超过24小时，请检查 started_at 和 ended_at")
        return values


class CallTurnOut(Out):
    at: datetime
    speaker: Speaker
    text: str = Field(..., description="As stored: phone and ID numbers masked")
    confidence: float | None


class CallOut(Out):
    id: int
    call_id: str
    channel: Channel
    caller: str | None = Field(
        ..., description="Masked (138****5678) unless revealed; null when withheld"
    )
    resident_id: int | None
    started_at: datetime
    ended_at: datetime
    duration_seconds: float
    outcome: CallOutcome
    order_ids: list[int]
    turns: int = Field(..., description="Lines in the transcript")
    summary: str | None = Field(
        ..., description="The caller's first words (masked), so a list says what it was about"
    )
    transfer_target: str | None
    has_audio: bool
    created_at: datetime
    masked: bool = Field(..., description="True when the caller number is masked")


class CallDetailOut(CallOut):
    transcript: list[CallTurnOut]
    keypad: str | None = Field(..., description="Digits pressed (numbers masked)")
    audio_path: str | None


class CallPage(Out):
    items: list[CallOut]
    total: int
    limit: int
    offset: int


# --- conversations ------------------------------------------------------------------------

ConversationKey = constr(regex=r"^[A-Za-z0-9_.:@-]{1,128}$")
MessageText = constr(strip_whitespace=True, min_length=1, max_length=2000)
ConversationState = Literal["bot", "waiting", "staff"]


class MessageIn(Strict):
    role: Literal["resident", "bot"]
    text: MessageText
    client_id: constr(min_length=1, max_length=128, regex=r"^[\x21-\x7e]+$") | None = Field(
        None, description="The channel's id of the message: the same id again is a no-op"
    )


class MessagesIn(Strict):
    """What a channel records: the resident's message, or the bot's replies to it."""

    channel: Channel
    can_push: bool = Field(
        False, description="The channel can deliver a staff reply at any time (web chat)"
    )
    resident_id: conint(ge=1, le=2**31 - 1) | None = None
    messages: conlist(MessageIn, min_items=1, max_items=20)


class HandoffIn(Strict):
    """Sent by the dialogue when it hands the conversation to a person."""

    channel: Channel
    reason: Literal["request_human", "not_understood", "complaint"]
    summary: constr(max_length=4000) | None = None
    order_id: conint(ge=1, le=2**31 - 1) | None = None
    resident_id: conint(ge=1, le=2**31 - 1) | None = None


class ReplyIn(Strict):
    text: MessageText


class HandBackIn(Strict):
    note: constr(strip_whitespace=True, max_length=500) | None = Field(
        None, description="What staff settled, so the bot does not ask it again"
    )


class CloseIn(Strict):
    outcome: constr(strip_whitespace=True, min_length=1, max_length=500)


class HandoffOut(Out):
    id: int
    reason: str
    summary: str | None
    order_id: int | None
    opened_at: datetime
    claimed_by: int | None
    claimed_by_name: str | None
    claimed_at: datetime | None
    ended_at: datetime | None
    end_kind: Literal["handed_back", "closed"] | None
    outcome: str | None
    alerts_sent: int


class ReachIn(Strict):
    """How far a staff reply can reach the resident now, as the channel knows it (WeChat:
    customer-service messages until 48 h after the resident's last message, at most 5 per
    message). Reported again whenever it changes; the latest report stands."""

    open_until: datetime | None = Field(
        ..., description="Until when replies can be sent (with a time zone); null: not now"
    )
    sends_left: conint(strict=True, ge=0, le=5) = Field(
        ..., description="How many more replies the channel may send in that window"
    )

    @validator("open_until", pre=True)
    def _iso(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, str):
            raise ValueError("open_until 应为带时区的时间，例如 2026-12-07T09:30:00+08:00")
        return value

    @validator("open_until")
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("open_until 必须带时区，例如 2026-12-07T09:30:00+08:00")
        try:
            return value.astimezone(timezone.utc)
        except OverflowError:
            raise ValueError("open_until 超出了可以表示的时间范围") from None


class ReachOut(Out):
    open_until: datetime | None = Field(..., description="Until when replies can be sent")
    sends_left: int = Field(..., description="How many more replies may be sent until then")


class UndeliverableIn(Strict):
    """The channel refused a staff reply (WeChat's `errcode`) and what it did instead."""

    code: conint(strict=True, ge=-(2**31), le=2**31 - 1) = Field(
        ..., description="The channel's error code (WeChat: 45015, 45047, 43004, 40003 …)"
    )
    fallback: Literal["subscribe", "callback"] = Field(
        ...,
        description="subscribe: the resident was sent a subscription message, the reply waits "
        "for them to write again; callback: the reply is given up, staff call the resident",
    )


class UndeliveredOut(Out):
    code: int
    reason: str = Field(..., description="Why, in Chinese, for staff")
    fallback: Literal["subscribe", "callback"]


class ConversationOut(Out):
    key: str
    channel: Channel
    can_push: bool
    resident_id: int | None
    resident_name: str | None = Field(..., description="Masked unless revealed")
    state: ConversationState
    handoff: HandoffOut | None = Field(..., description="The open hand-over, if any")
    reach: ReachOut | None = Field(
        ..., description="How far a reply reaches now, as the channel reported; null: no limits"
    )
    created_at: datetime
    last_message_at: datetime


class MessageOut(Out):
    id: int
    at: datetime
    role: Literal["resident", "bot", "staff", "system"]
    author: str | None = Field(..., description="Display name of the staff member")
    text: str = Field(..., description="Numbers masked")
    delivered_at: datetime | None
    undelivered: UndeliveredOut | None = Field(
        ..., description="A staff reply the channel refused, and what was done instead"
    )


class ConversationDetailOut(ConversationOut):
    messages: list[MessageOut]
    handoffs: list[HandoffOut] = Field(..., description="Every hand-over, newest first")


class ConversationPage(Out):
    items: list[ConversationOut]
    total: int
    limit: int
    offset: int


class StateOut(Out):
    """What a channel needs to know: whether the bot may answer, and who has it otherwise."""

    state: ConversationState
    handoff_id: int | None
    handoff: HandoffOut | None = Field(..., description="The open hand-over, if any")
    last_handback: HandoffOut | None = Field(
        ..., description="The latest hand-over that ended: the gateway resumes the bot once"
    )


class RecordedOut(StateOut):
    message_ids: list[int]


class HandoffOpenedOut(Out):
    handoff: HandoffOut
    office_open: bool
    answer_from: datetime = Field(..., description="When staff answer (now, if open)")


class OutboundOut(Out):
    """A staff reply waiting to be delivered, in its exact words (for the channel only)."""

    id: int
    at: datetime
    text: str
    author: str | None

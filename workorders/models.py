"""Tables. Personal data lives only in `Encrypted*` columns; look-ups use keyed hashes."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import deferred, relationship
from sqlalchemy.types import TypeDecorator

from workorders.crypto import EncryptedBytes, EncryptedJSON, EncryptedText
from workorders.db import Base


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class TZDateTime(TypeDecorator[datetime]):
    """Timezone-aware datetimes on SQLite as well: stored as UTC, read back as aware UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


class Resident(Base):
    __tablename__ = "residents"

    id = Column(Integer, primary_key=True)
    name = Column(String(64), nullable=False)
    phone = Column(EncryptedText, nullable=True)
    phone_hash = Column(String(64), nullable=True, index=True)
    id_number = Column(EncryptedText, nullable=True)
    id_number_hash = Column(String(64), nullable=True, unique=True)
    community = Column(String(64), nullable=False, index=True)
    # {"building": "3", "unit": "2", "room": "502"}
    address = Column(EncryptedJSON, nullable=True)
    birth_year = Column(Integer, nullable=True)
    # {"mobility": ..., "hearing": ..., "chronic_illness": ..., "other": ...}: health data.
    service_notes = Column(EncryptedJSON, nullable=True)
    created_at = Column(TZDateTime(), nullable=False, default=utcnow)
    updated_at = Column(TZDateTime(), nullable=False, default=utcnow, onupdate=utcnow)

    contacts = relationship(
        "FamilyContact", cascade="all, delete-orphan", order_by="FamilyContact.id", lazy="selectin"
    )
    identities = relationship(
        "Identity", cascade="all, delete-orphan", order_by="Identity.id", lazy="selectin"
    )


class FamilyContact(Base):
    __tablename__ = "family_contacts"

    id = Column(Integer, primary_key=True)
    resident_id = Column(ForeignKey("residents.id", ondelete="CASCADE"), nullable=False, index=True)
    name = Column(String(64), nullable=False)
    relation = Column(String(32), nullable=False)
    phone = Column(EncryptedText, nullable=False)
    notify_on_emergency = Column(Boolean, nullable=False, default=True)


class Identity(Base):
    """A channel identity (WeChat openid, caller number, SOS terminal) linked to a resident."""

    __tablename__ = "identities"
    __table_args__ = (UniqueConstraint("kind", "value_hash", name="uq_identity_kind_value"),)

    id = Column(Integer, primary_key=True)
    resident_id = Column(ForeignKey("residents.id", ondelete="CASCADE"), nullable=False, index=True)
    kind = Column(String(32), nullable=False)
    value = Column(EncryptedText, nullable=False)
    value_hash = Column(String(64), nullable=False)
    created_at = Column(TZDateTime(), nullable=False, default=utcnow)


class Principal(Base):
    """Someone who calls the API: a staff member (role) or a service account (scopes)."""

    __tablename__ = "principals"

    id = Column(Integer, primary_key=True)
    username = Column(String(64), nullable=False, unique=True)
    display_name = Column(String(64), nullable=False)
    role = Column(String(16), nullable=False)
    # Service accounts only: the rights they were given (see security.SCOPES).
    scopes = Column(JSON, nullable=False, default=list)
    team = Column(String(64), nullable=True)
    password_hash = Column(String(200), nullable=True)
    active = Column(Boolean, nullable=False, default=True)
    created_at = Column(TZDateTime(), nullable=False, default=utcnow)


class ApiToken(Base):
    __tablename__ = "api_tokens"

    token_hash = Column(String(64), primary_key=True)
    principal_id = Column(ForeignKey("principals.id", ondelete="CASCADE"), nullable=False)
    expires_at = Column(TZDateTime(), nullable=True)
    created_at = Column(TZDateTime(), nullable=False, default=utcnow)


class WorkOrder(Base):
    __tablename__ = "work_orders"
    __table_args__ = (
        Index("ix_orders_created", "created_at"),
        Index("ix_orders_status", "status"),
        Index("ix_orders_resident_status", "resident_id", "status"),
    )

    id = Column(Integer, primary_key=True)
    kind = Column(String(32), nullable=False)
    status = Column(String(16), nullable=False)
    priority = Column(String(2), nullable=False)
    channel = Column(String(16), nullable=False)
    resident_id = Column(ForeignKey("residents.id"), nullable=True)
    # Copied from the resident at creation so statistics group without decrypting anything.
    community = Column(String(64), nullable=True, index=True)
    details = Column(EncryptedJSON, nullable=False)
    notes = Column(EncryptedText, nullable=True)
    scheduled_at = Column(TZDateTime(), nullable=True)
    assignee_id = Column(ForeignKey("principals.id"), nullable=True)
    assignee_team = Column(String(64), nullable=True)
    related_order_id = Column(ForeignKey("work_orders.id"), nullable=True)
    created_by = Column(ForeignKey("principals.id"), nullable=True)
    created_at = Column(TZDateTime(), nullable=False, default=utcnow)
    updated_at = Column(TZDateTime(), nullable=False, default=utcnow)
    # SLA bookkeeping (see services/sla.py).
    first_response_at = Column(TZDateTime(), nullable=True)
    response_due_at = Column(TZDateTime(), nullable=False)
    resolution_due_at = Column(TZDateTime(), nullable=False)
    escalation_due_at = Column(TZDateTime(), nullable=True)
    last_activity_at = Column(TZDateTime(), nullable=False, default=utcnow)
    # Start of the current pause of the resolution clock (on_hold, or resolved until reopened).
    paused_since = Column(TZDateTime(), nullable=True)
    paused_seconds = Column(Float, nullable=False, default=0.0)
    response_breached_at = Column(TZDateTime(), nullable=True)
    resolution_breached_at = Column(TZDateTime(), nullable=True)
    escalated_at = Column(TZDateTime(), nullable=True)
    resolved_at = Column(TZDateTime(), nullable=True)
    closed_at = Column(TZDateTime(), nullable=True)
    cancelled_at = Column(TZDateTime(), nullable=True)
    reopen_count = Column(Integer, nullable=False, default=0)
    rating = Column(Integer, nullable=True)
    rating_comment = Column(EncryptedText, nullable=True)
    rated_at = Column(TZDateTime(), nullable=True)

    # Set when a family member asked for the elder (代办): who, through their consent.
    proxy_id = Column(ForeignKey("proxies.id"), nullable=True)

    history = relationship(
        "OrderHistory", order_by="OrderHistory.id", lazy="select", cascade="all, delete-orphan"
    )
    proxy = relationship("Proxy", lazy="selectin")
    # Without their bytes (deferred): an order's detail lists them, the photo route reads one.
    photos = relationship(
        "OrderPhoto", order_by="OrderPhoto.id", lazy="select", passive_deletes=True
    )


class Proxy(Base):
    """A family member who may act for an elder (代办) once the elder consents.

    The family member is known by a channel identity (today a WeChat openid), stored encrypted
    and found by the same keyed hash as `Identity.value_hash`. `status`: requested (waiting for
    the elder), active (consented), refused, withdrawn; at most one requested or active proxy
    per elder and identity (a partial unique index).
    """

    __tablename__ = "proxies"
    __table_args__ = (
        Index(
            "uq_proxies_open",
            "resident_id",
            "identity_hash",
            unique=True,
            sqlite_where=text("status IN ('requested', 'active')"),
            postgresql_where=text("status IN ('requested', 'active')"),
        ),
        Index("ix_proxies_identity", "identity_kind", "identity_hash"),
    )

    id = Column(Integer, primary_key=True)
    resident_id = Column(ForeignKey("residents.id", ondelete="CASCADE"), nullable=False, index=True)
    identity_kind = Column(String(32), nullable=False)
    identity_value = Column(EncryptedText, nullable=False)
    identity_hash = Column(String(64), nullable=False)
    name = Column(EncryptedText, nullable=False)
    relation = Column(String(32), nullable=False)
    phone = Column(EncryptedText, nullable=True)
    status = Column(String(16), nullable=False)
    requested_at = Column(TZDateTime(), nullable=False, default=utcnow)
    decided_at = Column(TZDateTime(), nullable=True)
    decided_via = Column(String(16), nullable=True)  # hotline | console
    decided_by = Column(ForeignKey("principals.id"), nullable=True)
    withdrawn_at = Column(TZDateTime(), nullable=True)

    resident = relationship("Resident", lazy="joined", innerjoin=True)


class OrderHistory(Base):
    """Every change to an order: who, when, from, to, why."""

    __tablename__ = "order_history"

    id = Column(Integer, primary_key=True)
    order_id = Column(ForeignKey("work_orders.id", ondelete="CASCADE"), nullable=False, index=True)
    at = Column(TZDateTime(), nullable=False, default=utcnow)
    actor_id = Column(ForeignKey("principals.id"), nullable=True)  # None: the system itself
    action = Column(String(32), nullable=False)
    from_status = Column(String(16), nullable=True)
    to_status = Column(String(16), nullable=True)
    reason = Column(EncryptedText, nullable=True)


class OrderPhoto(Base):
    """A photo a resident sent about their order (today: on WeChat, after a repair report).

    The image is personal data (the inside of a home), encrypted like every other field;
    `sha256` (of the plaintext) makes the channel's retry of the same bytes a no-op.
    """

    __tablename__ = "order_photos"
    __table_args__ = (UniqueConstraint("order_id", "sha256", name="uq_order_photos_sha256"),)

    id = Column(Integer, primary_key=True)
    order_id = Column(ForeignKey("work_orders.id", ondelete="CASCADE"), nullable=False, index=True)
    content_type = Column(String(32), nullable=False)  # image/jpeg | image/png
    data = deferred(Column(EncryptedBytes, nullable=False))
    size = Column(Integer, nullable=False)
    sha256 = Column(String(64), nullable=False)
    source = Column(String(16), nullable=False)  # wechat
    created_at = Column(TZDateTime(), nullable=False, default=utcnow)


class IdempotencyKey(Base):
    __tablename__ = "idempotency_keys"

    principal_id = Column(ForeignKey("principals.id"), primary_key=True)
    key = Column(String(200), primary_key=True)
    request_hash = Column(String(64), nullable=False)
    resource = Column(String(32), nullable=False)
    resource_id = Column(Integer, nullable=True)
    created_at = Column(TZDateTime(), nullable=False, default=utcnow)


class AuditEntry(Base):
    """Reads of personal data by staff, and administrative acts."""

    __tablename__ = "audit_log"

    id = Column(Integer, primary_key=True)
    at = Column(TZDateTime(), nullable=False, default=utcnow, index=True)
    principal_id = Column(ForeignKey("principals.id"), nullable=False, index=True)
    action = Column(String(48), nullable=False)
    resource_type = Column(String(32), nullable=False)
    resource_id = Column(Integer, nullable=True)
    detail = Column(Text, nullable=True)


class Event(Base):
    """Transactional outbox: written with the change, relayed to the Redis stream after commit."""

    __tablename__ = "events"

    id = Column(Integer, primary_key=True)
    type = Column(String(48), nullable=False)
    order_id = Column(Integer, nullable=True, index=True)
    payload = Column(JSON, nullable=False)
    created_at = Column(TZDateTime(), nullable=False, default=utcnow)
    published_at = Column(TZDateTime(), nullable=True, index=True)
    stream_id = Column(String(32), nullable=True)


class Terminal(Base):
    """A one-button SOS terminal in a resident's home, with its own signing secret.

    The device id is a channel identity (also linked as an `Identity` of kind terminal), so it
    is stored encrypted and found by its keyed hash. `principal_id` is the terminal's own
    service principal: the actor on the orders and history entries it causes, and the owner of
    its idempotency keys (one per event).
    """

    __tablename__ = "terminals"

    id = Column(Integer, primary_key=True)
    device_id = Column(EncryptedText, nullable=False)
    device_hash = Column(String(64), nullable=False, unique=True)
    resident_id = Column(ForeignKey("residents.id", ondelete="CASCADE"), nullable=False, index=True)
    principal_id = Column(ForeignKey("principals.id"), nullable=False)
    # The HMAC key (workorders/signing.py); shown once when provisioned or rotated.
    secret = Column(EncryptedText, nullable=False)
    secret_rotated_at = Column(TZDateTime(), nullable=False, default=utcnow)
    active = Column(Boolean, nullable=False, default=True)
    last_seen_at = Column(TZDateTime(), nullable=True)
    # What the last heartbeat said (firmware, queue depth, uptime, battery): nothing personal.
    status = Column(JSON, nullable=True)
    last_self_test_at = Column(TZDateTime(), nullable=True)
    # Set when the sweep found it silent for two heartbeat intervals; cleared when it reports.
    silent_since = Column(TZDateTime(), nullable=True, index=True)
    visit_order_id = Column(ForeignKey("work_orders.id"), nullable=True)
    created_by = Column(ForeignKey("principals.id"), nullable=True)
    created_at = Column(TZDateTime(), nullable=False, default=utcnow)


class EmergencyEscalation(Base):
    """The escalation chain of an emergency: nobody acknowledged in time, call the next one.

    `plan` lists the steps fixed when the chain starts ({"to": "contact", "contact_id": 5} for
    each family contact in order, then {"to": "supervisor"}); `step` is how many were taken.
    """

    __tablename__ = "emergency_escalations"

    order_id = Column(ForeignKey("work_orders.id", ondelete="CASCADE"), primary_key=True)
    terminal_id = Column(ForeignKey("terminals.id", ondelete="SET NULL"), nullable=True)
    plan = Column(JSON, nullable=False)
    step = Column(Integer, nullable=False, default=0)
    started_at = Column(TZDateTime(), nullable=False)
    next_due_at = Column(TZDateTime(), nullable=True, index=True)
    acknowledged_at = Column(TZDateTime(), nullable=True)
    finished_at = Column(TZDateTime(), nullable=True)
    # acknowledged | closed | exhausted (every step taken)
    finish_reason = Column(String(16), nullable=True)


class CallRecord(Base):
    """One hotline or terminal call: who called, for whom, what was said, what came of it.

    `call_id` is the SIP Call-ID and the natural idempotency key (one record per call);
    `request_hash` is the hash of the body that created it, so a retry is recognised and a
    different body under the same id refused. The caller number and the transcript are
    encrypted; numbers inside the transcript, keypad digits and transfer target were masked
    before they were stored. No audio unless `KEEP_CALL_AUDIO` (then only its path).
    """

    __tablename__ = "call_records"

    id = Column(Integer, primary_key=True)
    call_id = Column(String(255), nullable=False, unique=True)
    channel = Column(String(16), nullable=False)
    caller = Column(EncryptedText, nullable=True)  # digits; None: withheld (anonymous)
    caller_hash = Column(String(64), nullable=True, index=True)
    resident_id = Column(ForeignKey("residents.id", ondelete="CASCADE"), nullable=True, index=True)
    started_at = Column(TZDateTime(), nullable=False, index=True)
    ended_at = Column(TZDateTime(), nullable=False)
    outcome = Column(String(16), nullable=False)
    # [{"at": iso, "speaker": "caller|bot|staff", "text": masked, "confidence": float|None}]
    transcript = Column(EncryptedJSON, nullable=False)
    order_ids = Column(JSON, nullable=False, default=list)
    keypad = Column(EncryptedText, nullable=True)
    transfer_target = Column(EncryptedText, nullable=True)
    audio_path = Column(String(500), nullable=True)
    request_hash = Column(String(64), nullable=False)
    created_by = Column(ForeignKey("principals.id"), nullable=True)
    created_at = Column(TZDateTime(), nullable=False, default=utcnow)


class Conversation(Base):
    """A written conversation with a resident, as one channel knows it (`key`: the channel's
    conversation id, which is also the dialogue's sender id).

    `open_handoff_id` is the takeover state: set while a handoff waits for staff or staff own
    the conversation, so the gateway keeps the bot silent whatever Rasa's tracker says.
    """

    __tablename__ = "conversations"

    id = Column(Integer, primary_key=True)
    key = Column(String(128), nullable=False, unique=True)
    channel = Column(String(16), nullable=False)
    # Whether the channel can push a staff reply to the resident at any time (web chat, WeChat);
    # one that cannot (the hotline) gets a callback instead.
    can_push = Column(Boolean, nullable=False, default=False)
    resident_id = Column(ForeignKey("residents.id"), nullable=True, index=True)
    open_handoff_id = Column(Integer, nullable=True)
    created_at = Column(TZDateTime(), nullable=False, default=utcnow)
    last_message_at = Column(TZDateTime(), nullable=False, default=utcnow, index=True)
    # How far a staff reply can reach the resident, as the channel last reported it (WeChat's
    # customer-service messages: until 48 h after the resident's last message, so many more);
    # both null for a channel without such limits (never reported).
    reach_until = Column(TZDateTime(), nullable=True)
    reach_left = Column(Integer, nullable=True)


class ConversationMessage(Base):
    """One message of a conversation: resident, bot, staff or system (a note of what happened).

    `text` is masked and encrypted, like call transcripts, and is what every view shows. A staff
    reply also keeps its exact words in `delivery` (encrypted) until the channel has delivered
    them, then only the masked record remains. `client_id` makes a channel's retry a no-op.
    A reply the channel could not deliver keeps why (`undelivered_*`); given up on
    (`callback`), its exact words are forgotten while `delivered_at` stays null.
    """

    __tablename__ = "conversation_messages"
    __table_args__ = (UniqueConstraint("conversation_id", "client_id"),)

    id = Column(Integer, primary_key=True)
    conversation_id = Column(
        ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False, index=True
    )
    at = Column(TZDateTime(), nullable=False, default=utcnow)
    role = Column(String(16), nullable=False)
    author_id = Column(ForeignKey("principals.id"), nullable=True)
    text = Column(EncryptedText, nullable=False)
    client_id = Column(String(128), nullable=True)
    delivery = Column(EncryptedText, nullable=True)
    delivered_at = Column(TZDateTime(), nullable=True)
    # A staff reply the channel refused: its error code and what was done instead (subscribe:
    # held until the resident writes again; callback: given up, staff call the resident).
    undelivered_code = Column(Integer, nullable=True)
    undelivered_fallback = Column(String(16), nullable=True)


class Handoff(Base):
    """One hand-over of a conversation to staff: waiting, claimed by one person, then handed
    back to the bot or closed with an outcome. Unclaimed, it alerts supervisors at
    `next_alert_at` (counted in office hours) and again after each interval."""

    __tablename__ = "handoffs"
    __table_args__ = (Index("ix_handoffs_open", "ended_at", "claimed_at"),)

    id = Column(Integer, primary_key=True)
    conversation_id = Column(
        ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False, index=True
    )
    reason = Column(String(32), nullable=False)
    summary = Column(EncryptedText, nullable=True)
    order_id = Column(ForeignKey("work_orders.id"), nullable=True)
    opened_at = Column(TZDateTime(), nullable=False, default=utcnow)
    claimed_by = Column(ForeignKey("principals.id"), nullable=True)
    claimed_at = Column(TZDateTime(), nullable=True)
    ended_at = Column(TZDateTime(), nullable=True)
    ended_by = Column(ForeignKey("principals.id"), nullable=True)
    end_kind = Column(String(16), nullable=True)  # handed_back | closed
    outcome = Column(EncryptedText, nullable=True)
    alerts_sent = Column(Integer, nullable=False, default=0)
    next_alert_at = Column(TZDateTime(), nullable=True)

"""One-button SOS terminals: provisioning, signed events, SOS orders, heartbeats, silence.

An SOS becomes a P0 emergency through the ordinary order service (same SLA, same
`emergency.raised` staff alert on the event stream, address and health notes filled from the
resident). While an emergency of that resident is open, further presses join it instead of
making another. Every event id is an idempotency key of the terminal's own principal, so a
retried delivery never acts twice; a replayed request is refused before that by its nonce.

Row locks here (and in escalation.py) serialise work, they never change keys, so they are
`FOR NO KEY UPDATE` (`key_share=True`): foreign-key checks of concurrent inserts (history on
the order, a chain naming the terminal) take `FOR KEY SHARE` and must not wait on them, or
PostgreSQL finds deadlocks between a press and the follow-up of the press before it.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import partial

import redis
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from workorders import signing
from workorders.contract import (
    SOS_TRIGGER_LABELS,
    TERMINAL_SIP_PREFIX,
    Channel,
    IdentityKind,
    Kind,
    Priority,
    Role,
    SosTrigger,
    Status,
    TerminalEventType,
)
from workorders.crypto import cipher
from workorders.db import session_factory
from workorders.errors import ApiError
from workorders.hospital.base import HospitalAdapter
from workorders.models import (
    Event,
    IdempotencyKey,
    OrderHistory,
    Principal,
    Resident,
    Terminal,
    WorkOrder,
)
from workorders.schemas import IdentityIn, OrderCreate, TerminalCreate, TerminalEventIn
from workorders.security import Caller
from workorders.services import audit, escalation, events, idempotency, orders, residents, sla
from workorders.services.sla import SlaPolicy
from workorders.settings import get_settings

log = logging.getLogger(__name__)

# Announces events the caller has just committed, from memory (events.announce).
Announce = Callable[[Sequence[Event]], None]
# A press delivered this much later than it happened is noted on the order (an outage).
_LATE = timedelta(seconds=60)

# What the device may say when the server answers (by result, or by event type).
MESSAGES = {
    "created": "求助已收到，工作人员马上联系您，请不要着急。",
    "joined": "求助已收到，工作人员正在处理，马上联系您。",
    "duplicate": "求助已收到，工作人员马上联系您。",
    TerminalEventType.heartbeat.value: "设备在线。",
    TerminalEventType.self_test.value: "自检成功，设备工作正常。",
}


@dataclass(frozen=True)
class VerifiedTerminal:
    """A terminal whose request carried a valid, fresh, never-seen signature."""

    id: int
    principal_id: int
    resident_id: int


@dataclass
class EventResult:
    """created | joined | duplicate (SOS), recorded (heartbeat, self-test).

    `follow_up` is work to queue after answering (family, callback, escalation chain; it
    returns the ids of the events it committed): `follow_ups` runs it once no press is in
    flight, so that in a burst every staff alert goes out before anyone's follow-up.
    """

    status: str
    order_id: int | None = None
    event_ids: list[int] = field(default_factory=list)
    message: str = ""
    follow_up: Callable[[], list[int]] | None = None

    def __post_init__(self) -> None:
        self.message = self.message or MESSAGES.get(self.status, "")


def device_hash(device_id: str) -> str:
    """The same keyed hash as the resident's `terminal` identity, so both find each other."""
    return cipher().lookup_hash(IdentityKind.terminal, device_id)


def device_hashes(device_id: str) -> list[str]:
    """What a stored terminal may hold: the hash under every configured data key."""
    return cipher().lookup_hashes(IdentityKind.terminal, device_id)


def caller_of(terminal: VerifiedTerminal | Terminal) -> Caller:
    """The terminal acting on its resident's behalf: it may raise emergencies, nothing else."""
    return Caller(
        id=terminal.principal_id,
        username=f"terminal:{terminal.id}",
        role=Role.service,
        scopes=frozenset({"emergency:create"}),
        team=None,
    )


# --- provisioning --------------------------------------------------------------------------


def _staff_only(caller: Caller) -> None:
    if not caller.is_staff:
        raise ApiError(403, "forbidden", "只有工作人员可以登记一键呼叫终端或更换其密钥。")


def get(session: Session, terminal_id: int, *, lock: bool = False) -> Terminal:
    query = select(Terminal).where(Terminal.id == terminal_id)
    if lock:
        query = query.with_for_update(key_share=True)
    terminal = session.execute(query).scalar_one_or_none()
    if terminal is None:
        raise ApiError(404, "terminal_not_found", f"找不到编号为 {terminal_id} 的一键呼叫终端。")
    return terminal


def provision(
    session: Session, caller: Caller, body: TerminalCreate, now: datetime
) -> tuple[Terminal, str]:
    """Register a device to a resident; the secret is returned here and never again."""
    _staff_only(caller)
    resident = session.get(Resident, body.resident_id)
    if resident is None:
        raise ApiError(
            422,
            "resident_not_found",
            f"找不到编号为 {body.resident_id} 的居民，请先登记居民信息。",
        )
    digest = device_hash(body.device_id)
    existing = session.execute(
        select(Terminal.id).where(Terminal.device_hash.in_(device_hashes(body.device_id)))
    ).scalar_one_or_none()
    if existing is not None:
        raise ApiError(
            409,
            "terminal_exists",
            "该终端已经登记过；如需重新配置密钥，请更换密钥（POST /terminals/{id}/secret）。",
            {"terminal_id": existing},
        )
    residents.link_identity(
        session, resident, IdentityIn(kind=IdentityKind.terminal, value=body.device_id)
    )
    principal = Principal(
        username=f"terminal-{secrets.token_hex(6)}",
        display_name="一键呼叫终端",
        role=Role.service,
        scopes=["emergency:create"],
    )
    session.add(principal)
    session.flush()
    secret = signing.new_secret()
    terminal = Terminal(
        device_id=body.device_id,
        device_hash=digest,
        resident_id=resident.id,
        principal_id=principal.id,
        secret=secret,
        secret_rotated_at=now,
        active=True,
        created_by=caller.id,
        created_at=now,
    )
    session.add(terminal)
    try:
        session.flush()
    except IntegrityError as exc:  # the same device registered concurrently
        session.rollback()
        raise ApiError(409, "terminal_exists", "该终端已经登记过。") from exc
    audit.record(
        session, caller, "provision_terminal", "terminal", terminal.id, f"resident {resident.id}"
    )
    return terminal, secret


def rotate_secret(
    session: Session, caller: Caller, terminal_id: int, now: datetime
) -> tuple[Terminal, str]:
    """A new secret (lost or replaced device): the old one stops working at once."""
    _staff_only(caller)
    terminal = get(session, terminal_id, lock=True)
    secret = signing.new_secret()
    terminal.secret = secret
    terminal.secret_rotated_at = now
    audit.record(session, caller, "rotate_terminal_secret", "terminal", terminal.id)
    return terminal, secret


def search(
    session: Session,
    *,
    resident_id: int | None,
    silent: bool | None,
    limit: int,
    offset: int,
) -> tuple[list[Terminal], int]:
    conditions = []
    if resident_id is not None:
        conditions.append(Terminal.resident_id == resident_id)
    if silent is not None:
        conditions.append(
            Terminal.silent_since.is_not(None) if silent else Terminal.silent_since.is_(None)
        )
    total = session.execute(
        select(func.count()).select_from(Terminal).where(*conditions)
    ).scalar_one()
    rows = session.execute(
        select(Terminal).where(*conditions).order_by(Terminal.id).limit(limit).offset(offset)
    ).scalars()
    return list(rows), int(total)


@dataclass(frozen=True)
class SipDigest:
    """What a SIP server needs to check one terminal's digest answer in one realm."""

    terminal_id: int
    resident_id: int
    username: str
    realm: str
    ha1: dict[str, str]  # algorithm (MD5, SHA-256) -> hex HA1


def sip_digest(session: Session, caller: Caller, device_id: str, realm: str) -> SipDigest:
    """HA1 of the terminal's derived SIP password for `realm`, audited: enough to verify its
    calls to that realm, never the secret or the password themselves."""
    terminal = session.execute(
        select(Terminal).where(
            Terminal.device_hash.in_(device_hashes(device_id)), Terminal.active.is_(True)
        )
    ).scalar_one_or_none()
    if terminal is None:
        raise ApiError(404, "terminal_not_found", "该终端没有登记或已停用。")
    username = f"{TERMINAL_SIP_PREFIX}{device_id}"
    password = signing.sip_password(terminal.secret)
    audit.record(session, caller, "read_terminal_sip_digest", "terminal", terminal.id)
    return SipDigest(
        terminal_id=terminal.id,
        resident_id=terminal.resident_id,
        username=username,
        realm=realm,
        ha1={
            algorithm: signing.digest_ha1(username, realm, password, algorithm)
            for algorithm in signing.DIGEST_ALGORITHMS
        },
    )


# --- authentication of device requests -------------------------------------------------------


def _refuse(code: str, message: str, details: dict[str, object] | None = None) -> ApiError:
    return ApiError(401, code, message, details)


def nonce_key(terminal_id: int, nonce: str) -> str:
    return f"linli:terminal-nonce:{terminal_id}:{nonce}"


def authenticate(
    factory: sessionmaker[Session],
    *,
    method: str,
    path: str,
    terminal_id: str | None,
    timestamp: str | None,
    nonce: str | None,
    signature: str | None,
    body: bytes,
    now: datetime,
) -> VerifiedTerminal:
    """Check a signed request: headers, clock window, device, signature, then nonce.

    The nonce is claimed in Redis for longer than the window, so a captured request cannot be
    sent twice. When Redis is down the check is skipped (logged): refusing an SOS for that
    would be worse, and a replay could only repeat the same event id, which the database's
    idempotency keys turn into a no-op.
    """
    if not (terminal_id and timestamp and nonce and signature):
        raise _refuse(
            "signature_missing",
            "缺少终端签名：请求必须带 X-Linli-Terminal、X-Linli-Timestamp、X-Linli-Nonce 和 "
            "X-Linli-Signature 四个请求头。",
        )
    settings = get_settings()
    skew = settings.terminal_clock_skew_seconds
    if not signing.TIMESTAMP_RE.fullmatch(timestamp):
        raise _refuse("invalid_timestamp", "X-Linli-Timestamp 应为 Unix 时间（秒）。")
    if abs(now.timestamp() - int(timestamp)) > skew:
        raise _refuse(
            "stale_timestamp",
            f"请求时间与服务器时间相差超过 {int(skew // 60)} 分钟，已拒绝；请校准终端时钟后重发。",
            {
                "server_timestamp": int(now.timestamp()),
                "server_time": now.isoformat(),
                "allowed_skew_seconds": int(skew),
            },
        )
    if not signing.NONCE_RE.fullmatch(nonce):
        raise _refuse("invalid_nonce", "X-Linli-Nonce 应为16到64个字母、数字、下划线或连字符。")
    if len(terminal_id) > 64:
        raise _refuse("terminal_unknown", "该终端没有登记或已停用。")
    with factory() as session:
        row = session.execute(
            select(Terminal.id, Terminal.principal_id, Terminal.resident_id, Terminal.secret).where(
                Terminal.device_hash.in_(device_hashes(terminal_id)), Terminal.active.is_(True)
            )
        ).first()
    if row is None:
        raise _refuse("terminal_unknown", "该终端没有登记或已停用。")
    canonical = signing.canonical_request(method, path, terminal_id, int(timestamp), nonce, body)
    well_formed = signing.SIGNATURE_RE.fullmatch(signature) is not None
    if not (well_formed and signing.verify(row.secret, canonical, signature)):
        raise _refuse(
            "bad_signature", "签名校验失败：请求内容被改动，或终端密钥不正确（是否已更换密钥？）。"
        )
    try:
        fresh = events.redis_client().set(
            nonce_key(row.id, nonce), b"1", nx=True, ex=int(2 * skew + 60)
        )
    except redis.RedisError as exc:
        log.warning("terminal nonce not checked (Redis: %s)", type(exc).__name__)
        fresh = True
    if not fresh:
        raise ApiError(409, "replayed", "这个请求已经收到过（重放），已拒绝；重发请重新签名。")
    return VerifiedTerminal(row.id, row.principal_id, row.resident_id)


# --- events ----------------------------------------------------------------------------------


def _touch(session: Session, terminal: Terminal, now: datetime) -> list[Event]:
    """The terminal is alive: note when, and end a silence (on the visit order, if open)."""
    terminal.last_seen_at = now
    if terminal.silent_since is None:
        return []
    minutes = max(int((now - terminal.silent_since).total_seconds()), 0) // 60
    terminal.silent_since = None
    visit = session.get(WorkOrder, terminal.visit_order_id) if terminal.visit_order_id else None
    if visit is None or Status(visit.status) not in sla.OPEN:
        return []
    session.add(
        OrderHistory(
            order_id=visit.id,
            at=now,
            actor_id=terminal.principal_id,
            action="note",
            reason=f"终端已恢复在线（被标记失联后约{minutes}分钟）",
        )
    )
    return [events.record(session, "terminal.back_online", visit, terminal_id=terminal.id)]


def _alive(session: Session, terminal_id: int, now: datetime) -> list[Event]:
    """`_touch` for a press: one UPDATE (it locks the row too) unless the terminal was flagged
    silent, which needs the whole row."""
    noted = session.execute(
        update(Terminal)
        .where(Terminal.id == terminal_id, Terminal.silent_since.is_(None))
        .values(last_seen_at=now)
        .execution_options(synchronize_session=False)
    )
    if noted.rowcount == 1:
        return []
    return _touch(session, get(session, terminal_id, lock=True), now)


def handle(
    session: Session,
    verified: VerifiedTerminal,
    event: TerminalEventIn,
    hospital: HospitalAdapter,
    policy: SlaPolicy,
    now: datetime,
    announce: Announce,
) -> EventResult:
    """Act on one authenticated event; `announce` publishes committed events at once."""
    if event.type == TerminalEventType.sos:
        return _sos(session, verified, event, hospital, policy, now, announce)
    terminal = get(session, verified.id, lock=True)
    new = _touch(session, terminal, now)
    if event.type == TerminalEventType.heartbeat:
        terminal.status = event.info.dict(exclude_none=True) if event.info else None
    else:
        terminal.last_self_test_at = now
    session.flush()
    ids = [e.id for e in new]
    session.commit()
    announce(new)
    return EventResult("recorded", None, ids, MESSAGES[event.type.value])


def _plausible(at: datetime) -> bool:
    """A device clock before NTP may say 1970; such a time is not shown as the press time."""
    return 2020 <= at.year <= 2100


def _pressed(event: TerminalEventIn) -> str:
    return escalation.local_time(event.occurred_at) if _plausible(event.occurred_at) else "未知"


def _order_body(verified: VerifiedTerminal, event: TerminalEventIn) -> OrderCreate:
    """Only from the signed event, so a retry builds the same body (and idempotency hash)."""
    how = SOS_TRIGGER_LABELS[SosTrigger(event.trigger)] if event.trigger else "按下求助键"
    pressed = _pressed(event)
    return OrderCreate(
        kind=Kind.emergency,
        channel=Channel.terminal,
        resident_id=verified.resident_id,
        details={
            "description": f"一键呼叫终端求助：{how}（按下时间 {pressed}）",
            "source": f"terminal:{verified.id}",
        },
    )


def _sos(
    session: Session,
    verified: VerifiedTerminal,
    event: TerminalEventIn,
    hospital: HospitalAdapter,
    policy: SlaPolicy,
    now: datetime,
    announce: Announce,
) -> EventResult:
    caller = caller_of(verified)
    body = _order_body(verified, event)
    body_hash = orders.request_hash(body)
    key = event.event_id
    # A retry of an event already acted on (its response was lost): the same answer again.
    seen = session.get(IdempotencyKey, (caller.id, key))
    if seen is not None:
        return _duplicate(session, verified, seen, body_hash, policy, now, announce)
    # One emergency per resident at a time: serialise that resident's presses, then decide.
    open_order = orders.open_emergency(session, verified.resident_id)
    touched = _alive(session, verified.id, now)
    if open_order is not None:
        earlier = idempotency.claim(session, caller, key, "work_order", body_hash)
        if earlier is not None:  # the same event, delivered twice at once: the other won
            session.rollback()
            return EventResult("duplicate", earlier)
        idempotency.bind(session, caller, key, open_order.id)
        how = SOS_TRIGGER_LABELS[SosTrigger(event.trigger)] if event.trigger else "按下求助键"
        session.add(
            OrderHistory(
                order_id=open_order.id,
                at=now,
                actor_id=caller.id,
                action="sos_repeated",
                reason=f"再次按下求助键（{how}，按下时间 {_pressed(event)}）",
            )
        )
        new = [
            *touched,
            events.record(
                session,
                "emergency.repeated",
                open_order,
                to_role=Role.agent,
                trigger=event.trigger,
                terminal_id=verified.id,
            ),
        ]
        session.flush()
        ids = [e.id for e in new]
        session.commit()
        announce(new)
        return EventResult("joined", open_order.id, ids)
    outcome = orders.create(session, caller, body, key, hospital, policy, now)
    announce([*outcome.events, *touched])  # the staff alert, first of all
    if not outcome.created:  # the same event created it a moment ago (it did not commit)
        session.commit()
        return EventResult("duplicate", outcome.order.id)
    notes = []
    delay = now - event.occurred_at
    if _plausible(event.occurred_at) and delay > _LATE:
        notes.append(
            f"终端离线期间按下，恢复连接后送达（晚了约{int(delay.total_seconds() // 60)}分钟）"
        )
    order_id = outcome.order.id
    return EventResult(
        "created",
        order_id,
        list(outcome.event_ids),
        follow_up=partial(follow_up, order_id, verified.id, policy, now, notes),
    )


def follow_up(
    order_id: int,
    terminal_id: int,
    policy: SlaPolicy,
    now: datetime,
    notes: Iterable[str] = (),
    factory: sessionmaker[Session] | None = None,
) -> list[int]:
    """What follows a new SOS order, in its own session; the events to publish. Safe to run
    twice; if it never runs (a crash), the sweep's `escalation.repair_missing` does it."""
    try:
        with (factory or session_factory(True))() as session:
            return escalation.start(session, order_id, terminal_id, policy, now, notes)
    except Exception:  # after the answer: nobody to tell but the log, and the sweep repairs it
        log.exception("SOS follow-up of order %s failed; the scheduler will finish it", order_id)
        return []


def _duplicate(
    session: Session,
    verified: VerifiedTerminal,
    seen: IdempotencyKey,
    body_hash: str,
    policy: SlaPolicy,
    now: datetime,
    announce: Announce,
) -> EventResult:
    if seen.request_hash != body_hash or seen.resource != "work_order":
        raise ApiError(
            422,
            "idempotency_key_reused",
            "这个事件编号（event_id）已用于内容不同的事件；新事件请使用新的编号。",
        )
    if seen.resource_id is None:
        raise ApiError(409, "idempotency_retry", "同一事件正在处理中，请稍后重试。")
    order_id = int(seen.resource_id)
    terminal = get(session, verified.id, lock=True)
    new = _touch(session, terminal, now)
    order = session.get(WorkOrder, order_id)
    # Finish what a crash may have interrupted (a no-op when the follow-up already ran).
    resume = (
        order is not None
        and order.kind == Kind.emergency
        and escalation.terminal_of(order.details) == verified.id
        and Status(order.status) in sla.OPEN
    )
    session.flush()
    ids = [e.id for e in new]
    session.commit()  # last statement: no transaction (no SQLite write lock) left open
    announce(new)
    again = partial(follow_up, order_id, verified.id, policy, now) if resume else None
    return EventResult("duplicate", order_id, ids, follow_up=again)


# --- silence -----------------------------------------------------------------------------


@dataclass
class SilenceResult:
    flagged: int = 0
    visit_orders: int = 0
    event_ids: list[int] = field(default_factory=list)


def flag_silent(
    factory: sessionmaker[Session], policy: SlaPolicy, now: datetime, interval: timedelta
) -> SilenceResult:
    """Terminals not heard from for two intervals: one P1 visit order per silence.

    Only terminals that have reported at least once are watched (a device provisioned in the
    office is not missing). While the visit order is open, a terminal that goes silent again
    gets a note on it instead of a second order.
    """
    result = SilenceResult()
    cutoff = now - 2 * interval
    with factory() as session:
        candidates = list(
            session.execute(
                select(Terminal.id)
                .where(
                    Terminal.active.is_(True),
                    Terminal.silent_since.is_(None),
                    Terminal.last_seen_at.is_not(None),
                    Terminal.last_seen_at <= cutoff,
                )
                .order_by(Terminal.id)
                .limit(200)
            ).scalars()
        )
    for terminal_id in candidates:
        with factory() as session:
            terminal = session.execute(
                select(Terminal)
                .where(
                    Terminal.id == terminal_id,
                    Terminal.silent_since.is_(None),
                    Terminal.last_seen_at <= cutoff,
                )
                .with_for_update(skip_locked=True, key_share=True)
            ).scalar_one_or_none()
            if terminal is None:  # it reported meanwhile, or another scheduler has it
                continue
            event_ids, made = _silent(session, terminal, policy, now)
            result.flagged += 1
            result.visit_orders += made
            result.event_ids.extend(event_ids)
    return result


def _silent(
    session: Session, terminal: Terminal, policy: SlaPolicy, now: datetime
) -> tuple[list[int], bool]:
    """Flag one locked terminal; returns the events to publish and whether an order was made."""
    assert terminal.last_seen_at is not None
    silent = now - terminal.last_seen_at
    quiet = escalation.duration_text(timedelta(seconds=int(silent.total_seconds())))
    last = escalation.local_time(terminal.last_seen_at)
    terminal.silent_since = now
    visit = session.get(WorkOrder, terminal.visit_order_id) if terminal.visit_order_id else None
    if visit is not None and Status(visit.status) in sla.OPEN:
        session.add(
            OrderHistory(
                order_id=visit.id,
                at=now,
                actor_id=terminal.principal_id,
                action="note",
                reason=f"终端再次失联：已{quiet}没有心跳信号（最后在线 {last}）",
            )
        )
        event = events.record(
            session,
            "terminal.silent",
            visit,
            terminal_id=terminal.id,
            silent_seconds=int(silent.total_seconds()),
        )
        session.flush()
        event_id = event.id
        session.commit()
        return [event_id], False
    # The sweep acts for the terminal: it may open this one kind of order, nothing more.
    caller = replace(caller_of(terminal), scopes=frozenset({"orders:create"}))
    body = OrderCreate(
        kind=Kind.repair,
        channel=Channel.terminal,
        priority=Priority.P1,
        resident_id=terminal.resident_id,
        details={
            "category": "终端",
            "location": "home",
            "description": (
                f"一键呼叫终端已{quiet}没有心跳信号（最后在线 {last}）。"
                "请先打电话确认老人平安，再上门检查终端的电源和网络。"
            ),
        },
    )
    # One silence, one order: a silence ends only with a report, which moves last_seen_at.
    key = f"terminal-silent:{terminal.id}:{terminal.last_seen_at.isoformat()}"
    # hospital: repairs never book anything.
    outcome = orders.create(session, caller, body, key, None, policy, now)  # type: ignore[arg-type]
    terminal.visit_order_id = outcome.order.id
    event = events.record(
        session,
        "terminal.silent",
        outcome.order,
        terminal_id=terminal.id,
        silent_seconds=int(silent.total_seconds()),
    )
    session.flush()
    event_id = event.id
    session.commit()
    return [*outcome.event_ids, event_id], outcome.created

"""Family members acting for an elder (代办), with the elder's consent.

A son or daughter asks (the dialogue: `request`); the elder answers on a call from the hotline
or staff confirm by phone in the console (`decide`); from then on orders made, cancelled or
rated for the elder may name the proxy (`active`), and each use is on the order's history and
in the audit log. The elder (or staff for them) can withdraw consent at any time (`withdraw`).
Events carry ids and the community, never names or numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from workorders.crypto import cipher
from workorders.errors import ApiError
from workorders.models import Event, Proxy, Resident, WorkOrder
from workorders.schemas import ProxyRequestIn
from workorders.security import Caller
from workorders.services import audit

REQUESTED, ACTIVE, REFUSED, WITHDRAWN = "requested", "active", "refused", "withdrawn"
OPEN = (REQUESTED, ACTIVE)

NOT_ACTIVE_MESSAGE = "老人还没有同意由您代办，或者已经收回了同意。"


@dataclass
class Outcome:
    proxy: Proxy
    changed: bool
    event_ids: list[int]


def mask_name(name: str | None) -> str:
    """李小明 → 李*明, 李明 → 李*, 欧阳小明 → 欧**明."""
    if not name:
        return ""
    if len(name) == 1:
        return "*"
    if len(name) == 2:
        return name[0] + "*"
    return name[0] + "*" * (len(name) - 2) + name[-1]


def identity_hashes(kind: str, value: str) -> list[str]:
    """The keyed hashes `Identity.value_hash` uses (so one openid hashes alike everywhere),
    under every configured data key, the current one first: what a stored row may hold."""
    return cipher().lookup_hashes(kind, value)


def _record(session: Session, type_: str, proxy: Proxy, **data: Any) -> Event:
    """A proxy's event, in the caller's transaction: ids and the community only."""
    event = Event(
        type=type_,
        order_id=None,
        payload={
            "proxy_id": proxy.id,
            "resident_id": proxy.resident_id,
            "community": proxy.resident.community,
            **data,
        },
        created_at=datetime.now(timezone.utc),
    )
    session.add(event)
    return event


def get(session: Session, proxy_id: int, *, lock: bool = False) -> Proxy:
    query = select(Proxy).where(Proxy.id == proxy_id)
    if lock:
        query = query.with_for_update(of=Proxy)
    proxy = session.execute(query).scalar_one_or_none()
    if proxy is None:
        raise ApiError(404, "proxy_not_found", f"找不到编号为 {proxy_id} 的代办授权。")
    return proxy


def _open_one(session: Session, resident_id: int, digests: list[str]) -> Proxy | None:
    return session.execute(
        select(Proxy).where(
            Proxy.resident_id == resident_id,
            Proxy.identity_hash.in_(digests),
            Proxy.status.in_(OPEN),
        )
    ).scalar_one_or_none()


def request(session: Session, resident: Resident, body: ProxyRequestIn, now: datetime) -> Outcome:
    """Ask the elder's consent; the same person asking again (requested or active) gets the
    one there is. The event tells the hotline to call, or staff to confirm when the elder has
    no phone on file (`via: console`)."""
    kind, value = body.identity.kind.value, body.identity.value
    digests = identity_hashes(kind, value)
    existing = _open_one(session, resident.id, digests)
    if existing is not None:
        return Outcome(existing, False, [])
    proxy = Proxy(
        resident_id=resident.id,
        identity_kind=kind,
        identity_value=value,
        identity_hash=digests[0],
        name=body.name,
        relation=body.relation,
        phone=body.phone,
        status=REQUESTED,
        requested_at=now,
    )
    proxy.resident = resident
    try:
        with session.begin_nested():
            session.add(proxy)
            session.flush()
    except IntegrityError:
        existing = _open_one(session, resident.id, digests)  # the same request, at the same time
        if existing is None:
            raise
        return Outcome(existing, False, [])
    event = _record(
        session,
        "proxy.consent_requested",
        proxy,
        via="hotline" if resident.phone else "console",
    )
    session.flush()
    ids = [event.id]
    session.commit()
    return Outcome(proxy, True, ids)


def of_identity(session: Session, kind: str, value: str) -> list[Proxy]:
    """Every proxy of this person, newest first: for whom they may act, or asked to."""
    return list(
        session.execute(
            select(Proxy)
            .where(
                Proxy.identity_kind == kind,
                Proxy.identity_hash.in_(identity_hashes(kind, value)),
            )
            .order_by(Proxy.id.desc())
        ).scalars()
    )


def of_resident(session: Session, resident_id: int) -> list[Proxy]:
    return list(
        session.execute(
            select(Proxy).where(Proxy.resident_id == resident_id).order_by(Proxy.id.desc())
        ).scalars()
    )


def _may_answer(caller: Caller, via: str) -> None:
    """The hotline records what the elder pressed; staff what the elder told them by phone."""
    if via == "console" and not caller.is_staff:
        raise ApiError(403, "forbidden", "只有工作人员可以在工作台记录老人的答复。")
    if via == "hotline" and (caller.is_staff or not caller.can("proxies:consent")):
        raise ApiError(403, "forbidden", "您的账号没有“proxies:consent”权限，请联系管理员。")


def _closed() -> ApiError:
    return ApiError(409, "proxy_closed", "这项代办授权已经被拒绝或收回，请让家属重新申请。")


def decide(
    session: Session,
    caller: Caller,
    proxy_id: int,
    granted: bool,
    via: str,
    event_id: str | None,
    now: datetime,
) -> Outcome:
    _may_answer(caller, via)
    proxy = get(session, proxy_id, lock=True)
    wanted = ACTIVE if granted else REFUSED
    if proxy.status == wanted:  # the same answer again (a retried call or click)
        return Outcome(proxy, False, [])
    if proxy.status in (REFUSED, WITHDRAWN):
        raise _closed()
    if proxy.status == ACTIVE:
        raise ApiError(
            409,
            "proxy_active",
            "老人已经同意过由这位家属代办；如果老人要收回同意，请用“收回同意”。",
        )
    proxy.status = wanted
    proxy.decided_at, proxy.decided_via, proxy.decided_by = now, via, caller.id
    detail = f"{'同意' if granted else '不同意'}（{'热线' if via == 'hotline' else '工作台'}）"
    audit.record(
        session,
        caller,
        "decide_proxy",
        "proxy",
        proxy.id,
        detail + (f" event {event_id}" if event_id else ""),
    )
    event = _record(session, "proxy.decided", proxy, granted=granted)
    session.flush()
    ids = [event.id]
    session.commit()
    return Outcome(proxy, True, ids)


def withdraw(session: Session, caller: Caller, proxy_id: int, via: str, now: datetime) -> Outcome:
    """The elder takes consent back (or a request that waits is dropped); again: no-op."""
    _may_answer(caller, via)
    proxy = get(session, proxy_id, lock=True)
    if proxy.status == WITHDRAWN:
        return Outcome(proxy, False, [])
    if proxy.status == REFUSED:
        raise _closed()
    proxy.status = WITHDRAWN
    proxy.withdrawn_at = now
    audit.record(
        session,
        caller,
        "withdraw_proxy",
        "proxy",
        proxy.id,
        f"收回同意（{'热线' if via == 'hotline' else '工作台'}）",
    )
    event = _record(session, "proxy.withdrawn", proxy)
    session.flush()
    ids = [event.id]
    session.commit()
    return Outcome(proxy, True, ids)


# --- orders made through a proxy ------------------------------------------------------------


def active_for(session: Session, proxy_id: int | None, resident_id: int | None) -> Proxy | None:
    """The proxy an order names, which must be active and the order's resident's: else 403."""
    if proxy_id is None:
        return None
    proxy = session.get(Proxy, proxy_id)
    if proxy is None or proxy.status != ACTIVE or proxy.resident_id != resident_id:
        raise ApiError(403, "proxy_not_active", NOT_ACTIVE_MESSAGE)
    return proxy


_VERBS = {"create": "提交", "cancel": "取消", "rate": "评价", "update": "办理"}


def on_behalf(proxy: Proxy, verb: str, reason: str | None = None) -> str:
    """The history line: 李*明（儿子）代老人取消：不需要了. The name is masked, as history is
    read by everyone who reads the order; the proxy itself has it in full."""
    line = f"{mask_name(proxy.name)}（{proxy.relation}）代老人{_VERBS[verb]}"
    return f"{line}：{reason}" if reason else line


def record_use(
    session: Session, caller: Caller, proxy: Proxy | None, order: WorkOrder, verb: str
) -> None:
    """Every use of a proxy is audited, naming the proxy and the order."""
    if proxy is not None:
        audit.record(session, caller, "use_proxy", "proxy", proxy.id, f"{verb} order {order.id}")

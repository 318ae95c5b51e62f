"""/auth and /principals: staff log-in, accounts, service-account tokens, the audit log."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.security import HTTPAuthorizationCredentials
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from workorders.contract import Role
from workorders.db import get_read_session, get_session
from workorders.errors import ApiError, not_found
from workorders.models import ApiToken, AuditEntry, Principal
from workorders.schemas import (
    AuditOut,
    AuditPage,
    ErrorOut,
    LoginIn,
    PrincipalCreate,
    PrincipalOut,
    TokenOut,
)
from workorders.security import (
    SCOPES,
    Caller,
    bearer,
    current_caller,
    forget_token,
    hash_password,
    issue_token,
    require,
    session_token,
    token_hash,
    verify_password,
)
from workorders.services import audit
from workorders.settings import get_settings

router = APIRouter(
    tags=["auth"],
    responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut}, 422: {"model": ErrorOut}},
)


def _out(p: Principal) -> PrincipalOut:
    return PrincipalOut(
        id=p.id,
        username=p.username,
        display_name=p.display_name,
        role=p.role,
        scopes=list(p.scopes or []),
        team=p.team,
        active=p.active,
    )


def authenticate(session: Session, body: LoginIn) -> Principal:
    """A staff member's password log-in; the console's log-in form uses the same check."""
    principal = session.execute(
        select(Principal).where(Principal.username == body.username)
    ).scalar_one_or_none()
    if (
        principal is None
        or principal.role == Role.service
        or not verify_password(body.password, principal.password_hash)
    ):
        raise ApiError(401, "bad_credentials", "用户名或密码不正确。")
    if not principal.active:
        raise ApiError(401, "account_disabled", "该账号已停用，请联系管理员。")
    return principal


@router.post("/auth/token", response_model=TokenOut)
def login(body: LoginIn, session: Session = Depends(get_session)) -> TokenOut:
    """Staff log in with username and password and get a bearer token."""
    principal = authenticate(session, body)
    ttl = timedelta(hours=get_settings().token_ttl_hours)
    token = issue_token(session, principal, ttl)
    session.commit()
    return TokenOut(access_token=token, expires_at=datetime.now(timezone.utc) + ttl)


@router.post("/auth/logout", status_code=204)
def logout(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
    _caller: Caller = Depends(current_caller),
    session: Session = Depends(get_session),
) -> None:
    """Revoke the token this request came with (a bearer token or the console's session)."""
    token = credentials.credentials if credentials else session_token(request)
    assert token is not None  # current_caller has checked it
    session.execute(delete(ApiToken).where(ApiToken.token_hash == token_hash(token)))
    session.commit()
    forget_token(token)


@router.get("/auth/me", response_model=PrincipalOut)
def me(
    caller: Caller = Depends(current_caller), session: Session = Depends(get_read_session)
) -> PrincipalOut:
    principal = session.get(Principal, caller.id)
    assert principal is not None
    return _out(principal)


@router.post(
    "/principals",
    response_model=PrincipalOut,
    status_code=201,
    responses={409: {"model": ErrorOut}},
)
def create_principal(
    body: PrincipalCreate,
    caller: Caller = Depends(require("staff:manage")),
    session: Session = Depends(get_session),
) -> PrincipalOut:
    """Admins create staff accounts (with a password) and service accounts (with scopes)."""
    if body.role == Role.service:
        unknown = sorted(set(body.scopes) - set(SCOPES))
        if unknown or not body.scopes:
            raise ApiError(
                422,
                "invalid_scopes",
                f"服务账号需要有效的权限列表；未知权限：{', '.join(unknown) or '无'}。",
            )
        if body.password:
            raise ApiError(422, "invalid_request", "服务账号不用密码登录，请用令牌。")
    else:
        if body.scopes:
            raise ApiError(
                422, "invalid_request", "工作人员的权限由角色决定，不能单独指定 scopes。"
            )
        if not body.password:
            raise ApiError(422, "invalid_request", "工作人员账号需要设置至少8位的初始密码。")
    principal = Principal(
        username=body.username,
        display_name=body.display_name,
        role=body.role,
        scopes=body.scopes if body.role == Role.service else [],
        team=body.team,
        password_hash=hash_password(body.password) if body.password else None,
    )
    session.add(principal)
    try:
        session.flush()
    except IntegrityError as exc:
        session.rollback()
        raise ApiError(409, "username_taken", "这个用户名已被使用。") from exc
    audit.record(
        session,
        caller,
        "create_principal",
        "principal",
        principal.id,
        f"{body.username} {body.role}",
    )
    session.commit()
    return _out(principal)


@router.get("/principals", response_model=list[PrincipalOut])
def list_principals(
    _caller: Caller = Depends(require("staff:manage")), session: Session = Depends(get_read_session)
) -> list[PrincipalOut]:
    return [_out(p) for p in session.execute(select(Principal).order_by(Principal.id)).scalars()]


@router.post(
    "/principals/{principal_id}/tokens",
    response_model=TokenOut,
    status_code=201,
    responses={404: {"model": ErrorOut}},
)
def issue_service_token(
    principal_id: int = Path(..., ge=1, le=2**31 - 1),
    caller: Caller = Depends(require("staff:manage")),
    session: Session = Depends(get_session),
) -> TokenOut:
    """A token for a service account (shown once; store it in that service's environment)."""
    principal = session.get(Principal, principal_id)
    if principal is None:
        raise not_found("principal", principal_id)
    if principal.role != Role.service:
        raise ApiError(
            422, "not_a_service_account", "只能为服务账号签发长期令牌；工作人员请登录获取。"
        )
    token = issue_token(session, principal, None)
    audit.record(session, caller, "issue_service_token", "principal", principal.id)
    session.commit()
    return TokenOut(access_token=token, expires_at=None)


@router.get("/audit", response_model=AuditPage)
def read_audit(
    principal_id: int | None = Query(None, ge=1, le=2**31 - 1),
    resource_type: str | None = Query(None, max_length=32),
    resource_id: int | None = Query(None, ge=1, le=2**31 - 1),
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0, le=10_000_000),
    _caller: Caller = Depends(require("audit:read")),
    session: Session = Depends(get_read_session),
) -> AuditPage:
    conditions = []
    if principal_id is not None:
        conditions.append(AuditEntry.principal_id == principal_id)
    if resource_type is not None:
        conditions.append(AuditEntry.resource_type == resource_type)
    if resource_id is not None:
        conditions.append(AuditEntry.resource_id == resource_id)
    total = session.execute(
        select(func.count()).select_from(AuditEntry).where(*conditions)
    ).scalar_one()
    rows = session.execute(
        select(AuditEntry)
        .where(*conditions)
        .order_by(AuditEntry.id.desc())
        .limit(limit)
        .offset(offset)
    ).scalars()
    return AuditPage(
        items=[
            AuditOut(
                id=a.id,
                at=a.at,
                principal_id=a.principal_id,
                action=a.action,
                resource_type=a.resource_type,
                resource_id=a.resource_id,
                detail=a.detail,
            )
            for a in rows
        ],
        total=int(total),
        limit=limit,
        offset=offset,
    )

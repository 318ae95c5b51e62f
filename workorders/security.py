"""Who is calling: bearer tokens, staff roles and service-account scopes."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from workorders.contract import Role
from workorders.db import session_factory
from workorders.errors import ApiError
from workorders.models import ApiToken, Principal
from workorders.settings import get_settings

# Every right the API checks. Staff get them through their role; service accounts by name.
SCOPES = (
    "orders:read",
    "orders:create",
    "orders:update",
    "orders:rate",
    "emergency:create",
    "residents:read",
    "residents:write",
    "residents:lookup",
    "residents:pii",
    "appointments",
    "events:read",
    "stats:read",
    "audit:read",
    "staff:manage",
    "calls:read",
    "calls:write",
    "conversations:read",
    "conversations:reply",
    "conversations:write",
    "proxies:request",
    "proxies:consent",
    "notifications:write",
)

# Agents do the daily work; statistics are for supervisors; accounts and the audit log for admins.
# Call records and conversation messages are written by the services that carry them
# (svc-hotline, svc-gateway, svc-actions), never by a person; staff reply through
# conversations:reply. Family members acting for an elder (代办) are asked for by the dialogue
# (proxies:request) and consented to on the hotline (proxies:consent); staff record consent
# from the console by their role, not through these scopes. A channel that delivers a family
# notification (the hotline's call, the gateway's WeChat alert) reports how it went
# (notifications:write).
_AGENT = frozenset(SCOPES) - {
    "stats:read",
    "audit:read",
    "staff:manage",
    "calls:write",
    "conversations:write",
    "proxies:request",
    "proxies:consent",
    "notifications:write",
}
ROLE_SCOPES: dict[str, frozenset[str]] = {
    Role.agent: _AGENT,
    Role.supervisor: _AGENT | {"stats:read"},
    Role.admin: frozenset(SCOPES),
}


@dataclass(frozen=True)
class Caller:
    id: int
    username: str
    role: str
    scopes: frozenset[str]
    team: str | None

    @property
    def is_staff(self) -> bool:
        return self.role != Role.service

    def can(self, scope: str) -> bool:
        return scope in self.scopes


def caller_of(principal: Principal) -> Caller:
    scopes = (
        frozenset(principal.scopes or ())
        if principal.role == Role.service
        else ROLE_SCOPES[principal.role]
    )
    return Caller(principal.id, principal.username, principal.role, scopes, principal.team)


# --- passwords and tokens ----------------------------------------------------------------

_PBKDF2_ROUNDS = 200_000


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, _PBKDF2_ROUNDS)
    return f"pbkdf2_sha256${_PBKDF2_ROUNDS}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str | None) -> bool:
    if not stored:
        return False
    try:
        _, rounds, salt, digest = stored.split("$")
    except ValueError:
        return False
    candidate = hashlib.pbkdf2_hmac("sha256", password.encode(), bytes.fromhex(salt), int(rounds))
    return hmac.compare_digest(candidate.hex(), digest)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(session: Session, principal: Principal, ttl: timedelta | None) -> str:
    """Store only the token's hash; the caller gets the token once."""
    token = secrets.token_urlsafe(32)
    expires = datetime.now(timezone.utc) + ttl if ttl else None
    session.add(
        ApiToken(token_hash=token_hash(token), principal_id=principal.id, expires_at=expires)
    )
    return token


def register_service_token(session: Session, principal: Principal, token: str) -> None:
    """Service tokens come from deployment configuration; register one idempotently."""
    digest = token_hash(token)
    if session.get(ApiToken, digest) is None:
        session.add(ApiToken(token_hash=digest, principal_id=principal.id, expires_at=None))


# --- FastAPI dependencies ----------------------------------------------------------------

bearer = HTTPBearer(auto_error=False)

# The staff console (same origin) authenticates browsers with a session cookie holding a token
# issued like /auth/token's; cookies travel by themselves, so unsafe requests authenticated by
# one must also carry a CSRF token bound to that session (readable only by our own pages).
SESSION_COOKIE = "linli_session"
CSRF_HEADER = "X-CSRF-Token"
_UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@lru_cache
def _csrf_key() -> bytes:
    """A key of its own, derived from the data key: no extra secret to deploy."""
    raw = get_settings().data_key.encode()
    return hmac.new(raw, b"linli console csrf v1", hashlib.sha256).digest()


def csrf_token(session_token: str) -> str:
    """HMAC of the session token: valid for this session only, useless for anyone else's."""
    return hmac.new(_csrf_key(), session_token.encode(), hashlib.sha256).hexdigest()


def csrf_matches(session_token: str, presented: str | None) -> bool:
    if not presented:
        return False
    expected = csrf_token(session_token).encode()
    return hmac.compare_digest(expected, presented.encode("utf-8", "replace"))


def session_token(request: Request) -> str | None:
    """The console session token, unless the request carries an Authorization header."""
    if "authorization" in request.headers:
        return None
    return request.cookies.get(SESSION_COOKIE) or None


# Token -> (caller, valid until). A revoked token keeps working in *other* worker processes for
# at most this long; the process that revokes it forgets it at once.
_CACHE_SECONDS = 10.0
_cache: dict[str, tuple[Caller, float]] = {}


def forget_token(token: str) -> None:
    _cache.pop(token_hash(token), None)


def _resolve(digest: str) -> tuple[Caller, datetime | None]:
    with session_factory(False)() as session:
        row = session.execute(
            select(ApiToken.expires_at, Principal)
            .join(Principal, Principal.id == ApiToken.principal_id)
            .where(ApiToken.token_hash == digest)
        ).first()
    if row is None:
        raise ApiError(401, "unauthorized", "访问令牌无效，请重新登录。")
    expires_at, principal = row
    if not principal.active:
        raise ApiError(401, "account_disabled", "该账号已停用，请联系管理员。")
    return caller_of(principal), expires_at


async def caller_for_token(token: str) -> Caller:
    """Who holds this token (bearer or session). Cached briefly: every request needs it."""
    digest = token_hash(token)
    now = time.monotonic()
    hit = _cache.get(digest)
    if hit is not None and hit[1] > now:
        return hit[0]
    caller, expires_at = await run_in_threadpool(_resolve, digest)
    valid_for = _CACHE_SECONDS
    if expires_at is not None:
        valid_for = min(valid_for, (expires_at - datetime.now(timezone.utc)).total_seconds())
        if valid_for <= 0:
            raise ApiError(401, "token_expired", "登录已过期，请重新登录。")
    if len(_cache) > 10_000:
        _cache.clear()
    _cache[digest] = (caller, now + valid_for)
    return caller


async def current_caller(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
) -> Caller:
    """Who is calling: a bearer token, else the console's session cookie (with CSRF check)."""
    if credentials is not None:
        return await caller_for_token(credentials.credentials)
    token = session_token(request)
    if token is None:
        raise ApiError(401, "unauthorized", "请先登录：缺少访问令牌。")
    caller = await caller_for_token(token)
    if request.method in _UNSAFE_METHODS and not csrf_matches(
        token, request.headers.get(CSRF_HEADER)
    ):
        raise ApiError(
            403, "csrf", "安全校验未通过：请求缺少本次登录的校验码（CSRF）。请刷新页面后重试。"
        )
    return caller


class _Authenticated(HTTPBearer):
    """The bearer scheme, as the OpenAPI document shows it, that also says who is calling and
    checks their right: one dependency where there were three (FastAPI 0.125 on pydantic 1
    spends more solving a dependency than most of ours cost to run)."""

    def __init__(self, scope: str | None) -> None:
        super().__init__(auto_error=False, scheme_name="HTTPBearer")
        self.scope = scope

    async def __call__(self, request: Request) -> Caller:  # type: ignore[override]
        caller = await current_caller(request, await super().__call__(request))
        if self.scope is not None and not caller.can(self.scope):
            raise ApiError(403, "forbidden", f"您的账号没有“{self.scope}”权限，请联系管理员。")
        return caller


# Anyone signed in (what they may do is the service's to decide): `current_caller` in one.
signed_in = _Authenticated(None)


def require(scope: str) -> Callable[[Request], Awaitable[Caller]]:
    if scope not in SCOPES:
        raise ValueError(scope)
    return _Authenticated(scope)

"""What the routes are given (FastAPI dependencies): the services the app's lifespan made."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from fastapi import Depends, Request

from channels.gateway.delivery import Delivery
from channels.gateway.service import Gateway, GatewayError
from channels.gateway.settings import GatewaySettings
from channels.gateway.store import Store
from channels.gateway.wake import WakeHub

LOOPBACK = frozenset({"127.0.0.1", "::1"})
PROXIED = ("forwarded", "x-forwarded-for", "x-real-ip")


@dataclass(frozen=True)
class Services:
    settings: GatewaySettings
    store: Store
    gateway: Gateway
    delivery: Delivery
    hub: WakeHub


def services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


def gateway(s: Services = Depends(services)) -> Gateway:
    return s.gateway


def trusted_channel(request: Request, s: Services = Depends(services)) -> None:
    """The generic endpoint writes as any conversation: the token when one is set; otherwise
    only a client on this machine, not through a proxy (which would make everyone local)."""
    token = s.settings.api_token.get_secret_value()
    if token:
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise GatewayError(401, "unauthorized", "需要有效的令牌（LINLI_GATEWAY_API_TOKEN）。")
        return
    host = request.client.host if request.client else ""
    if host not in LOOPBACK or any(h in request.headers for h in PROXIED):
        raise GatewayError(403, "forbidden", "这个接口只对本机开放；在别处用请设置令牌。")

"""The one client of the work-order API, for actions and channels (public; no service imports).

Every create carries an idempotency key chosen by the caller (conversation + turn), so a
retried action or a replayed outbox entry never makes a second order.
"""

from __future__ import annotations

import json as jsonlib
import logging
from datetime import date, datetime
from typing import Any

import httpx

from workorders.contract import IdentityKind

# httpx logs every request URL at INFO; look-up URLs carry openids and caller numbers, which
# must not reach the logs of the processes using this client.
logging.getLogger("httpx").setLevel(logging.WARNING)


class ApiError(Exception):
    """The API refused the request; `message` is Chinese and can be read to the resident."""

    def __init__(
        self, status: int, code: str, message: str, details: dict[str, Any] | None
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.details = status, code, message, details


class ApiUnavailable(Exception):
    """The API did not answer (down, timeout, 5xx): keep the request and retry later."""


class WorkOrdersClient:
    def __init__(self, base_url: str, token: str, timeout: float = 5.0) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        key: str | None = None,
        headers: dict[str, str] | None = None,
        content: bytes | None = None,
    ) -> Any:
        headers = {**(headers or {}), **({"Idempotency-Key": key} if key else {})} or None
        try:
            response = await self._http.request(
                method, path, json=json, params=params, headers=headers, content=content
            )
        except httpx.HTTPError as exc:
            raise ApiUnavailable(f"{method} {path}: {type(exc).__name__}") from exc
        if response.status_code >= 500:
            raise ApiUnavailable(f"{method} {path}: HTTP {response.status_code}")
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = {}
            raise ApiError(
                response.status_code,
                body.get("code", "http_error"),
                body.get("message", "请求没有成功。"),
                body.get("details"),
            )
        return response.json() if response.content else None

    # --- residents ---------------------------------------------------------------------------

    async def find_resident(self, kind: IdentityKind, value: str) -> dict[str, Any] | None:
        try:
            return await self.request(
                "GET", "/residents/lookup", params={"kind": kind.value, "value": value}
            )
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def create_resident(self, body: dict[str, Any], key: str) -> dict[str, Any]:
        return await self.request("POST", "/residents", json=body, key=key)

    async def link_identity(
        self, resident_id: int, kind: IdentityKind, value: str
    ) -> dict[str, Any]:
        return await self.request(
            "POST",
            f"/residents/{resident_id}/identities",
            json={"kind": kind.value, "value": value},
        )

    # --- work orders ---------------------------------------------------------------------------

    async def create_order(self, body: dict[str, Any], key: str) -> dict[str, Any]:
        return await self.request("POST", "/work-orders", json=body, key=key)

    async def orders_of(
        self, resident_id: int, statuses: list[str] | None = None, proxy_id: int | None = None
    ) -> list[dict[str, Any]]:
        """`proxy_id`: a family member asks for the elder (代办; the look is audited)."""
        params: dict[str, Any] = {"resident_id": resident_id, "limit": 50}
        if statuses:
            params["status"] = statuses
        if proxy_id is not None:
            params["proxy_id"] = proxy_id
        return (await self.request("GET", "/work-orders", params=params))["items"]

    async def order(self, order_id: int) -> dict[str, Any]:
        return await self.request("GET", f"/work-orders/{order_id}")

    async def move(
        self, order_id: int, to: str, reason: str | None = None, proxy_id: int | None = None
    ) -> dict[str, Any]:
        """`proxy_id`: a family member does it for the resident (代办; cancelling)."""
        body = _by_proxy({"to": to, "reason": reason}, proxy_id)
        return await self.request("POST", f"/work-orders/{order_id}/transitions", json=body)

    async def rate(
        self, order_id: int, score: int, comment: str | None = None, proxy_id: int | None = None
    ) -> dict[str, Any]:
        body = _by_proxy({"score": score, "comment": comment}, proxy_id)
        return await self.request("POST", f"/work-orders/{order_id}/rating", json=body)

    # --- family members acting for an elder (代办) ---------------------------------------------

    async def request_proxy(
        self,
        resident_id: int,
        kind: IdentityKind | str,
        value: str,
        name: str,
        relation: str,
        phone: str | None = None,
    ) -> dict[str, Any]:
        """Ask the elder's consent for this family member (`proxies:request`). Idempotent: the
        same person again while the request waits or the consent holds returns that proxy."""
        return await self.request(
            "POST",
            f"/residents/{resident_id}/proxies",
            json={
                "identity": {"kind": IdentityKind(kind).value, "value": value},
                "name": name,
                "relation": relation,
                "phone": phone,
            },
        )

    async def proxies_of(self, kind: IdentityKind | str, value: str) -> list[dict[str, Any]]:
        """For whom this person may act, or asked to, newest first:
        `[{id, resident_id, resident_name (masked), relation, status}]`."""
        return await self.request(
            "GET", "/proxies", params={"kind": IdentityKind(kind).value, "value": value}
        )

    async def proxy(self, proxy_id: int) -> dict[str, Any]:
        return await self.request("GET", f"/proxies/{proxy_id}")

    async def decide_proxy(
        self, proxy_id: int, granted: bool, via: str, event_id: str | None = None
    ) -> dict[str, Any]:
        """The elder's answer (`via`: "hotline" with proxies:consent, "console" for staff).
        The same answer again is a no-op; 409 `proxy_closed` when refused or withdrawn."""
        return await self.request(
            "POST",
            f"/proxies/{proxy_id}/consent",
            json={"granted": granted, "via": via, "event_id": event_id},
        )

    async def withdraw_proxy(self, proxy_id: int, via: str) -> dict[str, Any]:
        """The elder takes consent back (idempotent)."""
        return await self.request("POST", f"/proxies/{proxy_id}/withdraw", json={"via": via})

    # --- call records ---------------------------------------------------------------------------

    async def record_call(self, body: dict[str, Any]) -> dict[str, Any]:
        """Record a finished call (`POST /calls`, scope `calls:write`).

        `body["call_id"]` (the SIP Call-ID) is the idempotency key: posting the same body again
        after a timeout returns the stored record, so keep the body and retry on
        `ApiUnavailable`. `ApiError` 422 means the body will never be accepted as it is.
        Datetimes may be passed as such (aware ones); they are sent in ISO 8601.
        """
        return await self.request(
            "POST", "/calls", json=jsonlib.loads(jsonlib.dumps(body, default=_iso))
        )

    async def report_notification(self, order_id: int, body: dict[str, Any]) -> dict[str, Any]:
        """How a `notification.requested` call went (idempotent by its `event_id`)."""
        return await self.request("POST", f"/work-orders/{order_id}/notifications", json=body)

    async def whereabouts(self, order_id: int, body: dict[str, Any]) -> dict[str, Any]:
        """Add where the person in an emergency is, or a number to reach them (idempotent)."""
        return await self.request("PATCH", f"/work-orders/{order_id}/whereabouts", json=body)

    async def note(self, order_id: int, text: str) -> dict[str, Any]:
        return await self.request("POST", f"/work-orders/{order_id}/notes", json={"text": text})

    # --- conversations (the gateway and the dialogue) -----------------------------------------

    async def record_messages(self, key: str, body: dict[str, Any]) -> dict[str, Any]:
        """Keep messages of a conversation (idempotent by each `client_id`); the answer's
        `state` says whether the bot may reply ("bot") or staff have it."""
        return await self.request("POST", f"/conversations/{key}/messages", json=body)

    async def conversation_state(self, key: str) -> dict[str, Any]:
        """Whether the bot may answer, who has the conversation, the last hand-back."""
        return await self.request("GET", f"/conversations/{key}/state")

    async def hand_over(self, key: str, body: dict[str, Any]) -> dict[str, Any]:
        """Open the takeover (idempotent: the open hand-over when there is one)."""
        return await self.request("POST", f"/conversations/{key}/handoff", json=body)

    async def attach_photo(self, key: str, data: bytes, content_type: str) -> dict[str, Any]:
        """A photo the resident sent (image/jpeg or image/png, at most 2 MB): the API keeps it
        with their recent open repair order, `{"order_id", "photo_id"}` (the same bytes again:
        the same ids). ApiError 404 `no_recent_repair`: nothing kept, answer the resident
        kindly; 413 `photo_too_large`, 415 `photo_type`."""
        return await self.request(
            "POST",
            f"/conversations/{key}/photos",
            content=data,
            headers={"Content-Type": content_type},
        )

    async def outbound(self, key: str) -> list[dict[str, Any]]:
        """Staff replies to deliver, in their exact words."""
        return await self.request("GET", f"/conversations/{key}/outbound")

    async def delivered(self, key: str, message_id: int) -> None:
        await self.request("POST", f"/conversations/{key}/outbound/{message_id}/delivered")

    async def undeliverable(self, key: str, message_id: int, code: int, fallback: str) -> None:
        """The channel refused a staff reply (`code`: WeChat's errcode). `fallback`:
        "subscribe" (held until the resident writes again) or "callback" (given up; staff are
        told to call). The same again is a no-op."""
        await self.request(
            "POST",
            f"/conversations/{key}/outbound/{message_id}/undeliverable",
            json={"code": code, "fallback": fallback},
        )

    async def set_reach(self, key: str, open_until: str | None, sends_left: int) -> None:
        """How far a staff reply reaches the resident now: until `open_until` (ISO, with a
        time zone; None: not now), `sends_left` more (0..5). The latest report stands."""
        await self.request(
            "PUT",
            f"/conversations/{key}/reach",
            json={"open_until": open_until, "sends_left": sends_left},
        )

    # --- what the telephony service reads -------------------------------------------------------

    async def events(self, after: str, wait_ms: int = 0, limit: int = 100) -> dict[str, Any]:
        """`GET /events` from `after` (a stream id), long-polling up to `wait_ms`."""
        return await self.request(
            "GET", "/events", params={"after": after, "wait_ms": wait_ms, "limit": limit}
        )

    async def resident(self, resident_id: int) -> dict[str, Any]:
        return await self.request("GET", f"/residents/{resident_id}")

    async def terminal(self, terminal_id: int) -> dict[str, Any]:
        return await self.request("GET", f"/terminals/{terminal_id}")

    async def terminal_sip_digest(self, device_id: str, realm: str) -> dict[str, Any] | None:
        """What checking a terminal's SIP digest needs (HA1 per algorithm); None: unknown."""
        try:
            return await self.request(
                "GET",
                "/terminals/sip-digest",
                params={"realm": realm},
                headers={"X-Linli-Terminal": device_id},
            )
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    # --- appointments ---------------------------------------------------------------------------

    async def departments(self) -> list[str]:
        return await self.request("GET", "/appointments/departments")

    async def free_slots(
        self, department: str, day: date, days: int = 1, limit: int = 20
    ) -> list[dict[str, Any]]:
        return await self.request(
            "GET",
            "/appointments/slots",
            params={
                "department": department,
                "date_from": day.isoformat(),
                "days": days,
                "limit": limit,
            },
        )


def _by_proxy(body: dict[str, Any], proxy_id: int | None) -> dict[str, Any]:
    """Name the family member acting for the resident (代办), when one is."""
    return body if proxy_id is None else {**body, "proxy_id": proxy_id}


def _iso(value: Any) -> str:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")

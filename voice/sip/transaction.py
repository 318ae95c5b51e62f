"""SIP transactions over UDP (RFC 3261 section 17): retransmission timers and matching.

UDP loses datagrams, so every request we send is retransmitted until a response arrives
(timers A/E, doubling from T1), and every final response to an INVITE is retransmitted until
the ACK arrives (timer G, and section 13.3.1.4 for 2xx), giving up after 64*T1. Requests that
arrive twice are answered from the transaction's last response instead of being processed
again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from voice.sip.message import MAGIC_COOKIE, SipRequest, SipResponse

log = logging.getLogger(__name__)

T1 = 0.5  # RTT estimate
T2 = 4.0  # maximum retransmit interval for non-INVITE requests and INVITE responses
T4 = 5.0  # maximum time a message stays in the network
TIMEOUT = 64 * T1  # timers B, F, H, J

Address = tuple[str, int]
Send = Callable[[bytes, Address], None]


def server_key(request: SipRequest) -> tuple[str, ...]:
    """Which server transaction a request belongs to (section 17.2.3).

    ACK for a non-2xx final response and CANCEL share the INVITE's branch; ACK is matched to
    the INVITE transaction, CANCEL forms its own transaction.
    """
    via = request.vias[0]
    method = "INVITE" if request.method == "ACK" else request.method
    branch = via.branch or ""
    if branch.startswith(MAGIC_COOKIE):
        return (branch, via.host, str(via.port or 5060), method)
    # RFC 2543 peers: no unique branch, so fall back to the dialog-identifying fields.
    number, _ = request.cseq
    return (
        request.call_id,
        request.from_.tag or "",
        str(number),
        method,
        via.host,
        str(via.port or 5060),
    )


class ServerTransaction:
    """What we answered to one request, so retransmissions get the same answer."""

    def __init__(self, request: SipRequest, destination: Address, send: Send) -> None:
        self.request = request
        self.destination = destination
        self._send = send
        self.last_response: bytes | None = None
        self.final_status: int | None = None
        self.acknowledged = asyncio.Event()
        self._retransmitter: asyncio.Task[None] | None = None

    def respond(self, response: SipResponse) -> None:
        """Send a provisional or an unreliable (non-INVITE) final response."""
        self.last_response = response.encode()
        if response.status >= 200:
            self.final_status = response.status
        self._send(self.last_response, self.destination)

    def respond_until_ack(
        self, response: SipResponse, on_timeout: Callable[[], None] | None = None
    ) -> None:
        """A final response to an INVITE: retransmitted (T1, 2*T1 … T2) until `acknowledge`."""
        self.respond(response)
        if self._retransmitter is not None:
            self._retransmitter.cancel()
        self._retransmitter = asyncio.get_running_loop().create_task(self._retransmit(on_timeout))

    def absorb_retransmission(self) -> None:
        """The same request arrived again: repeat our latest response, do nothing else."""
        if self.last_response is not None:
            self._send(self.last_response, self.destination)

    def acknowledge(self) -> None:
        self.acknowledged.set()
        if self._retransmitter is not None:
            self._retransmitter.cancel()
            self._retransmitter = None

    def cancel_timers(self) -> None:
        if self._retransmitter is not None:
            self._retransmitter.cancel()
            self._retransmitter = None

    async def _retransmit(self, on_timeout: Callable[[], None] | None) -> None:
        interval, waited = T1, 0.0
        while waited < TIMEOUT:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.acknowledged.wait(), interval)
            if self.acknowledged.is_set():
                return
            waited += interval
            interval = min(interval * 2, T2)
            if self.last_response is not None and waited < TIMEOUT:
                self._send(self.last_response, self.destination)
        self._retransmitter = None
        log.info("no ACK for %s response after %.0f s", self.final_status, TIMEOUT)
        if on_timeout is not None:
            on_timeout()


class ClientTransaction:
    """One request we sent, retransmitted until its final response or timeout (408)."""

    def __init__(
        self,
        request: SipRequest,
        destination: Address,
        send: Send,
        on_provisional: Callable[[SipResponse], None] | None = None,
    ) -> None:
        self.request = request
        self.destination = destination
        self._send = send
        self._on_provisional = on_provisional
        self._data = request.encode()
        self._provisional = asyncio.Event()
        self.final: asyncio.Future[SipResponse] = asyncio.get_running_loop().create_future()

    @property
    def key(self) -> tuple[str, str]:
        return (self.request.vias[0].branch or "", self.request.method)

    def receive(self, response: SipResponse) -> None:
        if response.status < 200:
            self._provisional.set()
            if self._on_provisional is not None:
                self._on_provisional(response)
        elif not self.final.done():
            self.final.set_result(response)

    async def run(self) -> SipResponse:
        """Send, retransmit per timer A (INVITE) or E (others), return the final response."""
        invite = self.request.method == "INVITE"
        interval, waited = T1, 0.0
        self._send(self._data, self.destination)
        while True:
            try:
                return await asyncio.wait_for(asyncio.shield(self.final), interval)
            except asyncio.TimeoutError:
                pass
            waited += interval
            if invite and self._provisional.is_set():
                # Proceeding: the far end is working on it; only our own timeout ends it.
                interval = T2
                continue
            if waited >= TIMEOUT:
                return SipResponse(408, "Request Timeout")
            if not invite:
                interval = T2 if self._provisional.is_set() else min(interval * 2, T2)
            else:
                interval *= 2
            self._send(self._data, self.destination)

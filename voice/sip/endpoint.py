"""The hotline's SIP user agent: a SIP server on asyncio (UDP, and TLS) that answers calls.

A PBX (Asterisk, FreeSWITCH) or a SIP trunk routes the community number here; each answered
call is handed to the application's `on_call(call)` coroutine, and hung up when it returns.

What of RFC 3261 this implements (UDP only, IPv4 and IPv6):
- UAS: INVITE (100 Trying, optional 180 Ringing, 200 OK with SDP answer, or an SDP offer when
  the INVITE had none and the answer comes in the ACK), ACK, BYE, CANCEL before the answer
  (200 + 487), OPTIONS (keep-alives), INFO (DTMF), re-INVITE and UPDATE (hold/unhold, new media
  address), NOTIFY (REFER progress); 488 when no codec is common, 420 for unknown Require
  option tags, 481 outside a dialog, 482 for merged requests, 486 above `max_calls`, 405/501
  for what we do not do.
- UAC: in-dialog BYE and REFER, and outgoing INVITE (`dial`) with CANCEL, for bridging.
- Transactions over UDP: retransmission of requests (timers A/E) and of final INVITE responses
  until ACK (T1 doubling to T2, given up after 64*T1, which ends the call with BYE); repeated
  requests are absorbed and answered from the transaction. Responses go back per RFC 3581
  (rport) and section 18.2.2.
- Dialogs with loose routing (Record-Route/Route), Contact as remote target.

Who may call is the `admission`'s business (voice/sip/admission.py: trusted peers, SIP digest
for the rest); in-dialog requests are taken only from the call's own signalling host.

SIP over TLS (`tls`, a listener on `tls_port` beside UDP; `dial` to `sip:…;transport=tls`):
messages framed by Content-Length (voice/sip/stream.py), responses and in-dialog requests on the
connection the call uses, Via/Contact with TLS. Calls over TLS have SRTP media with SDES keys
(voice/sip/srtp.py) and only those: plain RTP over TLS, or SRTP over UDP, is 488.

Left out on purpose: registration (we never register; `credentials` only answer challenges to
our own INVITEs), plain TCP and WebSocket (our messages stay far below the UDP size limit of
section 18.1.1), DTLS-SRTP and SRTCP, DNS NAPTR/SRV (hosts are IP literals or A records),
reliable provisional responses (100rel/PRACK), session timers, forking, early media,
Max-Forwards checks, acting on an incoming REFER (we transfer others, nobody transfers us).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections import Counter
from collections.abc import Awaitable, Callable, Collection

from voice.audio import Codec
from voice.sip import stream
from voice.sip.admission import Admission
from voice.sip.call import Call, CallState, EndReason, caller_number
from voice.sip.dialog import Dialog, DialogId
from voice.sip.digest import Credentials, authorization
from voice.sip.message import (
    SipParseError,
    SipRequest,
    SipResponse,
    SipUri,
    make_response,
    mask_digits,
    mask_number,
    new_branch,
    new_call_id,
    new_tag,
    parse_message,
)
from voice.sip.rtp import RtpSession, open_rtp_session
from voice.sip.sdp import LocalSession, MediaChoice, SdpError, SessionDescription, choose_media
from voice.sip.srtp import SrtpContext
from voice.sip.stream import StreamFlow
from voice.sip.transaction import (
    TIMEOUT,
    ClientTransaction,
    ServerTransaction,
    server_key,
)

log = logging.getLogger(__name__)

OnCall = Callable[[Call], Awaitable[None]]
HostPort = tuple[str, int]

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, NOTIFY, UPDATE"
ACCEPT = "application/sdp, application/dtmf-relay, application/dtmf, message/sipfrag"
SUPPORTED_EXTENSIONS: frozenset[str] = frozenset()  # option tags we could honour in Require


class _SipProtocol(asyncio.DatagramProtocol):
    def __init__(self, endpoint: SipEndpoint) -> None:
        self.endpoint = endpoint

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.endpoint._on_datagram(data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        log.debug("SIP socket error: %s", exc)


class SipEndpoint:
    """A SIP user agent on one UDP port that answers calls and hands them to `on_call`.

    `on_call` runs for every answered call. `on_ended(call)` (optional, synchronous) hears of
    every call that ends, answered or not: `call.end_reason` tells a caller who gave up while
    it rang (CANCELLED) from one who hung up (REMOTE_HANGUP), for abandoned-call statistics.

    `advertised_host` is the address put in Via, Contact and SDP when the one we bind to is
    not what the PBX should use (0.0.0.0, NAT); by default the bound address, or for 0.0.0.0
    the local address of the route towards the peer.

    `admission` decides who may call (voice/sip/admission.py: trusted peers, digest for the
    rest); `trusted_peers` (hosts or CIDRs) is short for an admission that trusts only those.
    Without either every INVITE is answered. With one, in-dialog requests are taken only from
    the host the call's INVITE came from (or a trusted peer). A device that answers by itself
    (the SOS terminal: its microphone is in someone's home) takes calls from its hotline only.

    `credentials` answer digest challenges to the calls we place (`dial`).
    `stats()` counts admissions, refusals and RTP dropped for coming from elsewhere.
    """

    def __init__(
        self,
        on_call: OnCall,
        *,
        on_ended: Callable[[Call], None] | None = None,
        host: str = "0.0.0.0",
        port: int = 5060,
        advertised_host: str | None = None,
        advertised_port: int | None = None,
        rtp_host: str | None = None,
        rtp_port_range: tuple[int, int] | None = None,
        codecs: tuple[Codec, ...] = (Codec.PCMU, Codec.PCMA),
        user: str = "linli",
        ring_seconds: float = 0.0,
        send_ringing: bool = True,
        max_calls: int = 32,
        dtmf_events: bool = True,
        user_agent: str = "Linli-Hotline/0.1",
        trusted_peers: Collection[str] | None = None,
        admission: Admission | None = None,
        credentials: Credentials | None = None,
        tls: ssl.SSLContext | None = None,
        tls_port: int = 5061,
        tls_client: ssl.SSLContext | None = None,
    ) -> None:
        self.on_call = on_call
        self.on_ended = on_ended
        self.host = host
        self.port = port
        self.advertised_host = advertised_host
        self.advertised_port = advertised_port
        self.rtp_host = rtp_host or host
        self.rtp_port_range = rtp_port_range
        self.codecs = codecs
        self.user = user
        self.ring_seconds = ring_seconds
        self.send_ringing = send_ringing
        self.max_calls = max_calls
        self.dtmf_events = dtmf_events  # RFC 4733 in SDP; False: the far end must use INFO
        self.user_agent = user_agent
        if admission is None and trusted_peers is not None:
            admission = Admission(trusted=trusted_peers)
        self.admission = admission
        self.counters: Counter[str] = admission.counters if admission else Counter()
        self.credentials = credentials
        self.tls = tls  # a TLS listener on `tls_port` beside UDP (server certificate)
        self.tls_port = tls_port
        self.tls_client = tls_client  # for dialling sip:…;transport=tls (verifies the server)
        self._flows: dict[HostPort, StreamFlow] = {}  # open TLS connections by peer address
        self._tls_server: asyncio.AbstractServer | None = None
        self.calls: dict[DialogId, Call] = {}
        self._transport: asyncio.DatagramTransport | None = None
        self._server_transactions: dict[tuple[str, ...], ServerTransaction] = {}
        self._client_transactions: dict[tuple[str, str], ClientTransaction] = {}
        self._acks: dict[tuple[str, int], tuple[bytes, HostPort]] = {}  # re-ACK retransmitted 2xx
        self._tasks: set[asyncio.Task[None]] = set()
        self._pending_invites: dict[tuple[str, ...], Call] = {}  # INVITE key -> unanswered call

    # --- life cycle ----------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _SipProtocol(self), local_addr=(self.host, self.port), family=family
        )
        self._transport = transport
        self.port = transport.get_extra_info("sockname")[1]
        log.info("SIP endpoint listening on udp %s:%d", self.host, self.port)
        if self.tls is not None:
            self._tls_server = await asyncio.start_server(
                self._accept_tls, self.host, self.tls_port, ssl=self.tls
            )
            self.tls_port = self._tls_server.sockets[0].getsockname()[1]
            log.info("SIP endpoint listening on tls %s:%d", self.host, self.tls_port)

    async def close(self) -> None:
        """Hang up every call (BYE), stop the handlers, release the port."""
        await asyncio.gather(
            *(self._bye_quietly(call) for call in list(self.calls.values())),
            return_exceptions=True,
        )
        if self._tls_server is not None:
            self._tls_server.close()
            self._tls_server = None
        await asyncio.gather(*(flow.close() for flow in list(self._flows.values())))
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for transaction in self._server_transactions.values():
            transaction.cancel_timers()
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    async def __aenter__(self) -> SipEndpoint:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _bye_quietly(self, call: Call) -> None:
        if call.state is CallState.ACTIVE:
            await asyncio.wait_for(self.send_bye(call, EndReason.SHUTDOWN), 2.0)
        else:
            await call._finish(EndReason.SHUTDOWN)

    def stats(self) -> dict[str, int]:
        """Counters since start: admitted_trusted, admitted_authenticated, challenged,
        refused_untrusted, refused_auth, refused_unencrypted, refused_unavailable,
        refused_in_dialog, rtp_foreign_dropped (packets from anywhere but the negotiated
        address), srtp_rejected (packets failing SRTP authentication)."""
        return dict(self.counters)

    # --- addresses -----------------------------------------------------------------------

    def local_host(self, peer: str | None = None) -> str:
        if self.advertised_host:
            return self.advertised_host
        if self.host not in ("0.0.0.0", "::", ""):
            return self.host
        return _route_source(peer or "192.0.2.1")

    def _sent_by(self, peer: str | None, tls: bool) -> str:
        host = self.local_host(peer)
        host = f"[{host}]" if ":" in host else host
        port = self.tls_port if tls and self.tls is not None else self.advertised_port or self.port
        return f"{host}:{port}"

    def _via(self, peer: str | None, tls: bool = False) -> str:
        return f"SIP/2.0/{'TLS' if tls else 'UDP'} {self._sent_by(peer, tls)}"

    def contact(self, peer: str | None = None, tls: bool = False) -> str:
        return f"<sip:{self.user}@{self._sent_by(peer, tls)}{';transport=tls' if tls else ''}>"

    def target_uri(self, target: str, call: Call | None = None) -> SipUri:
        """A SIP URI as given, or a bare extension at the host the call came from."""
        if ":" in target and target.split(":", 1)[0].lower() in ("sip", "sips", "tel"):
            return SipUri.parse(target)
        if "@" in target:
            return SipUri.parse(f"sip:{target}")
        if call is None:
            raise ValueError(f"{target!r} is not a SIP URI and there is no PBX to ask")
        pbx = call.dialog.remote_target
        return SipUri("sip", target, pbx.host, pbx.port)

    # --- sending -------------------------------------------------------------------------

    def _send(self, data: bytes, destination: HostPort) -> None:
        flow = self._flows.get(destination)
        if flow is not None:  # a TLS connection: whatever goes there goes on it
            flow.send(data)
        elif self._transport is not None:
            self._transport.sendto(data, destination)

    async def _accept_tls(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._run_flow(StreamFlow(reader, writer))

    async def _run_flow(self, flow: StreamFlow, address: HostPort | None = None) -> None:
        """Messages on one TLS connection, handled like datagrams from its address."""
        address = address or flow.peer
        self._flows[address] = flow
        try:
            await flow.run(lambda data: self._on_datagram(data, address))
        finally:
            if self._flows.get(address) is flow:
                del self._flows[address]

    async def _connect_tls(self, destination: HostPort, server_name: str) -> bool:
        """A TLS connection to `destination` (reused while open); False when it fails."""
        if destination in self._flows:
            return True
        try:
            bound = self.host not in ("0.0.0.0", "::", "")  # leave from our own address
            reader, writer = await asyncio.open_connection(
                *destination,
                ssl=self.tls_client or stream.client_context(),
                server_hostname=server_name,
                local_addr=(self.host, 0) if bound else None,
            )
        except (OSError, ssl.SSLError) as exc:
            log.warning("TLS to %s failed: %s", destination[0], exc)
            return False
        self._spawn(self._run_flow(StreamFlow(reader, writer), destination))
        return True

    def secure(self, call: Call) -> bool:
        """Whether the call is signalled over TLS (then its media is SRTP)."""
        return call.flow_address is not None

    async def _resolve(self, hop: tuple[str, int]) -> HostPort:
        host, port = hop
        try:
            socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
            return host, port
        except OSError:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_DGRAM)
            return infos[0][4][0], port

    async def send_request(
        self,
        request: SipRequest,
        destination: HostPort,
        on_provisional: Callable[[SipResponse], None] | None = None,
    ) -> SipResponse:
        """Run a client transaction: retransmit until the final response (408 on timeout)."""
        request.set("User-Agent", self.user_agent)
        transaction = ClientTransaction(request, destination, self._send, on_provisional)
        self._client_transactions[transaction.key] = transaction
        try:
            return await transaction.run()
        finally:
            self._client_transactions.pop(transaction.key, None)

    async def send_in_dialog(
        self,
        call: Call,
        method: str,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> SipResponse:
        destination = call.flow_address or await self._resolve(call.dialog.next_hop())
        tls = self.secure(call)
        request = call.dialog.request(
            method,
            self._via(destination[0], tls),
            self.contact(destination[0], tls),
            body=body,
            content_type=content_type,
            headers=headers,
        )
        return await self.send_request(request, destination)

    async def send_bye(self, call: Call, reason: EndReason) -> None:
        """End the call at once and tell the far end; waits for the BYE's answer."""
        if call.state is CallState.ENDED:
            return
        await call._finish(reason)
        try:
            response = await self.send_in_dialog(call, "BYE")
            log.debug("BYE answered %d", response.status)
        except OSError as error:
            log.warning("BYE failed: %s", error)
        finally:
            self.calls.pop(call.dialog.id, None)

    def _respond(
        self,
        request: SipRequest,
        transaction: ServerTransaction,
        status: int,
        *,
        to_tag: str | None = None,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        content_type: str | None = None,
        until_ack: bool = False,
        on_timeout: Callable[[], None] | None = None,
    ) -> SipResponse:
        response = make_response(request, status, to_tag=to_tag)
        response.add("Server", self.user_agent)
        for name, value in headers or []:
            response.add(name, value)
        if body:
            response.add("Content-Type", content_type or "application/sdp")
            response.body = body
        if until_ack:
            transaction.respond_until_ack(response, on_timeout)
        else:
            transaction.respond(response)
        return response

    def _spawn(self, coro: Awaitable[None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("SIP task failed", exc_info=task.exception())

    def _forget_later(self, table: dict, key: object, delay: float = TIMEOUT) -> None:
        asyncio.get_running_loop().call_later(delay, table.pop, key, None)

    # --- receiving -----------------------------------------------------------------------

    def _on_datagram(self, data: bytes, addr: HostPort) -> None:
        if not data.strip():
            return  # CRLF keep-alive (RFC 5626)
        try:
            message = parse_message(data)
        except SipParseError as error:
            log.info("dropped unparseable SIP from %s: %s", addr[0], mask_digits(str(error)))
            return
        if isinstance(message, SipResponse):
            self._on_response(message)
            return
        try:
            self._on_request(message, addr)
        except SipParseError as error:
            log.info("bad %s from %s: %s", message.method, addr[0], mask_digits(str(error)))
            if message.method != "ACK":
                with contextlib.suppress(SipParseError, IndexError):
                    transaction = ServerTransaction(message, addr, self._send)
                    self._respond(message, transaction, 400, headers=[])
        except Exception as error:  # never let one odd request stop the endpoint
            log.error("failed on %s: %s", message.method, mask_digits(repr(error)))

    def _on_response(self, response: SipResponse) -> None:
        vias = response.vias
        if not vias:
            return
        _, method = response.cseq
        transaction = self._client_transactions.get((vias[0].branch or "", method))
        if transaction is not None:
            transaction.receive(response)
            return
        if method == "INVITE" and response.status >= 200:
            cached = self._acks.get((response.call_id, response.cseq[0]))
            if cached is not None:  # our ACK was lost; the final response is retransmitted
                self._send(*cached)

    def _on_request(self, request: SipRequest, addr: HostPort) -> None:
        via = request.vias[0]
        if via.host != addr[0]:
            via.params["received"] = addr[0]
        if "rport" in via.params or addr in self._flows:  # TLS: back on the connection
            via.params["rport"] = str(addr[1])
            destination = addr
        else:
            destination = (addr[0], via.port or 5060)
        self._replace_top_via(request, str(via))

        key = server_key(request)
        if request.method == "ACK":
            self._on_ack(request, key, addr)
            return
        existing = self._server_transactions.get(key)
        if existing is not None:
            existing.absorb_retransmission()
            return
        transaction = ServerTransaction(request, destination, self._send)
        self._server_transactions[key] = transaction
        # Timer J for non-INVITE; INVITE keys stay longer to absorb retransmissions and ACKs.
        lifetime = 2 * TIMEOUT if request.method == "INVITE" else TIMEOUT
        self._forget_later(self._server_transactions, key, lifetime)

        to_tag = request.to.tag
        if request.method == "CANCEL":
            self._on_cancel(request, transaction)
            return
        if request.method == "INVITE" and to_tag is None:
            self._spawn(self._on_invite(request, transaction, key))
            return
        if request.method == "OPTIONS" and to_tag is None:
            self._respond(
                request,
                transaction,
                200,
                to_tag=new_tag(),
                headers=[("Allow", ALLOW), ("Accept", ACCEPT), ("Contact", self.contact(addr[0]))],
            )
            return
        if to_tag is None:
            status = 501 if request.method not in ("BYE", "INFO", "NOTIFY", "UPDATE") else 481
            if request.method in ("REGISTER", "MESSAGE", "SUBSCRIBE", "PUBLISH", "REFER"):
                status = 405
            self._respond(
                request, transaction, status, to_tag=new_tag(), headers=[("Allow", ALLOW)]
            )
            return
        call = self.calls.get((request.call_id, to_tag, request.from_.tag or ""))
        if call is None:
            self._respond(request, transaction, 481)
            return
        if not self._from_call_peer(call, addr[0]):
            self._respond(request, transaction, 403)
            return
        if not call.dialog.accept_remote_cseq(request):
            self._respond(request, transaction, 500, headers=[("Retry-After", "1")])
            return
        self._on_in_dialog(call, request, transaction)

    @staticmethod
    def _replace_top_via(request: SipRequest, value: str) -> None:
        index = next(i for i, (name, _) in enumerate(request.headers) if name == "Via")
        request.headers[index] = ("Via", value)

    def _on_in_dialog(
        self, call: Call, request: SipRequest, transaction: ServerTransaction
    ) -> None:
        method = request.method
        if method == "BYE":
            self._respond(request, transaction, 200)
            self.calls.pop(call.dialog.id, None)
            self._spawn(call._finish(EndReason.REMOTE_HANGUP))
        elif method == "INFO":
            call._on_info(request)
            self._respond(request, transaction, 200)
        elif method == "NOTIFY":
            self._respond(request, transaction, 200)
            call._on_notify(request)
        elif method in ("INVITE", "UPDATE"):
            self._on_reinvite(call, request, transaction)
        elif method == "OPTIONS":
            self._respond(request, transaction, 200, headers=[("Allow", ALLOW), ("Accept", ACCEPT)])
        else:
            status = 405 if method in ("REFER", "MESSAGE", "SUBSCRIBE", "PRACK") else 501
            self._respond(request, transaction, status, headers=[("Allow", ALLOW)])

    def _from_call_peer(self, call: Call, host: str) -> bool:
        """In-dialog requests (BYE, re-INVITE with a new media address, ACK with SDP) only from
        the host the call was set up with, or a trusted peer: Call-ID and tags are no secret."""
        if self.admission is None or host == call.peer_host or self.admission.trusts(host):
            return True
        self.counters["refused_in_dialog"] += 1
        log.warning("call %s: in-dialog request from another host refused", call.caller_masked)
        return False

    def _on_ack(self, request: SipRequest, key: tuple[str, ...], addr: HostPort) -> None:
        transaction = self._server_transactions.get(key)
        final = transaction.final_status if transaction is not None else None
        if transaction is not None and final is not None and final >= 300:
            transaction.acknowledge()  # ACK to our 4xx/5xx/6xx: same branch as the INVITE
            return
        to_tag = request.to.tag
        call = self.calls.get((request.call_id, to_tag or "", request.from_.tag or ""))
        if call is None or call._invite_transaction is None:
            return
        if not self._from_call_peer(call, addr[0]):
            return
        invite = call._invite_transaction
        if invite.request.cseq[0] != request.cseq[0] or invite.acknowledged.is_set():
            return
        invite.acknowledge()
        if request.body and request.content_type == "application/sdp" and call.media is None:
            self._apply_answer(call, request.body)  # the answer to our offer in a 200 OK

    def _on_cancel(self, request: SipRequest, transaction: ServerTransaction) -> None:
        invite_key = (*server_key(request)[:-1], "INVITE")
        invite = self._server_transactions.get(invite_key)
        if invite is None:
            self._respond(request, transaction, 481)
            return
        self._respond(request, transaction, 200)
        call = self._pending_invites.pop(invite_key, None)
        if invite.final_status is None:
            self._respond(
                invite.request,
                invite,
                487,
                to_tag=call.dialog.local_tag if call else new_tag(),
                until_ack=True,
            )
            if call is not None:
                log.info("call %s cancelled before answer", call.caller_masked)
                self.calls.pop(call.dialog.id, None)
                self._spawn(call._finish(EndReason.CANCELLED))

    # --- incoming calls ------------------------------------------------------------------

    async def _on_invite(
        self, request: SipRequest, transaction: ServerTransaction, key: tuple[str, ...]
    ) -> None:
        try:
            await self._answer_invite(request, transaction, key)
        except Exception as error:
            log.error("INVITE failed: %s", mask_digits(repr(error)))
            self._pending_invites.pop(key, None)
            if transaction.final_status is None:
                self._respond(request, transaction, 500, to_tag=new_tag(), until_ack=True)
            for dialog_id, call in list(self.calls.items()):
                if call._invite_transaction is transaction:
                    self.calls.pop(dialog_id, None)
                    await call._finish(EndReason.REJECTED)

    async def _answer_invite(
        self, request: SipRequest, transaction: ServerTransaction, key: tuple[str, ...]
    ) -> None:
        self._respond(request, transaction, 100)
        local_tag = new_tag()

        def reject(status: int, headers: list[tuple[str, str]] | None = None) -> None:
            self._respond(
                request, transaction, status, to_tag=local_tag, headers=headers, until_ack=True
            )

        unsupported = [
            tag
            for value in request.get_all("Require")
            for tag in (item.strip() for item in value.split(","))
            if tag and tag not in SUPPORTED_EXTENSIONS
        ]
        if unsupported:
            reject(420, [("Unsupported", ", ".join(unsupported))])
            return
        peer = transaction.destination[0]
        caller = caller_number(request)
        secure = transaction.destination in self._flows
        if self.admission is not None:
            verdict = await self.admission.admit(request, peer, caller, secure)
            if transaction.final_status is not None:
                return  # CANCEL came while we looked the caller up
            if verdict.status is not None:
                reject(verdict.status, verdict.headers)
                return
            caller = verdict.caller or caller
        remote_tag = request.from_.tag or ""
        if any(
            call.dialog.call_id == request.call_id and call.dialog.remote_tag == remote_tag
            for call in self.calls.values()
        ):
            reject(482)  # the same request reached us twice by different paths (merged)
            return
        if len(self.calls) >= self.max_calls:
            reject(486)
            return
        offer: SessionDescription | None = None
        if request.body:
            if request.content_type != "application/sdp":
                reject(415, [("Accept", "application/sdp")])
                return
            try:
                offer = SessionDescription.parse(request.body)
            except SdpError:
                reject(400)
                return
        chosen = self._choose(offer, self.codecs, secure) if offer is not None else None
        if offer is not None and chosen is None:
            log.info("call from %s: no common codec", mask_number(caller_number(request)))
            reject(488, [("Warning", '305 linli "Incompatible media format"')])
            return

        codec = chosen[1].codec if chosen else self.codecs[0]
        payload_type = chosen[1].payload_type if chosen else codec.payload_type
        dtmf_pt = chosen[1].dtmf_payload_type if chosen else None
        rtp = await open_rtp_session(
            self.rtp_host,
            lambda: RtpSession(
                codec, payload_type, dtmf_pt, lambda _digit: None, counters=self.counters
            ),
            self.rtp_port_range,
        )
        if transaction.final_status is not None:  # CANCEL came while we were binding RTP
            await rtp.close()
            return
        dialog = Dialog.for_incoming(request, local_tag)
        local_sdp = LocalSession(self.local_host(peer), rtp.local_port)
        call = Call(
            self,
            dialog,
            rtp,
            local_sdp,
            direction="inbound",
            caller=caller,
            called=SipUri.parse(request.uri).user or request.to.uri.user,
            state=CallState.RINGING,
            peer_host=peer,
        )
        call.flow_address = transaction.destination if secure else None
        call._invite_transaction = transaction
        self.calls[dialog.id] = call
        self._pending_invites[key] = call
        log.info(
            "incoming call from %s to %s (%s)",
            call.caller_masked,
            mask_digits(call.called),
            codec.value,
        )
        contact = [("Contact", self.contact(peer, secure))]
        if self.send_ringing:
            self._respond(request, transaction, 180, to_tag=local_tag, headers=contact)
        if self.ring_seconds:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(call.ended.wait(), self.ring_seconds)
        if call.state is CallState.ENDED or self._pending_invites.pop(key, None) is None:
            return  # CANCEL arrived while ringing; 487 has been sent

        if chosen is not None and offer is not None:
            call.media = chosen[1]
            body = local_sdp.answer(offer, *chosen)
        else:
            # Delayed offer (an INVITE without SDP): we offer, the answer comes in the ACK.
            body = local_sdp.offer(self.codecs, dtmf_events=self.dtmf_events, secure=secure)
        headers = [
            *contact,
            *(("Record-Route", value) for value in request.get_all("Record-Route")),
            ("Allow", ALLOW),
        ]

        def ack_timeout() -> None:
            if call.state is not CallState.ENDED:
                self._spawn(self.send_bye(call, EndReason.NO_ACK))

        self._respond(
            request,
            transaction,
            200,
            to_tag=local_tag,
            headers=headers,
            body=body,
            until_ack=True,
            on_timeout=ack_timeout,
        )
        call.state = CallState.ACTIVE
        if call.media is not None:
            self._start_media(call)
        self._spawn(self._run_application(call))

    def _choose(
        self, offer: SessionDescription, codecs: tuple[Codec, ...], secure: bool
    ) -> tuple[int, MediaChoice] | None:
        return choose_media(offer, codecs, dtmf_events=self.dtmf_events, secure=secure)

    def _start_media(self, call: Call) -> None:
        media = call.media
        assert media is not None
        remote = self._media_address(call, media)
        call.rtp.update(
            media.codec, media.payload_type, media.dtmf_payload_type, remote, media.we_may_send
        )
        if media.crypto is not None and media.crypto != call.rtp_key:
            call.rtp.srtp = SrtpContext(call._sdp.key_for(media.crypto), media.crypto)
            call.rtp_key = media.crypto  # a re-INVITE with the same key keeps the context
        call.rtp.start(remote)

    def _media_address(self, call: Call, media: MediaChoice) -> tuple[str, int]:
        """Where the far end's RTP comes from and ours goes: the SDP's address and port. An
        address of the other IP family than our RTP socket (linphone offers its IPv6 address
        in an IPv4 call) cannot be the source of packets we receive: then the host the call is
        signalled with stands in, with the SDP's port. Never where the first packet came from."""
        host = media.remote_host
        if host != "0.0.0.0" and (":" in host) != (":" in self.rtp_host):
            log.info(
                "call %s: SDP address of the other family, using the signalling host",
                call.caller_masked,
            )
            host = call.peer_host
        return host, media.remote_port

    def _apply_answer(self, call: Call, body: bytes) -> None:
        try:
            chosen = self._choose(SessionDescription.parse(body), self.codecs, self.secure(call))
        except SdpError:
            chosen = None
        if chosen is None:
            log.info("call %s: unusable SDP answer in ACK", call.caller_masked)
            self._spawn(self.send_bye(call, EndReason.LOCAL_HANGUP))
            return
        call.media = chosen[1]
        self._start_media(call)

    async def _run_application(self, call: Call) -> None:
        try:
            await self.on_call(call)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("call handler failed for %s", call.caller_masked)
        finally:
            if call.state is CallState.ACTIVE and self._transport is not None:
                await self.send_bye(call, EndReason.LOCAL_HANGUP)

    def _on_reinvite(self, call: Call, request: SipRequest, transaction: ServerTransaction) -> None:
        """Hold, unhold, a new media address: same codec where possible, same RTP port."""
        until_ack = request.method == "INVITE"
        tls = self.secure(call)
        headers = [("Contact", self.contact(transaction.destination[0], tls)), ("Allow", ALLOW)]
        if not request.body:
            if until_ack:  # no offer: offer ours, current codec first; the answer is in the ACK
                call.media = None
                codecs = (call.codec, *(c for c in self.codecs if c is not call.codec))
                body = call._sdp.offer(codecs, dtmf_events=self.dtmf_events, secure=tls)
                if call._invite_transaction is not None:
                    call._invite_transaction.cancel_timers()
                call._invite_transaction = transaction
                self._respond(request, transaction, 200, headers=headers, body=body, until_ack=True)
            else:
                self._respond(request, transaction, 200, headers=headers)
            return
        try:
            offer = SessionDescription.parse(request.body)
        except SdpError:
            self._respond(request, transaction, 400, until_ack=until_ack)
            return
        preferred = (call.codec, *(c for c in self.codecs if c is not call.codec))
        chosen = self._choose(offer, preferred, tls)
        if chosen is None:
            self._respond(request, transaction, 488, until_ack=until_ack)
            return
        call.media = chosen[1]
        self._start_media(call)
        log.info(
            "call %s: media updated (%s%s)",
            call.caller_masked,
            chosen[1].codec.value,
            ", on hold" if chosen[1].on_hold else "",
        )
        body = call._sdp.answer(offer, *chosen)
        if until_ack:
            if call._invite_transaction is not None:
                call._invite_transaction.cancel_timers()
            call._invite_transaction = transaction
        self._respond(request, transaction, 200, headers=headers, body=body, until_ack=until_ack)

    # --- outgoing calls (bridging) -------------------------------------------------------

    async def dial(
        self, target: str, *, caller: str | None = None, timeout: float = 30.0
    ) -> Call | None:
        """Place a call; the answered Call, or None when refused, unanswered or unreachable.

        `caller` becomes the From user (a PBX shows it to staff), default our own user.
        """
        uri = self.target_uri(target)
        destination = await self._resolve((uri.params.get("maddr") or uri.host, uri.port or 5060))
        tls = (uri.params.get("transport") or "").lower() == "tls"  # then SRTP too
        if tls and not await self._connect_tls(destination, uri.host):
            return None
        local_host = self.local_host(destination[0])
        rtp = await open_rtp_session(
            self.rtp_host,
            lambda: RtpSession(
                self.codecs[0],
                self.codecs[0].payload_type,
                None,
                lambda _d: None,
                counters=self.counters,
            ),
            self.rtp_port_range,
        )
        sdp = LocalSession(local_host, rtp.local_port)
        local_tag = new_tag()
        from_user = caller or self.user
        request = SipRequest("INVITE", str(uri))
        request.add("Via", f"{self._via(destination[0], tls)};branch={new_branch()};rport")
        request.add("Max-Forwards", "70")
        request.add("From", f"<sip:{from_user}@{local_host}>;tag={local_tag}")
        request.add("To", f"<{uri}>")
        request.add("Call-ID", new_call_id(local_host))
        request.add("CSeq", "1 INVITE")
        request.add("Contact", self.contact(destination[0], tls))
        request.add("Allow", ALLOW)
        request.add("Content-Type", "application/sdp")
        request.body = sdp.offer(self.codecs, dtmf_events=self.dtmf_events, secure=tls)
        masked = mask_number(uri.user)
        deadline = asyncio.get_running_loop().time() + timeout
        challenged = False
        while True:
            invite = asyncio.ensure_future(self.send_request(request, destination))
            left = max(deadline - asyncio.get_running_loop().time(), 0.0)
            try:
                done, _ = await asyncio.wait({invite}, timeout=left)
            except asyncio.CancelledError:  # shut down while it rings: leave no phone ringing
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._cancel(request, destination), 2.0)
                invite.cancel()
                await rtp.close()
                raise
            cancelled = not done
            if cancelled:
                await self._cancel(request, destination)
                try:  # the INVITE transaction goes on: 487 (which it ACKs) or a crossed 2xx
                    await asyncio.wait_for(asyncio.shield(invite), TIMEOUT)
                except asyncio.TimeoutError:
                    invite.cancel()
                    await rtp.close()
                    return None
            response = invite.result()
            if response.status not in (401, 407) or cancelled or challenged:
                break
            self._ack_failure(request, response, destination)
            answered = self._answer_challenge(request, response)
            if answered is None:
                break
            request, challenged = answered, True
        if not 200 <= response.status < 300:
            if response.status != 408:
                self._ack_failure(request, response, destination)
            await rtp.close()
            log.info("outgoing call to %s not answered (%d)", masked, response.status)
            return None
        dialog = Dialog.for_outgoing(request, response)
        cseq = request.cseq[0]
        ack = dialog.request(
            "ACK", self._via(destination[0], tls), self.contact(destination[0], tls), cseq=cseq
        )
        ack_destination = destination if tls else await self._resolve(dialog.next_hop())
        ack_bytes = ack.encode()
        self._send(ack_bytes, ack_destination)
        self._acks[(dialog.call_id, cseq)] = (ack_bytes, ack_destination)
        self._forget_later(self._acks, (dialog.call_id, cseq))
        call = Call(
            self,
            dialog,
            rtp,
            sdp,
            direction="outbound",
            caller=from_user,
            called=uri.user,
            state=CallState.ACTIVE,
            peer_host=destination[0],
        )
        call.flow_address = destination if tls else None
        self.calls[dialog.id] = call
        try:
            chosen = self._choose(SessionDescription.parse(response.body), self.codecs, tls)
        except SdpError:
            chosen = None
        if chosen is None or cancelled:
            await self.send_bye(call, EndReason.REJECTED)
            return None
        call.media = chosen[1]
        self._start_media(call)
        log.info("outgoing call to %s answered (%s)", masked, chosen[1].codec.value)
        return call

    def _answer_challenge(self, request: SipRequest, response: SipResponse) -> SipRequest | None:
        """The INVITE again with our digest credentials (RFC 3261 22.2): same Call-ID and
        tags, next CSeq, new branch. None when we have none or know no offered algorithm."""
        if self.credentials is None:
            return None
        asked, answer = (
            ("WWW-Authenticate", "Authorization")
            if response.status == 401
            else ("Proxy-Authenticate", "Proxy-Authorization")
        )
        value = authorization(response.get_all(asked), self.credentials, "INVITE", request.uri)
        if value is None:
            return None
        again = SipRequest("INVITE", request.uri)
        for name, header in request.headers:
            if name == "Via":
                header = header.replace(request.vias[0].branch or "", new_branch())
            elif name == "CSeq":
                header = f"{request.cseq[0] + 1} INVITE"
            again.add(name, header)
        again.add(answer, value)
        again.body = request.body
        return again

    def _ack_failure(
        self, request: SipRequest, response: SipResponse, destination: HostPort
    ) -> None:
        """ACK to a non-2xx final response: same branch, To with the response's tag (17.1.1.3)."""
        ack = SipRequest("ACK", request.uri)
        ack.add("Via", request.get("Via") or "")
        ack.add("Max-Forwards", "70")
        ack.add("From", request.get("From") or "")
        ack.add("To", response.get("To") or "")
        ack.add("Call-ID", request.call_id)
        ack.add("CSeq", f"{request.cseq[0]} ACK")
        data = ack.encode()
        self._send(data, destination)
        self._acks[(request.call_id, request.cseq[0])] = (data, destination)
        self._forget_later(self._acks, (request.call_id, request.cseq[0]))

    async def _cancel(self, invite: SipRequest, destination: HostPort) -> None:
        cancel = SipRequest("CANCEL", invite.uri)
        cancel.add("Via", invite.get("Via") or "")
        cancel.add("Max-Forwards", "70")
        cancel.add("From", invite.get("From") or "")
        cancel.add("To", invite.get("To") or "")
        cancel.add("Call-ID", invite.call_id)
        cancel.add("CSeq", f"{invite.cseq[0]} CANCEL")
        await self.send_request(cancel, destination)


def _route_source(peer: str) -> str:
    """Our address on the route towards `peer` (no packet is sent)."""
    family = socket.AF_INET6 if ":" in peer else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((peer, 9))
            return probe.getsockname()[0]
        except OSError:
            return "127.0.0.1"


__all__ = ["SipEndpoint"]

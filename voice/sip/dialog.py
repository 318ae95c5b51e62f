"""SIP dialogs (RFC 3261 section 12): identity, CSeq and route set of one call leg.

Only loose routing (`;lr` proxies, which every current PBX uses) is supported; a strict-routing
first hop from RFC 2543 days is treated as loose.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from voice.sip.message import (
    Address,
    SipParseError,
    SipRequest,
    SipResponse,
    SipUri,
    new_branch,
)

DialogId = tuple[str, str, str]  # Call-ID, local tag, remote tag


@dataclass
class Dialog:
    call_id: str
    local_tag: str
    remote_tag: str
    local: Address  # our From in requests we send (carries local_tag)
    remote: Address  # our To in requests we send (carries remote_tag)
    remote_target: SipUri  # the far end's Contact
    route_set: list[str] = field(default_factory=list)
    local_cseq: int = field(default_factory=lambda: secrets.randbelow(10000) + 1)
    remote_cseq: int | None = None

    @property
    def id(self) -> DialogId:
        return (self.call_id, self.local_tag, self.remote_tag)

    @classmethod
    def for_incoming(cls, invite: SipRequest, local_tag: str) -> Dialog:
        """UAS side (section 12.1.1): route set is Record-Route in the order received."""
        local = invite.to
        local.params["tag"] = local_tag
        remote = invite.from_
        contact = invite.contact
        target = contact.uri if contact else remote.uri
        return cls(
            call_id=invite.call_id,
            local_tag=local_tag,
            remote_tag=remote.tag or "",
            local=local,
            remote=remote,
            remote_target=target,
            route_set=invite.get_all("Record-Route"),
            remote_cseq=invite.cseq[0],
        )

    @classmethod
    def for_outgoing(cls, invite: SipRequest, response: SipResponse) -> Dialog:
        """UAC side (section 12.1.2): route set is Record-Route of the 2xx, reversed."""
        contact = response.contact
        if contact is None:
            raise SipParseError("2xx to INVITE without Contact")
        local = invite.from_
        remote = response.to
        cseq, _ = invite.cseq
        return cls(
            call_id=invite.call_id,
            local_tag=local.tag or "",
            remote_tag=remote.tag or "",
            local=local,
            remote=remote,
            remote_target=contact.uri,
            route_set=list(reversed(response.get_all("Record-Route"))),
            local_cseq=cseq,
        )

    def next_hop(self) -> tuple[str, int]:
        """Where in-dialog requests go: the first route if any, else the remote target."""
        uri = Address.parse(self.route_set[0]).uri if self.route_set else self.remote_target
        maddr = uri.params.get("maddr")
        return (maddr or uri.host, uri.port or 5060)

    def accept_remote_cseq(self, request: SipRequest) -> bool:
        """Section 12.2.2: a lower CSeq than seen before is out of order (answer 500)."""
        number, method = request.cseq
        if method in ("ACK", "CANCEL"):
            return True
        if self.remote_cseq is not None and number < self.remote_cseq:
            return False
        self.remote_cseq = number
        return True

    def request(
        self,
        method: str,
        via: str,
        contact: str,
        *,
        cseq: int | None = None,
        body: bytes = b"",
        content_type: str | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> SipRequest:
        """A new in-dialog request (section 12.2.1.1); ACK and CANCEL pass the INVITE's CSeq."""
        if cseq is None:
            self.local_cseq += 1
            cseq = self.local_cseq
        request = SipRequest(method, str(self.remote_target))
        request.add("Via", f"{via};branch={new_branch()};rport")
        request.add("Max-Forwards", "70")
        for route in self.route_set:
            request.add("Route", route)
        request.add("From", str(self.local))
        request.add("To", str(self.remote))
        request.add("Call-ID", self.call_id)
        request.add("CSeq", f"{cseq} {method}")
        request.add("Contact", contact)
        for name, value in headers or []:
            request.add(name, value)
        if body:
            request.add("Content-Type", content_type or "application/sdp")
        request.body = body
        return request

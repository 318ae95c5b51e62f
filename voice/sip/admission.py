"""Who may call: trusted peers by address, everyone else by SIP digest, some users always.

A SIP From header is a claim anyone can make. An endpoint with an `Admission` answers an
INVITE only when

- the caller's user must authenticate (`must_authenticate(user)`, e.g. an SOS terminal's
  `terminal-…`) and a digest challenge was answered with that user's credentials — from any
  host, trusted or not; the authenticated user is then the caller, whatever P-Asserted-Identity
  says; or
- the user need not authenticate and the INVITE came from a trusted peer (the PBX or SIP trunk:
  host addresses or CIDR networks), which vouches for the number it sends.

Everything else is refused: 403 for an untrusted peer, for wrong credentials, for a caller
that comes back without credentials after a challenge, and (`encrypted_from_untrusted`, set
when the endpoint has TLS) for such a caller on an untrusted network that is not on TLS.
401 with a fresh nonce is the challenge.
`lookup(user, realm)` gives HA1 per algorithm (or None: no such user); when it fails
(`LookupUnavailable`) the call gets 503, since without it no one can be admitted. Refusals are
logged with the number masked and counted in `counters` (see `SipEndpoint.stats`).
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field

from voice.sip import digest
from voice.sip.message import SipRequest, mask_number

log = logging.getLogger(__name__)

Lookup = Callable[[str, str], Awaitable[Mapping[str, str] | None]]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
LOOPBACK = ("127.0.0.1", "::1")  # make run: the PBX (or baresip) on this machine


class LookupUnavailable(Exception):
    """Credentials could not be fetched (the API is down): nobody can be authenticated now."""


def networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """Hosts or CIDRs ("10.0.0.5", "10.1.0.0/16", "::1"); ValueError for anything else."""
    return tuple(ipaddress.ip_network(entry.strip(), strict=False) for entry in entries if entry)


@dataclass(frozen=True)
class Verdict:
    """`status` None: admitted, as `caller` (None: the caller the request names)."""

    status: int | None
    reason: str
    caller: str | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)


class Admission:
    def __init__(
        self,
        *,
        trusted: Iterable[str] = LOOPBACK,
        must_authenticate: Callable[[str], bool] = lambda _user: False,
        lookup: Lookup | None = None,
        realm: str = "linli",
        algorithms: tuple[str, ...] = ("MD5",),
        nonces: digest.NonceBook | None = None,
        counters: Counter[str] | None = None,
        encrypted_from_untrusted: bool = False,
    ) -> None:
        self.trusted = networks(trusted)
        self.must_authenticate = must_authenticate
        self.lookup = lookup
        self.realm = realm
        self.algorithms = algorithms  # offered in this order; Debian 12's baresip knows MD5 only
        self.nonces = nonces or digest.NonceBook()
        self.counters: Counter[str] = counters if counters is not None else Counter()
        self._challenged: dict[tuple[str, str], float] = {}  # (Call-ID, From tag) -> until
        # True once the endpoint has TLS: callers that must authenticate and are not on a
        # trusted network must come over TLS (then with SRTP), never in clear.
        self.encrypted_from_untrusted = encrypted_from_untrusted

    def trusts(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host.split("%")[0])
        except ValueError:
            return False
        return any(address in network for network in self.trusted)

    async def admit(
        self, request: SipRequest, host: str, claimed: str, secure: bool = False
    ) -> Verdict:
        """Decide on an INVITE from `host` whose caller is `claimed` (P-Asserted-Identity or
        From user); `secure`: it came over TLS."""
        user = request.from_.uri.user
        authenticating = self.must_authenticate(user) or self.must_authenticate(claimed)
        if authenticating and self.encrypted_from_untrusted and not (secure or self.trusts(host)):
            verdict = Verdict(403, "unencrypted from an untrusted network")
        elif authenticating:
            verdict = await self._authenticate(request, host, user)
        elif self.trusts(host):
            verdict = Verdict(None, "trusted peer")
        else:
            verdict = Verdict(403, "untrusted peer")
        self._count(verdict, host, claimed)
        return verdict

    def _count(self, verdict: Verdict, host: str, claimed: str) -> None:
        if verdict.status is None:
            self.counters["admitted_authenticated" if verdict.caller else "admitted_trusted"] += 1
            return
        key = {401: "challenged", 503: "refused_unavailable"}.get(verdict.status)
        if key is None:
            key = {
                "untrusted peer": "refused_untrusted",
                "unencrypted from an untrusted network": "refused_unencrypted",
            }.get(verdict.reason, "refused_auth")
        self.counters[key] += 1
        level = logging.INFO if verdict.status == 401 else logging.WARNING
        log.log(
            level,
            "call from %s as %s: %d (%s)",
            host,
            mask_number(claimed),
            verdict.status,
            verdict.reason,
        )

    def _challenge(self, request: SipRequest, host: str, stale: bool = False) -> Verdict:
        self._forget_expired()
        key = (request.call_id, request.from_.tag or "")
        self._challenged[key] = time.monotonic() + self.nonces.lifetime
        nonce = self.nonces.issue(host)
        headers = [
            ("WWW-Authenticate", digest.challenge(self.realm, nonce, algorithm, stale=stale))
            for algorithm in self.algorithms
        ]
        return Verdict(401, "stale nonce" if stale else "challenged", headers=headers)

    def _forget_expired(self) -> None:
        now = time.monotonic()
        for key in [k for k, until in self._challenged.items() if until < now]:
            del self._challenged[key]

    async def _authenticate(self, request: SipRequest, host: str, user: str) -> Verdict:
        fields = next(
            (
                parsed
                for value in request.get_all("Authorization")
                if (parsed := digest.parse_credentials(value)) is not None
                and parsed.get("realm") == self.realm
            ),
            None,
        )
        if fields is None:
            self._forget_expired()
            if (request.call_id, request.from_.tag or "") in self._challenged:
                return Verdict(403, "no credentials after a challenge")
            return self._challenge(request, host)
        algorithm = (fields.get("algorithm") or "MD5").upper()
        if fields.get("username") != user or algorithm not in self.algorithms:
            return Verdict(403, "credentials for another user or algorithm")
        if fields.get("uri") != request.uri:
            return Verdict(403, "credentials for another request")
        nonce = fields.get("nonce", "")
        state = self.nonces.check(nonce, host)
        if state == "forged":
            return Verdict(403, "not our nonce")
        if self.lookup is None:
            return Verdict(403, "nobody can authenticate here")
        try:
            known = await self.lookup(user, self.realm)
        except LookupUnavailable:
            return Verdict(503, "credentials unavailable", headers=[("Retry-After", "5")])
        secret = (known or {}).get(algorithm)
        expected = digest.expected_response(algorithm, secret or "", request.method, fields)
        if secret is None or expected is None:
            return Verdict(403, "unknown user")
        if not hmac.compare_digest(expected, fields.get("response", "").lower()):
            return Verdict(403, "wrong credentials")
        if state == "stale":  # right password, old or spent nonce: a replay, or a slow caller
            return self._challenge(request, host, stale=True)
        self.nonces.spend(nonce)
        self._challenged.pop((request.call_id, request.from_.tag or ""), None)
        return Verdict(None, "authenticated", caller=user)

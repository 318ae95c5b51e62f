"""Who may call the SIP endpoint: trusted peers by address, terminals only by digest.

Real SIP on loopback: 127.0.0.1 is the trusted peer (the PBX), 127.0.0.2 — another loopback
address — a host on a network Linli does not control. baresip places the calls a phone would;
raw SIP typed by the test covers what no phone does on purpose (no credentials after a
challenge, a replayed answer, a BYE from elsewhere). The hotline with the API, its terminals'
resident and the recogniser is in tests/test_hotline.py.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Mapping
from pathlib import Path

import pytest

from tests.sip_clients import Baresip, have_programs
from tests.test_voice_sip import Hotline, RawPeer, microphone, offer_sdp
from voice.sip import Call, EndReason, SipEndpoint
from voice.sip.admission import Admission
from voice.sip.digest import Credentials, NonceBook, authorization
from voice.sip.echo_app import tone
from voice.sip.message import SipResponse
from workorders.signing import digest_ha1

TRUSTED = "127.0.0.1"
UNTRUSTED = "127.0.0.2"
TERMINAL = "terminal-sos-sec1"
PASSWORD = secrets.token_hex(16)
PHONE = "13800138000"


@pytest.fixture(autouse=True)
def _baresip_installed() -> None:
    assert "baresip" not in have_programs(), "install baresip (scripts/debian-deps)"


async def lookup(user: str, realm: str) -> Mapping[str, str] | None:
    """The terminal's HA1, as GET /terminals/sip-digest gives it to the hotline."""
    return {"MD5": digest_ha1(user, realm, PASSWORD, "MD5")} if user == TERMINAL else None


def endpoint(hotline: Hotline, nonces: NonceBook | None = None) -> SipEndpoint:
    admission = Admission(
        trusted=(TRUSTED,),
        must_authenticate=lambda user: user.startswith("terminal-"),
        lookup=lookup,
        nonces=nonces,
    )
    return SipEndpoint(hotline, host=TRUSTED, port=0, admission=admission)


def raw_invite(
    peer: RawPeer, port: int, call_id: str, branch: str, cseq: int, user: str = TERMINAL
) -> str:
    return f"""INVITE sip:hotline@127.0.0.1:{port} SIP/2.0
Via: SIP/2.0/UDP {UNTRUSTED}:{peer.port};branch={branch};rport
Max-Forwards: 70
From: <sip:{user}@{UNTRUSTED}>;tag=sec1
To: <sip:hotline@127.0.0.1:{port}>
Call-ID: {call_id}
CSeq: {cseq} INVITE
Contact: <sip:{user}@{UNTRUSTED}:{peer.port}>
Content-Type: application/sdp"""


def ack_failure(peer: RawPeer, port: int, call_id: str, branch: str, cseq: int, tag: str) -> str:
    return f"""ACK sip:hotline@127.0.0.1:{port} SIP/2.0
Via: SIP/2.0/UDP {UNTRUSTED}:{peer.port};branch={branch};rport
From: <sip:{TERMINAL}@{UNTRUSTED}>;tag=sec1
To: <sip:hotline@127.0.0.1:{port}>;tag={tag}
Call-ID: {call_id}
CSeq: {cseq} ACK"""


async def challenged(peer: RawPeer, port: int, call_id: str) -> SipResponse:
    """INVITE without credentials: 401 with a digest challenge, which we acknowledge."""
    branch = f"z9hG4bK{call_id}"
    peer.send(raw_invite(peer, port, call_id, branch, 1), port, offer_sdp(41000))
    challenge = await peer.response(401)
    peer.send(ack_failure(peer, port, call_id, branch, 1, challenge.to.tag or ""), port)
    return challenge


def with_credentials(text: str, challenge: SipResponse, password: str, port: int) -> str:
    answer = authorization(
        challenge.get_all("WWW-Authenticate"),
        Credentials(TERMINAL, password),
        "INVITE",
        f"sip:hotline@127.0.0.1:{port}",
    )
    return f"{text}\nAuthorization: {answer}"


async def talk(phone: Baresip, uri: str, hotline: Hotline, seconds: float) -> Call:
    """The phone calls `uri`, is answered, talks for `seconds` and hangs up: the call."""
    await phone.dial(uri)
    await phone.wait_event("CALL_ESTABLISHED")
    await hotline.wait_calls(1)
    await asyncio.sleep(seconds)
    await phone.hangup()
    await phone.wait_event("CALL_CLOSED")
    [call] = hotline.calls
    assert await asyncio.wait_for(call.wait_ended(), 5) is EndReason.REMOTE_HANGUP
    return call


async def test_a_terminal_claim_is_challenged_from_every_host_and_refused_without_credentials() -> (
    None
):
    hotline = Hotline()
    async with endpoint(hotline) as sip:
        for host in (UNTRUSTED, TRUSTED):  # trusted or not: a terminal proves who it is
            peer = await RawPeer.open(host)
            try:
                challenge = await challenged(peer, sip.port, f"nocred-{host}")
                [offered] = challenge.get_all("WWW-Authenticate")
                assert offered.startswith('Digest realm="linli", nonce="')
                assert offered.endswith('qop="auth", algorithm=MD5')
                # Back without credentials: refused, not challenged for ever.
                again = raw_invite(peer, sip.port, f"nocred-{host}", "z9hG4bKc2", 2)
                peer.send(again, sip.port, offer_sdp(41000))
                await peer.response(403)
            finally:
                peer.close()
        assert sip.stats() == {"challenged": 2, "refused_auth": 2}
    assert hotline.calls == []


async def test_a_terminal_with_its_password_is_admitted_from_an_untrusted_host(
    tmp_path: Path,
) -> None:
    """baresip answers the challenge and is admitted as the terminal. Its SDP says 127.0.0.2,
    but it sends RTP from a wildcard socket, so the packets leave from 127.0.0.1: not the
    negotiated address, so every one is dropped and counted and nothing is heard — the rule
    is the SDP's address, not wherever packets come from."""
    hotline = Hotline(tone(700, 0.5))
    async with endpoint(hotline) as sip:
        mic = microphone(tmp_path / "mic.wav", tone(440, 3.0))
        async with Baresip(
            tmp_path / "terminal", TERMINAL, mic, host=UNTRUSTED, auth_pass=PASSWORD
        ) as terminal:
            call = await talk(terminal, f"sip:hotline@127.0.0.1:{sip.port}", hotline, 1.5)
        dropped = call.rtp.foreign_packets
        assert sip.stats() == {
            "challenged": 1,
            "admitted_authenticated": 1,
            "rtp_foreign_dropped": dropped,
        }
    assert (call.caller, call.peer_host) == (TERMINAL, UNTRUSTED)
    assert call.rtp.remote is not None and call.rtp.remote[0] == UNTRUSTED
    assert dropped >= 50 and call.rtp.packets_received == 0  # over a second of its audio
    assert bytes(hotline.audio[call.call_id]) == b""


async def test_a_terminal_with_a_wrong_password_is_refused(tmp_path: Path) -> None:
    hotline = Hotline()
    async with endpoint(hotline) as sip:
        mic = microphone(tmp_path / "mic.wav", b"", 5)
        async with Baresip(
            tmp_path / "terminal", TERMINAL, mic, host=UNTRUSTED, auth_pass="not-" + PASSWORD
        ) as terminal:
            await terminal.dial(f"sip:hotline@127.0.0.1:{sip.port}")
            closed = await terminal.wait_event("CALL_CLOSED")
        assert sip.stats() == {"challenged": 1, "refused_auth": 1}
    assert "403" in closed.get("param", ""), closed
    assert hotline.calls == []


async def test_phones_are_taken_from_trusted_peers_only(tmp_path: Path) -> None:
    hotline = Hotline(hangup_after=0.5)
    async with endpoint(hotline) as sip:
        mic = microphone(tmp_path / "mic.wav", b"", 8)
        async with Baresip(tmp_path / "stranger", PHONE, mic, host=UNTRUSTED) as stranger:
            await stranger.dial(f"sip:hotline@127.0.0.1:{sip.port}")
            refused = await stranger.wait_event("CALL_CLOSED")
        assert sip.stats() == {"refused_untrusted": 1}
        async with Baresip(tmp_path / "pbx", PHONE, mic) as pbx:
            await pbx.dial(f"sip:hotline@127.0.0.1:{sip.port}")
            await pbx.wait_event("CALL_ESTABLISHED")
            await pbx.wait_event("CALL_CLOSED")
        assert sip.stats() == {"refused_untrusted": 1, "admitted_trusted": 1}
    assert "403" in refused.get("param", ""), refused
    [call] = hotline.calls
    assert (call.caller, call.peer_host) == (PHONE, TRUSTED)


async def test_an_answer_is_good_once_and_only_while_its_nonce_is_fresh() -> None:
    """A captured INVITE with credentials replayed (a new transaction, a new call) is
    challenged again (stale), as is an answer to a nonce that has expired; a nonce made for
    another host is refused outright."""
    now = [1000.0]
    nonces = NonceBook(lifetime=30.0, clock=lambda: now[0])
    hotline = Hotline(hangup_after=0.2)
    async with endpoint(hotline, nonces) as sip:
        peer = await RawPeer.open(UNTRUSTED)
        try:
            challenge = await challenged(peer, sip.port, "once-1")
            text = raw_invite(peer, sip.port, "once-1", "z9hG4bKo2", 2)
            signed = with_credentials(text, challenge, PASSWORD, sip.port)
            peer.send(signed, sip.port, offer_sdp(41000))
            await peer.response(200)
            await hotline.wait_calls(1)
            assert hotline.calls[0].caller == TERMINAL

            replay = signed.replace("z9hG4bKo2", "z9hG4bKo3").replace("once-1", "once-2")
            peer.send(replay, sip.port, offer_sdp(41000))
            stale = await peer.response(401)
            assert (stale.get("WWW-Authenticate") or "").endswith("stale=true")

            challenge = await challenged(peer, sip.port, "late-1")
            now[0] += 31.0  # the terminal took longer than the nonce lives
            late = with_credentials(
                raw_invite(peer, sip.port, "late-1", "z9hG4bKl2", 2), challenge, PASSWORD, sip.port
            )
            peer.send(late, sip.port, offer_sdp(41000))
            again = await peer.response(401)
            assert (again.get("WWW-Authenticate") or "").endswith("stale=true")
        finally:
            peer.close()
        assert sip.stats() == {"challenged": 4, "admitted_authenticated": 1}
    assert len(hotline.calls) == 1
    nonce = nonces.issue(UNTRUSTED)
    assert (nonces.check(nonce, UNTRUSTED), nonces.check(nonce, TRUSTED)) == ("fresh", "forged")


async def test_in_dialog_requests_from_another_host_are_refused(tmp_path: Path) -> None:
    """Call-ID and tags are no secret: a BYE (or a re-INVITE moving the media) from another
    host than the call's is refused, and the call goes on."""
    hotline = Hotline()
    async with endpoint(hotline) as sip:
        mic = microphone(tmp_path / "mic.wav", b"", 20)
        async with Baresip(tmp_path / "pbx", PHONE, mic) as pbx:
            await pbx.dial(f"sip:hotline@127.0.0.1:{sip.port}")
            await pbx.wait_event("CALL_ESTABLISHED")
            await hotline.wait_calls(1)
            call = hotline.calls[0]
            dialog = call.dialog
            peer = await RawPeer.open(UNTRUSTED)
            try:
                peer.send(
                    f"""BYE sip:hotline@127.0.0.1:{sip.port} SIP/2.0
Via: SIP/2.0/UDP {UNTRUSTED}:{peer.port};branch=z9hG4bKbye1;rport
From: {dialog.remote}
To: {dialog.local}
Call-ID: {dialog.call_id}
CSeq: {(dialog.remote_cseq or 1) + 1} BYE""",
                    sip.port,
                )
                await peer.response(403)
            finally:
                peer.close()
            assert call.end_reason is None
            await pbx.hangup()
            assert await asyncio.wait_for(call.wait_ended(), 5) is EndReason.REMOTE_HANGUP
        assert sip.stats() == {"admitted_trusted": 1, "refused_in_dialog": 1}

"""Encrypted terminal calls: SIP over TLS, SRTP with SDES keys, against baresip.

The endpoint has a TLS listener with a certificate from a CA the test makes; baresip, as an
SOS terminal, calls `sip:…;transport=tls` with `mediaenc=srtp-mand` and answers the digest
challenge. Audio must cross both ways (so both sides' keys are right), and what went over the
wire must be SRTP. The hotline with the dialogue understanding such a caller is in
tests/test_hotline.py.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.certificates import make_certificates
from tests.sip_clients import Baresip, have_programs
from tests.test_sip_security import PASSWORD, TERMINAL, UNTRUSTED, lookup, raw_invite, talk
from tests.test_voice_sip import Hotline, RawPeer, dominant, loud_seconds, microphone
from voice.sip import Call, SipEndpoint
from voice.sip.admission import Admission
from voice.sip.digest import Credentials
from voice.sip.echo_app import tone
from voice.sip.stream import client_context, server_context

TLS_CLIENT = "module srtp.so\nsip_cafile {ca}\n"


@pytest.fixture(autouse=True)
def _baresip_installed() -> None:
    assert "baresip" not in have_programs(), "install baresip (scripts/debian-deps)"


def tls_endpoint(hotline: Hotline, tmp_path: Path) -> SipEndpoint:
    made = make_certificates(tmp_path / "pki")
    admission = Admission(
        trusted=("127.0.0.1",),
        must_authenticate=lambda user: user.startswith("terminal-"),
        lookup=lookup,
        encrypted_from_untrusted=True,
    )
    return SipEndpoint(
        hotline,
        host="127.0.0.1",
        port=0,
        admission=admission,
        tls=server_context(made.certificate, made.key),
        tls_port=0,
    )


def terminal_phone(tmp_path: Path, mic: Path, **settings: str) -> Baresip:
    return Baresip(
        tmp_path / "terminal",
        TERMINAL,
        mic,
        auth_pass=PASSWORD,
        account_params=";mediaenc=srtp-mand",
        extra_config=TLS_CLIENT.format(ca=tmp_path / "pki" / "ca.pem"),
        **settings,
    )


async def test_a_terminal_calls_over_tls_with_srtp_and_both_sides_hear_each_other(
    tmp_path: Path,
) -> None:
    hotline = Hotline(tone(700, 1.0))
    async with tls_endpoint(hotline, tmp_path) as sip:
        mic = microphone(tmp_path / "mic.wav", tone(440, 4.0))
        async with terminal_phone(tmp_path, mic) as terminal:
            uri = f"sip:hotline@127.0.0.1:{sip.tls_port};transport=tls"
            call = await talk(terminal, uri, hotline, 2.0)
        heard = terminal.received_audio()
        stats = sip.stats()
    assert call.caller == TERMINAL and sip.secure(call)
    assert call.media is not None and call.media.crypto is not None
    assert call.media.crypto.suite == "AES_CM_128_HMAC_SHA1_80"
    assert stats == {"challenged": 1, "admitted_authenticated": 1}  # no packet refused
    received = bytes(hotline.audio[call.call_id])
    assert loud_seconds(received, 300) >= 1.0 and dominant(received, [440, 700]) == 440
    assert 0.75 <= loud_seconds(heard) <= 1.25 and dominant(heard, [440, 700]) == 700


async def test_plain_rtp_over_tls_is_refused(tmp_path: Path) -> None:
    """A TLS call offering unencrypted media: no usable stream (488); nothing is answered."""
    hotline = Hotline()
    async with tls_endpoint(hotline, tmp_path) as sip:
        mic = microphone(tmp_path / "mic.wav", b"", 5)
        phone = terminal_phone(tmp_path, mic)
        phone.account_params = ""
        async with phone:
            await phone.dial(f"sip:hotline@127.0.0.1:{sip.tls_port};transport=tls")
            closed = await phone.wait_event("CALL_CLOSED")
    assert "488" in closed.get("param", ""), closed
    assert hotline.calls == []


async def test_from_an_untrusted_network_a_terminal_must_come_over_tls(tmp_path: Path) -> None:
    """With TLS there, a terminal on 127.0.0.2 over UDP is refused before any challenge; the
    voice line's own endpoint on 127.0.0.2 dialling over TLS is challenged, admitted, and its
    SRTP from there is heard."""
    hotline = Hotline(tone(700, 0.5))
    async with tls_endpoint(hotline, tmp_path) as sip:
        peer = await RawPeer.open(UNTRUSTED)
        try:
            peer.send(raw_invite(peer, sip.port, "clear-1", "z9hG4bKclear1", 1), sip.port)
            await peer.response(403)
        finally:
            peer.close()
        assert sip.stats() == {"refused_unencrypted": 1}
        device = SipEndpoint(
            quiet,
            host=UNTRUSTED,
            port=0,
            user=TERMINAL,
            credentials=Credentials(TERMINAL, PASSWORD),
            tls_client=client_context(tmp_path / "pki" / "ca.pem"),
        )
        async with device:
            out = await device.dial(f"sip:hotline@127.0.0.1:{sip.tls_port};transport=tls")
            assert out is not None and device.secure(out)
            await hotline.wait_calls(1)
            speech = tone(440, 1.5)  # the terminal's microphone, 20 ms at a time
            for i in range(0, len(speech), 320):
                out.send_frame(speech[i : i + 320])
                await asyncio.sleep(0.02)
            await out.hangup()
            [call] = hotline.calls
            await asyncio.wait_for(call.wait_ended(), 5)
        stats = sip.stats()
    assert (call.caller, call.peer_host, sip.secure(call)) == (TERMINAL, UNTRUSTED, True)
    assert stats == {"refused_unencrypted": 1, "challenged": 1, "admitted_authenticated": 1}
    received = bytes(hotline.audio[call.call_id])
    assert loud_seconds(received, 300) >= 0.5 and dominant(received, [440, 700]) == 440


async def quiet(call: Call) -> None:
    """The device takes no calls in this test."""
    raise AssertionError("nobody calls the device here")

"""SDP offer/answer (RFC 4566, RFC 3264) for one G.711 audio stream with RFC 4733 DTMF.

On a TLS call the stream is RTP/SAVP with SDES keys (`a=crypto`, RFC 4568, voice/sip/srtp.py);
elsewhere RTP/AVP. A secure call takes no plain media line and a plain one no SAVP line (SDES
keys sent in clear signalling protect nothing), so either mismatch finds no usable stream (488).

We answer the first usable `m=audio` line with the first G.711 codec in the *offer's* order that
we accept (so the caller's or the PBX's preference wins), plus telephone-event when offered.
Any other media line (video, a second audio) is refused with port 0, as RFC 3264 requires.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field

from voice.audio import Codec
from voice.sip.srtp import SdesKey

PTIME_MS = 20
OFFERED_SUITE = "AES_CM_128_HMAC_SHA1_80"
DEFAULT_DTMF_PT = 101
_STATIC_PT = {0: "PCMU/8000", 8: "PCMA/8000"}
_DIRECTION_ANSWER = {
    "sendrecv": "sendrecv",
    "sendonly": "recvonly",
    "recvonly": "sendonly",
    "inactive": "inactive",
}


class SdpError(ValueError):
    """The body is not an SDP we can read."""


@dataclass
class MediaLine:
    media: str
    port: int
    proto: str
    formats: list[str]
    connection: str | None = None
    attributes: list[tuple[str, str]] = field(default_factory=list)

    def rtpmap(self) -> dict[int, str]:
        """Payload type -> "encoding/clock" (upper-cased encoding), static types included."""
        mapping: dict[int, str] = {}
        for fmt in self.formats:
            if fmt.isdigit() and int(fmt) in _STATIC_PT:
                mapping[int(fmt)] = _STATIC_PT[int(fmt)]
        for name, value in self.attributes:
            if name == "rtpmap":
                pt, _, encoding = value.partition(" ")
                if pt.isdigit():
                    parts = encoding.strip().split("/")
                    mapping[int(pt)] = "/".join([parts[0].upper(), *parts[1:2]])
        return mapping

    def attribute(self, name: str) -> str | None:
        return next((value for key, value in self.attributes if key == name), None)


@dataclass
class SessionDescription:
    origin: str = ""
    connection: str | None = None
    attributes: list[tuple[str, str]] = field(default_factory=list)
    media: list[MediaLine] = field(default_factory=list)

    @classmethod
    def parse(cls, body: bytes | str) -> SessionDescription:
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        session = cls()
        current: MediaLine | None = None
        for raw in text.splitlines():
            line = raw.strip()
            if len(line) < 2 or line[1] != "=":
                continue
            kind, value = line[0], line[2:].strip()
            if kind == "o":
                session.origin = value
            elif kind == "c":
                address = _connection_address(value)
                if current is None:
                    session.connection = address
                else:
                    current.connection = address
            elif kind == "m":
                parts = value.split()
                if len(parts) < 4 or not parts[1].split("/")[0].isdigit():
                    raise SdpError(f"bad m= line: {value!r}")
                current = MediaLine(parts[0], int(parts[1].split("/")[0]), parts[2], parts[3:])
                session.media.append(current)
            elif kind == "a":
                name, _, attr_value = value.partition(":")
                target = current.attributes if current else session.attributes
                target.append((name.strip().lower(), attr_value.strip()))
        if not session.media:
            raise SdpError("no m= line")
        return session

    def direction(self, media: MediaLine) -> str:
        for name, _ in [*media.attributes, *self.attributes]:
            if name in _DIRECTION_ANSWER:
                return name
        return "sendrecv"


def _connection_address(value: str) -> str:
    parts = value.split()
    if len(parts) < 3 or parts[0] != "IN":
        raise SdpError(f"bad c= line: {value!r}")
    return parts[2].split("/")[0]


@dataclass
class MediaChoice:
    """What one offer/answer exchange settled for the audio stream."""

    codec: Codec
    payload_type: int
    dtmf_payload_type: int | None
    remote_host: str
    remote_port: int
    direction: str  # the *remote* side's direction: sendrecv, sendonly, recvonly or inactive
    crypto: SdesKey | None = None  # the far end's SRTP key (RTP/SAVP), None for plain RTP

    @property
    def on_hold(self) -> bool:
        """RFC 3264 section 8.4 hold, plus the old RFC 2543 style c=0.0.0.0."""
        return self.direction in ("sendonly", "inactive") or self.remote_host == "0.0.0.0"

    @property
    def we_may_send(self) -> bool:
        return self.direction in ("sendrecv", "recvonly") and self.remote_host != "0.0.0.0"


def choose_media(
    offer: SessionDescription,
    codecs: tuple[Codec, ...] = (Codec.PCMU, Codec.PCMA),
    *,
    dtmf_events: bool = True,
    secure: bool = False,
) -> tuple[int, MediaChoice] | None:
    """(index of the m= line, choice) for the first audio line with a common codec, else None.

    `dtmf_events=False` leaves telephone-event out of the answer, so the far end must signal
    digits with SIP INFO (some PBXs are set up that way).
    """
    proto = "RTP/SAVP" if secure else "RTP/AVP"
    for index, media in enumerate(offer.media):
        if media.media != "audio" or media.port == 0 or media.proto.upper() != proto:
            continue
        host = media.connection or offer.connection
        if host is None:
            continue
        keys = [SdesKey.parse(value) for name, value in media.attributes if name == "crypto"]
        crypto = next((key for key in keys if key is not None), None)
        if secure and crypto is None:
            continue
        rtpmap = media.rtpmap()
        dtmf_pt = next(
            (pt for pt, enc in rtpmap.items() if enc == "TELEPHONE-EVENT/8000" and dtmf_events),
            None,
        )
        for fmt in media.formats:
            if not fmt.isdigit():
                continue
            encoding = rtpmap.get(int(fmt), "")
            name, _, clock = encoding.partition("/")
            if name in (codec.value for codec in codecs) and clock in ("8000", ""):
                choice = MediaChoice(
                    codec=Codec(name),
                    payload_type=int(fmt),
                    dtmf_payload_type=dtmf_pt,
                    remote_host=host,
                    remote_port=media.port,
                    direction=offer.direction(media),
                    crypto=crypto,
                )
                return index, choice
    return None


class LocalSession:
    """Our side of the SDP exchanges of one call: keeps o= stable and bumps its version."""

    def __init__(self, host: str, rtp_port: int) -> None:
        self.host = host
        self.rtp_port = rtp_port
        self.session_id = str(secrets.randbelow(2**31) + int(time.time()))
        self.version = int(self.session_id)
        self._keys: dict[str, SdesKey] = {}  # our SRTP key per suite, the same all call long

    def key_for(self, remote: SdesKey) -> SdesKey:
        """Our key answering the far end's: its suite and tag, our own key material."""
        return self._key(remote.suite, remote.tag)

    def _key(self, suite: str, tag: int = 1) -> SdesKey:
        if suite not in self._keys:
            self._keys[suite] = SdesKey.new(suite)
        return SdesKey(tag, suite, self._keys[suite].key)

    def _head(self) -> list[str]:
        self.version += 1
        family = "IP6" if ":" in self.host else "IP4"
        return [
            "v=0",
            f"o=linli {self.session_id} {self.version} IN {family} {self.host}",
            "s=Linli",
            f"c=IN {family} {self.host}",
            "t=0 0",
        ]

    def answer(self, offer: SessionDescription, index: int, choice: MediaChoice) -> bytes:
        lines = self._head()
        for position, media in enumerate(offer.media):
            if position != index:
                fmt = media.formats[0] if media.formats else "0"
                lines.append(f"m={media.media} 0 {media.proto} {fmt}")
                continue
            pts = [choice.payload_type]
            if choice.dtmf_payload_type is not None:
                pts.append(choice.dtmf_payload_type)
            proto = "RTP/SAVP" if choice.crypto else "RTP/AVP"
            lines.append(f"m=audio {self.rtp_port} {proto} {' '.join(map(str, pts))}")
            if choice.crypto is not None:
                lines.append(f"a=crypto:{self.key_for(choice.crypto).attribute()}")
            lines.append(f"a=rtpmap:{choice.payload_type} {choice.codec.value}/8000")
            if choice.dtmf_payload_type is not None:
                lines.append(f"a=rtpmap:{choice.dtmf_payload_type} telephone-event/8000")
                lines.append(f"a=fmtp:{choice.dtmf_payload_type} 0-15")
            lines.append(f"a=ptime:{PTIME_MS}")
            lines.append(f"a={_DIRECTION_ANSWER[choice.direction]}")
        return ("\r\n".join(lines) + "\r\n").encode()

    def offer(
        self,
        codecs: tuple[Codec, ...],
        direction: str = "sendrecv",
        dtmf_events: bool = True,
        secure: bool = False,
    ) -> bytes:
        lines = self._head()
        pts = [str(codec.payload_type) for codec in codecs]
        if dtmf_events:
            pts.append(str(DEFAULT_DTMF_PT))
        lines.append(f"m=audio {self.rtp_port} RTP/{'SAVP' if secure else 'AVP'} {' '.join(pts)}")
        if secure:
            lines.append(f"a=crypto:{self._key(OFFERED_SUITE).attribute()}")
        lines += [f"a=rtpmap:{codec.payload_type} {codec.value}/8000" for codec in codecs]
        if dtmf_events:
            lines.append(f"a=rtpmap:{DEFAULT_DTMF_PT} telephone-event/8000")
            lines.append(f"a=fmtp:{DEFAULT_DTMF_PT} 0-15")
        lines.append(f"a=ptime:{PTIME_MS}")
        lines.append(f"a={direction}")
        return ("\r\n".join(lines) + "\r\n").encode()

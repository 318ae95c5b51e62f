"""SIP over TLS (RFC 3261 section 18.3 framing, RFC 5630 transport=tls): one connection, one flow.

A stream carries messages back to back: headers up to an empty line, then exactly
Content-Length bytes of body (mandatory on streams). CRLF keep-alives between messages
(RFC 5626) are skipped. Responses and in-dialog requests go back on the connection the call
arrived on, whatever Contact says: a terminal behind NAT can be reached no other way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

HostPort = tuple[str, int]
MAX_HEADERS = 16_384
MAX_BODY = 65_536


def server_context(certificate: Path, key: Path) -> ssl.SSLContext:
    """TLS 1.2+ with our certificate; callers are not asked for one (digest identifies them)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certificate, key)
    return context


def client_context(ca_file: Path | None = None) -> ssl.SSLContext:
    """Verifies the hotline's certificate and name, against `ca_file` or the system's CAs."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class StreamFlow:
    """One TLS connection: reads whole SIP messages, writes ours."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        self.peer: HostPort = (peer[0], peer[1])

    def send(self, data: bytes) -> None:
        if not self.writer.is_closing():
            self.writer.write(data)

    async def run(self, on_message: Callable[[bytes], None]) -> None:
        """Hand each message to `on_message` until the far end closes or sends garbage."""
        try:
            while (message := await self._next()) is not None:
                on_message(message)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError) as exc:
            log.debug("TLS flow from %s ended: %s", self.peer[0], type(exc).__name__)
        except ValueError as exc:
            log.info("TLS flow from %s closed: %s", self.peer[0], exc)
        finally:
            await self.close()

    async def _next(self) -> bytes | None:
        head = b""
        while not head.strip():  # keep-alive CRLFs before a message
            if self.reader.at_eof():
                return None
            head = await self.reader.readuntil(b"\r\n\r\n")
            if len(head) > MAX_HEADERS:
                raise ValueError("headers too long")
        head = head.lstrip(b"\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() in (b"content-length", b"l"):
                length = int(value.strip() or b"0")
        if not 0 <= length <= MAX_BODY:
            raise ValueError("body too long")
        return head + await self.reader.readexactly(length)

    async def close(self) -> None:
        """Close; a peer that never answers the TLS close does not hold us up."""
        self.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.wait_closed(), 1.0)

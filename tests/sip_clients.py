"""Real SIP phones for the telephony tests: baresip (ctrl_tcp) and linphonec (on a pty).

Both run as child processes on loopback with files instead of sound cards: the caller's
"microphone" is a WAV file and what it hears is written to a WAV file, so tests can check the
audio that really crossed RTP. Everything here is asyncio, so the endpoint under test keeps
running in the same event loop while a phone is being driven.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pty
import re
import shutil
import signal
import socket
from pathlib import Path

from voice.audio import read_wav

BARESIP_MODULES = "/usr/lib/baresip/modules"


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    """A port nobody uses right now on 127.0.0.1 (for programs that cannot bind port 0)."""
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def free_sip_port() -> int:
    """A port baresip can listen on: free for UDP and TCP, and port+1 free for its SIP/TLS."""
    for _ in range(50):
        port = free_port()
        probes = [socket.socket(socket.AF_INET, kind) for kind in (socket.SOCK_STREAM,) * 2]
        try:
            probes[0].bind(("127.0.0.1", port))
            probes[1].bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
        finally:
            for probe in probes:
                probe.close()
    raise RuntimeError("no free SIP port")


async def _stop_process(process: asyncio.subprocess.Process, grace: float = 2.0) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), grace)
        except asyncio.TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()


class Baresip:
    """One baresip user agent, driven over its ctrl_tcp JSON/netstring interface.

    `audio_in` is played as the microphone (baresip ends the call when the file ends, so make
    it longer than the call); decoded received audio is dumped by the sndfile module.
    """

    def __init__(
        self,
        directory: Path,
        user: str,
        audio_in: Path,
        *,
        codecs: str = "PCMU,PCMA",
        sip_port: int = 0,
        answermode: str = "manual",
        host: str = "127.0.0.1",
        auth_pass: str | None = None,
        account_params: str = "",
        extra_config: str = "",
        netns: str | None = None,
    ) -> None:
        self.directory = directory
        self.host = host  # another loopback address (127.0.0.2) is an untrusted host
        # A network namespace to run in (a host of tests/cluster): `host` is its address, and
        # ctrl_tcp listens there, where the test reaches it over the hosts' bridge.
        self.netns = netns
        self.auth_pass = auth_pass  # answers digest challenges as `user`
        self.account_params = account_params  # e.g. ";mediaenc=srtp-mand"
        self.extra_config = extra_config  # e.g. "module srtp.so" and "sip_cafile …" for TLS
        self.user = user
        self.audio_in = audio_in
        self.codecs = codecs
        self.sip_port = sip_port
        self.answermode = answermode
        self.dump_dir = directory / "dump"
        self.log_path = directory / "baresip.log"
        self.events: list[dict] = []
        self._event_added = asyncio.Event()
        self._responses: asyncio.Queue[dict] = asyncio.Queue()
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._listener: asyncio.Task[None] | None = None

    @property
    def uri(self) -> str:
        return f"sip:{self.user}@{self.host}:{self.sip_port}"

    async def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.dump_dir.mkdir(exist_ok=True)
        ctrl_port = free_port(socket.SOCK_STREAM)
        ctrl_host = self.host if self.netns else "127.0.0.1"
        config = f"""
poll_method epoll
sip_listen {self.host}:{self.sip_port}
call_local_timeout 30
call_max_calls 4
audio_player alsa,null
audio_alert alsa,null
audio_source aufile,{self.audio_in}
module_path {BARESIP_MODULES}
module g711.so
module aufile.so
module alsa.so
module sndfile.so
snd_path {self.dump_dir}
module_tmp account.so
module_app menu.so
module_app ctrl_tcp.so
ctrl_tcp_listen {ctrl_host}:{ctrl_port}
{self.extra_config}
"""
        (self.directory / "config").write_text(config)
        auth = f";auth_pass={self.auth_pass}" if self.auth_pass is not None else ""
        account = (
            f"<sip:{self.user}@{self.host}>;regint=0;audio_codecs={self.codecs}"
            f";answermode={self.answermode}{auth}{self.account_params}\n"
        )
        (self.directory / "accounts").write_text(account)
        log = self.log_path.open("wb")
        inside = ["ip", "netns", "exec", self.netns] if self.netns else []
        self._process = await asyncio.create_subprocess_exec(
            *inside,
            "baresip",
            "-f",
            str(self.directory),
            "-n",
            self.host,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
        )
        log.close()
        for _ in range(100):
            try:
                self._reader, self._writer = await asyncio.open_connection(ctrl_host, ctrl_port)
                break
            except OSError:
                if self._process.returncode is not None:
                    raise RuntimeError(f"baresip exited: {self.log_text()}") from None
                await asyncio.sleep(0.05)
        else:
            raise RuntimeError(f"baresip ctrl_tcp did not open: {self.log_text()}")
        self._listener = asyncio.ensure_future(self._listen())

    async def stop(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.command("quit"), 1.0)
        if self._listener is not None:
            self._listener.cancel()
        if self._writer is not None:
            self._writer.close()
        if self._process is not None:
            await _stop_process(self._process)

    async def __aenter__(self) -> Baresip:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def command(self, command: str, params: str = "") -> dict:
        assert self._writer is not None
        payload = json.dumps({"command": command, "params": params, "token": command}).encode()
        self._writer.write(str(len(payload)).encode() + b":" + payload + b",")
        await self._writer.drain()
        return await asyncio.wait_for(self._responses.get(), 5.0)

    async def dial(self, uri: str) -> None:
        await self.command("dial", uri)

    async def send_digits(self, digits: str, gap: float = 0.3) -> None:
        """RFC 4733 events, one digit at a time (baresip's `sndcode`)."""
        for digit in digits:
            await self.command("sndcode", digit)
            await asyncio.sleep(gap)

    async def hangup(self) -> None:
        await self.command("hangup")

    async def wait_event(self, kind: str, timeout: float = 10.0) -> dict:
        """The first event of this type (e.g. CALL_ESTABLISHED, CALL_CLOSED), waiting for it."""

        async def find() -> dict:
            while True:
                for event in self.events:
                    if event.get("type") == kind:
                        return event
                self._event_added.clear()
                await self._event_added.wait()

        try:
            return await asyncio.wait_for(find(), timeout)
        except asyncio.TimeoutError:
            seen = [event.get("type") for event in self.events]
            raise AssertionError(f"no {kind} from baresip; events {seen}") from None

    def received_audio(self) -> bytes:
        """What this phone heard (8 kHz PCM), from sndfile's `*-dec.wav` dumps in call order."""
        pcm = b""
        for path in sorted(self.dump_dir.glob("*-dec.wav")):
            pcm += wav_samples(path.read_bytes())
        return pcm

    async def _listen(self) -> None:
        assert self._reader is not None
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                length = await self._reader.readuntil(b":")
                body = await self._reader.readexactly(int(length[:-1]) + 1)
                message = json.loads(body[:-1])
                if message.get("event"):
                    self.events.append(message)
                    self._event_added.set()
                elif message.get("response"):
                    self._responses.put_nowait(message)


class Linphonec:
    """linphone-cli on a pseudo-terminal (it only runs its event loop under readline).

    HOME points into `directory` because liblinphone will not open its SIP ports unless it can
    create its database under ~/.local/share/linphone.
    """

    def __init__(
        self, directory: Path, sip_port: int, *, user: str = "linphone", use_info: bool = True
    ) -> None:
        self.directory = directory
        self.user = user
        self.sip_port = sip_port
        self.use_info = use_info
        self.output = bytearray()
        self._changed = asyncio.Event()
        self._process: asyncio.subprocess.Process | None = None
        self._master: int | None = None

    async def start(self) -> None:
        home = self.directory / "home"
        (home / ".local" / "share" / "linphone").mkdir(parents=True, exist_ok=True)
        rc = self.directory / "linphonerc"
        rtp_port = free_port()
        rc.write_text(
            f"""[sip]
contact=sip:{self.user}@127.0.0.1
sip_port={self.sip_port}
sip_tcp_port=0
sip_tls_port=0
use_ipv6=0
use_info={int(self.use_info)}
use_rfc2833={int(not self.use_info)}
[rtp]
audio_rtp_port={rtp_port}
[sound]
echocancellation=0
[video]
enabled=0
automatically_initiate=0
"""
        )
        master, slave = pty.openpty()
        self._master = master
        self._process = await asyncio.create_subprocess_exec(
            "linphonec",
            "-c",
            str(rc),
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env={**os.environ, "HOME": str(home), "TERM": "dumb"},
        )
        os.close(slave)
        asyncio.get_running_loop().add_reader(master, self._on_output)
        await self.wait_for("linphonec>", 15.0)

    async def stop(self) -> None:
        if self._process is not None and self._process.returncode is None:
            with contextlib.suppress(OSError):
                self.send("quit")
            try:
                await asyncio.wait_for(self._process.wait(), 3.0)
            except asyncio.TimeoutError:
                await _stop_process(self._process)
        if self._master is not None:
            asyncio.get_running_loop().remove_reader(self._master)
            os.close(self._master)
            self._master = None

    async def __aenter__(self) -> Linphonec:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def send(self, line: str) -> None:
        assert self._master is not None
        os.write(self._master, line.encode() + b"\n")

    def text(self) -> str:
        return self.output.decode(errors="replace")

    async def wait_for(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        async def find() -> re.Match[str]:
            while True:
                match = re.search(pattern, self.text())
                if match:
                    return match
                self._changed.clear()
                await self._changed.wait()

        try:
            return await asyncio.wait_for(find(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(
                f"linphonec never said {pattern!r}:\n{self.text()[-3000:]}"
            ) from None

    def _on_output(self) -> None:
        assert self._master is not None
        try:
            data = os.read(self._master, 65536)
        except OSError:
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(self._master)
        self.output += data
        self._changed.set()


def wav_samples(data: bytes) -> bytes:
    """8 kHz PCM of a WAV file, also of one still being written (header sizes not final yet)."""
    try:
        pcm, rate = read_wav(data)
    except Exception:
        start = data.find(b"data")
        if start < 0:
            return b""
        pcm, rate = data[start + 8 :], 8000
    assert rate == 8000, rate
    return pcm[: len(pcm) // 2 * 2]


def have_programs() -> list[str]:
    """Which of the phones this suite needs are missing (for a clear failure message)."""
    return [name for name in ("baresip", "linphonec") if shutil.which(name) is None]

"""Demo hotline for trying the SIP endpoint by hand with baresip, linphone or a PBX.

    .venv/bin/python -m voice.sip --port 5062 [--wav greeting.wav] [--seconds 20] [--echo]
    baresip: /dial sip:hotline@127.0.0.1:5062

Each call hears the WAV (or a 440 Hz tone), then — with --echo — its own voice; digits the
caller presses are logged; after --seconds the demo hangs up. `--transfer 8001` sends the call
on with REFER when the caller presses 0, `--bridge sip:8001@pbx` bridges it instead.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import signal
import struct
from pathlib import Path

from voice.audio import TELEPHONE_RATE, Codec, read_wav, resample
from voice.sip.call import Call
from voice.sip.endpoint import SipEndpoint

log = logging.getLogger("voice.sip.echo")


def tone(
    frequency: float = 440.0,
    seconds: float = 1.0,
    rate: int = TELEPHONE_RATE,
    amplitude: int = 8000,
) -> bytes:
    """A sine tone as linear PCM (test signal and the demo's default greeting)."""
    count = int(seconds * rate)
    return b"".join(
        struct.pack("<h", int(amplitude * math.sin(2 * math.pi * frequency * i / rate)))
        for i in range(count)
    )


class EchoApp:
    """The `on_call` of the demo; also a template for the real hotline application."""

    def __init__(
        self,
        greeting: bytes,
        seconds: float,
        *,
        echo: bool = False,
        transfer_to: str | None = None,
        bridge_to: str | None = None,
    ) -> None:
        self.greeting = greeting
        self.seconds = seconds
        self.echo = echo
        self.transfer_to = transfer_to
        self.bridge_to = bridge_to

    async def __call__(self, call: Call) -> None:
        log.info("answered %s -> %s (%s)", call.caller_masked, call.called, call.codec.value)
        digits = asyncio.ensure_future(self._digits(call))
        try:
            await asyncio.wait_for(self._talk(call), self.seconds)
        except asyncio.TimeoutError:
            log.info("%s: %.0f s are up, hanging up", call.caller_masked, self.seconds)
        finally:
            digits.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await digits
        if call.bridged_to is None:
            await call.hangup()

    async def _talk(self, call: Call) -> None:
        await call.play(self.greeting)
        if self.echo:
            async for frame in call:
                call.rtp.write_frame(frame)
        else:
            await call.wait_ended()

    async def _digits(self, call: Call) -> None:
        while (digit := await call.receive_dtmf()) is not None:
            log.info("%s pressed %s", call.caller_masked, digit)
            if digit == "0" and self.transfer_to:
                ok = await call.transfer(self.transfer_to)
                log.info("transfer to %s: %s", self.transfer_to, "ok" if ok else "failed")
            elif digit == "0" and self.bridge_to:
                ok = await call.bridge(self.bridge_to)
                log.info("bridge to %s: %s", self.bridge_to, "ok" if ok else "failed")
                if ok:
                    await call.wait_ended()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Linli SIP endpoint demo (answers every call)")
    parser.add_argument("--host", default="0.0.0.0", help="address to bind (default all)")
    parser.add_argument("--port", type=int, default=5060, help="SIP UDP port (0: any free)")
    parser.add_argument("--advertise", help="address for Via/Contact/SDP (NAT, 0.0.0.0 binds)")
    parser.add_argument("--wav", type=Path, help="greeting WAV (16-bit); default a tone")
    parser.add_argument("--seconds", type=float, default=30.0, help="hang up after this long")
    parser.add_argument("--echo", action="store_true", help="after the greeting, echo the caller")
    parser.add_argument("--codecs", default="PCMU,PCMA", help="accepted codecs in our order")
    parser.add_argument("--transfer", help="REFER the call here when the caller presses 0")
    parser.add_argument("--bridge", help="bridge the call here when the caller presses 0")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.wav:
        pcm, rate = read_wav(args.wav.read_bytes())
        greeting = resample(pcm, rate, TELEPHONE_RATE)
    else:
        greeting = tone(440.0, 2.0)
    app = EchoApp(
        greeting, args.seconds, echo=args.echo, transfer_to=args.transfer, bridge_to=args.bridge
    )
    codecs = tuple(Codec(name.strip().upper()) for name in args.codecs.split(","))

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        endpoint = SipEndpoint(
            app, host=args.host, port=args.port, advertised_host=args.advertise, codecs=codecs
        )
        async with endpoint:  # on the way out: BYE to every call still up
            print(f"Linli SIP demo on udp {args.host}:{endpoint.port}; Ctrl-C stops", flush=True)
            await stop.wait()

    asyncio.run(serve())


if __name__ == "__main__":
    main()

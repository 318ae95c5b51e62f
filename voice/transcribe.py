"""Recognise one recording, in a process of its own: `python -m voice.transcribe < pcm`.

For written channels that receive a voice message without a transcript (WeChat without its
own recognition). The recording comes on stdin as 16 kHz 16-bit mono PCM; the text goes to
stdout as JSON `{"text": …}`. The recogniser is the hotline's (voice/recognisers.py: Vosk with
Whisper's second opinion, or Whisper alone), with one Whisper worker. A process per recording
keeps the engines' memory and any crash out of the gateway; exit code 3 means no usable model
here (`make whisper`, VOSK_MODEL_PATH).
"""

from __future__ import annotations

import json
import sys

from voice.asr import ModelError, Utterance
from voice.recognisers import close, open_recogniser
from voice.whisper_asr import WhisperSettings

RATE = 16_000
CHUNK = RATE * 2 // 5  # 200 ms
TAIL = bytes(RATE * 2 * 2)  # 2 s of quiet: a message that ends mid-word still ends an utterance


def transcribe(pcm: bytes) -> str:
    recogniser = open_recogniser(whisper=WhisperSettings(workers=1, threads=2))
    try:
        session = recogniser.session(RATE)
        events = []
        for start in range(0, len(pcm), CHUNK):
            events += session.accept(pcm[start : start + CHUNK])
        events += session.accept(TAIL) + session.finish()
    finally:
        close(recogniser)
    return "".join(e.text for e in events if isinstance(e, Utterance)).strip()


def main() -> int:
    try:
        text = transcribe(sys.stdin.buffer.read())
    except ModelError as exc:
        print(str(exc), file=sys.stderr)
        return 3
    print(json.dumps({"text": text}, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())

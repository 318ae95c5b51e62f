"""Which recogniser hears Linli's callers, chosen one way for every channel.

The hotline (and so the SOS terminal's voice line, which calls it) and WeChat voice messages
(voice/transcribe.py) all open theirs here:

- `auto`: Vosk where the Chinese model is installed (`make models`, needs the internet), with
  Whisper's second opinion on what Vosk is unsure of; Whisper alone where it is not (`make
  whisper` assembles it offline, so every machine hears Mandarin);
- `vosk` or `whisper`: that engine alone (ModelError when it is missing).
"""

from __future__ import annotations

import logging

from voice.asr import ELDERLY, Endpointing, ModelError, Recogniser, VoskRecogniser, load_model
from voice.whisper_asr import SecondOpinion, WhisperPool, WhisperRecogniser, WhisperSettings

log = logging.getLogger(__name__)

CHOICES = ("auto", "vosk", "whisper")


def open_recogniser(
    choice: str = "auto",
    endpointing: Endpointing = ELDERLY,
    whisper: WhisperSettings | None = None,
) -> Recogniser:
    """The recogniser `choice` names; ModelError, saying what to do, when none is usable."""
    if choice not in CHOICES:
        raise ValueError(f"a recogniser is one of {CHOICES}, not {choice!r}")
    if choice == "whisper":
        return WhisperRecogniser(WhisperPool(whisper), endpointing=endpointing)
    try:
        vosk = VoskRecogniser(load_model(), endpointing=endpointing)
    except ModelError as exc:
        if choice == "vosk":
            raise
        log.info("no Vosk model (%s): hearing with Whisper alone", str(exc).split(":")[0])
        return WhisperRecogniser(WhisperPool(whisper), endpointing=endpointing)
    if choice == "vosk":
        return vosk
    try:
        return SecondOpinion(vosk, WhisperPool(whisper))
    except ModelError as exc:
        log.warning("Vosk without Whisper's second opinion: %s", exc)
        return vosk


def close(recogniser: Recogniser) -> None:
    """Stop the worker processes a recogniser runs, if any."""
    if isinstance(recogniser, WhisperRecogniser | SecondOpinion):
        recogniser.pool.close()

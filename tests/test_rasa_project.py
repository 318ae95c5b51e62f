"""The Rasa project as Rasa itself checks it: data validation and the conversation stories.

`rasa data validate` catches story/rule conflicts and domain mismatches; `rasa test core` runs
tests/stories/*.yml (the resident's words, the intent they must be understood as, the actions
that must follow) against the trained model of `make model`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RASA = str(Path(sys.executable).parent / "rasa")
MODEL = ROOT / "models" / "current.tar.gz"


def rasa(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [RASA, *args], cwd=ROOT, capture_output=True, text=True, timeout=900, check=False
    )


def test_training_data_validates_without_conflicts() -> None:
    result = rasa(
        "data", "validate", "--config", "config.yml", "--domain", "bot/domain.yml",
        "--data", "data/nlu", "data/dialogue", "--max-history", "5",
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "No story structure conflicts found." in output, output[-4000:]


def test_conversation_stories_pass(tmp_path: Path) -> None:
    assert MODEL.exists(), "no trained model: run `make model`"
    result = rasa(
        "test", "core", "--model", str(MODEL), "--stories", "tests/stories",
        "--out", str(tmp_path), "--fail-on-prediction-errors",
    )  # fmt: skip
    failed = (tmp_path / "failed_test_stories.yml").read_text(encoding="utf-8")
    assert result.returncode == 0 and "None of the test stories failed" in failed, (
        failed + (result.stdout + result.stderr)[-3000:]
    )

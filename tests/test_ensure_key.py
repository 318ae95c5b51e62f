"""scripts/ensure-key: a machine's local secrets, made once into var/linli.env (mode 600), the
WeChat account's settings among them (the gateway's channel and the stand-in share them)."""

from __future__ import annotations

import base64
import shutil
import stat
import subprocess
from pathlib import Path

from tests.support import ROOT

NAMES = [
    "LINLI_DATA_KEY",
    "LINLI_TOKEN_ACTIONS",
    "LINLI_TOKEN_WECHAT",
    "LINLI_TOKEN_HOTLINE",
    "LINLI_TOKEN_TERMINAL",
    "LINLI_TOKEN_GATEWAY",
    "WECHAT_TOKEN",
    "WECHAT_AES_KEY",
    "WECHAT_APP_ID",
    "WECHAT_APP_SECRET",
]


def settings(path: Path) -> dict[str, str]:
    lines = [line for line in path.read_text().splitlines() if line and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def test_the_local_secrets_are_made_once_and_kept(tmp_path: Path) -> None:
    (tmp_path / "scripts").mkdir()
    script = tmp_path / "scripts" / "ensure-key"
    shutil.copy2(ROOT / "scripts" / "ensure-key", script)
    subprocess.run([str(script)], check=True, capture_output=True)
    env_file = tmp_path / "var" / "linli.env"
    made = settings(env_file)
    assert list(made) == NAMES
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert len(base64.urlsafe_b64decode(made["LINLI_DATA_KEY"])) == 32
    aes = made["WECHAT_AES_KEY"]  # an EncodingAESKey: 43 characters, 32 bytes
    assert len(aes) == 43 and len(base64.b64decode(aes + "=")) == 32
    assert made["WECHAT_APP_ID"].startswith("wx") and len(made["WECHAT_APP_ID"]) == 18
    # Again, and after a value was set by hand: nothing is overwritten, nothing added twice.
    with env_file.open("a") as out:
        out.write("# a note\n")
    env_file.write_text(env_file.read_text().replace(made["WECHAT_TOKEN"], "my-own-token"))
    subprocess.run([str(script)], check=True, capture_output=True)
    assert settings(env_file) == {**made, "WECHAT_TOKEN": "my-own-token"}

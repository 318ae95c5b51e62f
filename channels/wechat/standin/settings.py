"""The stand-in's settings: the account's secrets shared with the channel (WECHAT_*, from the
environment or var/linli.env, as the channel reads them) and its own knobs (WECHAT_STANDIN_*)."""

from __future__ import annotations

import base64
import binascii
import os
import re
from enum import Enum
from pathlib import Path

from pydantic import BaseSettings, Field, SecretStr

ROOT = Path(__file__).resolve().parents[3]


class Mode(str, Enum):
    """The account's 消息加解密方式 (message encryption), as set on the WeChat admin page."""

    safe = "safe"  # 安全模式: only the encrypted envelope
    compatible = "compatible"  # 兼容模式: plain fields and the envelope side by side
    plain = "plain"  # 明文模式


class StandinSettings(BaseSettings):
    token: SecretStr = Field(SecretStr(""), env="WECHAT_TOKEN")
    aes_key: SecretStr = Field(SecretStr(""), env="WECHAT_AES_KEY")  # EncodingAESKey, 43 chars
    app_id: str = Field("", env="WECHAT_APP_ID")
    app_secret: SecretStr = Field(SecretStr(""), env="WECHAT_APP_SECRET")
    mode: Mode = Field(Mode.safe, env="WECHAT_MODE")
    # Stand-in only.
    callback: str = Field("http://127.0.0.1:8010/wechat", env="WECHAT_STANDIN_CALLBACK")
    host: str = Field("127.0.0.1", env="WECHAT_STANDIN_HOST")
    port: int = Field(8096, ge=1, le=65535, env="WECHAT_STANDIN_PORT")
    original_id: str = Field("gh_6c696e6c6921", env="WECHAT_STANDIN_ORIGINAL_ID")
    account_name: str = Field("邻里社区", env="WECHAT_STANDIN_ACCOUNT_NAME")
    token_ttl_seconds: int = Field(7200, ge=60, env="WECHAT_STANDIN_TOKEN_TTL")
    # WeChat waits 5 s for an answer, then drops the connection and tries again (3 times).
    cutoff_seconds: float = Field(5.0, gt=0, env="WECHAT_STANDIN_CUTOFF_SECONDS")
    retries: int = Field(3, ge=0, le=10, env="WECHAT_STANDIN_RETRIES")
    # Where the 🎤 button's sample recordings are (AISHELL, transcripts.tsv beside them).
    samples_dir: Path = Field(
        default_factory=lambda: (
            Path(os.environ.get("LINLI_SHARED_DIR") or ROOT.parent / "shared") / "audio" / "zh"
        ),
        env="WECHAT_STANDIN_SAMPLES",
    )

    class Config:
        env_file = str(ROOT / "var" / "linli.env")
        env_file_encoding = "utf-8"

    def problems(self) -> list[str]:
        """What keeps the stand-in from speaking WeChat's protocol with these settings."""
        found = []
        if not re.fullmatch(r"[A-Za-z0-9]{3,32}", self.token.get_secret_value()):
            found.append("WECHAT_TOKEN: 3 to 32 letters or digits")
        try:
            key = base64.b64decode(self.aes_key.get_secret_value() + "=", validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if len(self.aes_key.get_secret_value()) != 43 or len(key) != 32:
            found.append("WECHAT_AES_KEY: 43 characters of base64 (32 bytes)")
        if not self.app_id:
            found.append("WECHAT_APP_ID is empty")
        if not self.app_secret.get_secret_value():
            found.append("WECHAT_APP_SECRET is empty")
        if not re.fullmatch(r"gh_[0-9a-f]{12}", self.original_id):
            found.append("WECHAT_STANDIN_ORIGINAL_ID: gh_ and 12 hex digits")
        return found

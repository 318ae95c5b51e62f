"""One Settings object for the gateway, read from the environment (or var/linli.env)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import BaseSettings, Field, SecretStr

ROOT = Path(__file__).resolve().parents[2]


class GatewaySettings(BaseSettings):
    rasa_url: str = Field("http://127.0.0.1:5005", env="RASA_URL")
    workorders_url: str = Field("http://127.0.0.1:8000", env="WORKORDERS_URL")
    # svc-gateway's token: conversations:write, events:read, residents:lookup, orders:read.
    token: SecretStr = Field(SecretStr(""), env="LINLI_TOKEN_GATEWAY")
    redis_url: str = Field("redis://127.0.0.1:6379/0", env="REDIS_URL")
    # The namespace of Linli's own Redis keys (the action server uses the same); the gateway's
    # keys live under "<prefix>:gateway:".
    redis_prefix: str = Field("linli", env="LINLI_REDIS_PREFIX")
    host: str = Field("127.0.0.1", env="LINLI_GATEWAY_HOST")
    port: int = Field(8010, ge=1, le=65535, env="LINLI_GATEWAY_PORT")
    # Prometheus metrics (channels/gateway/metrics.py) on this port; 0: not served.
    metrics_port: int = Field(0, ge=0, le=65535, env="GATEWAY_METRICS_PORT")
    metrics_host: str = Field("127.0.0.1", env="GATEWAY_METRICS_HOST")
    # The generic JSON endpoint (/api/messages) writes as any conversation: without this token
    # only loopback clients that came through no proxy may use it.
    api_token: SecretStr = Field(SecretStr(""), env="LINLI_GATEWAY_API_TOKEN")
    # A dialogue turn runs actions that call the API (and the health centre): give it time.
    rasa_timeout_seconds: float = Field(60.0, gt=0, env="GATEWAY_RASA_TIMEOUT_SECONDS")
    api_timeout_seconds: float = Field(10.0, gt=0, env="GATEWAY_API_TIMEOUT_SECONDS")
    # Dialogue turns at once; more wait their turn (Rasa serves ~7 turns/s on 2 cores anyway).
    max_turns: int = Field(16, ge=1, le=1000, env="GATEWAY_MAX_TURNS")
    # The event tail long-polls this long (the API allows 30 s at most).
    events_wait_ms: int = Field(20_000, ge=0, le=30_000, env="GATEWAY_EVENTS_WAIT_MS")
    # An open web chat page asks for staff replies this often even without a wake-up.
    stream_fallback_seconds: float = Field(15.0, gt=0, env="GATEWAY_STREAM_FALLBACK_SECONDS")

    # WeChat (channels/wechat, /wechat): the official account's server settings. Without a token
    # the channel is off. The EncodingAESKey is needed for safe and compatible mode.
    wechat_token: SecretStr = Field(SecretStr(""), env="WECHAT_TOKEN")
    wechat_app_id: str = Field("", env="WECHAT_APP_ID")
    wechat_app_secret: SecretStr = Field(SecretStr(""), env="WECHAT_APP_SECRET")
    wechat_aes_key: SecretStr = Field(SecretStr(""), env="WECHAT_AES_KEY")
    wechat_api_base: str = Field("https://api.weixin.qq.com", env="WECHAT_API_BASE")
    # A subscription-message template ("服务回复提醒": thing1, thing2) that tells a resident staff
    # answered when a customer-service message is no longer allowed; none: staff call back.
    wechat_reply_template: str = Field("", env="WECHAT_REPLY_TEMPLATE_ID")
    # A template message (first, keyword1, keyword2, remark) that tells a resident their order
    # was accepted, resolved or cancelled (channels/gateway/wechat_notify.py); none: a
    # customer-service message while the resident's 48 h window is open.
    wechat_status_template: str = Field("", env="WECHAT_STATUS_TEMPLATE_ID")
    # How long a push waits for the dialogue's answer to go back passively; later answers go as
    # customer-service messages. WeChat gives up after 5 s; the bench's goal is 1 s.
    wechat_passive_seconds: float = Field(0.8, gt=0, le=4.0, env="WECHAT_PASSIVE_SECONDS")

    class Config:
        env_file = str(ROOT / "var" / "linli.env")
        env_file_encoding = "utf-8"


@lru_cache
def get_settings() -> GatewaySettings:
    return GatewaySettings()

"""One Settings object, read from the environment (prefix-free names, documented in README)."""

from __future__ import annotations

import base64
from functools import lru_cache
from pathlib import Path

from pydantic import BaseSettings, Field, validator

from workorders.office_hours import OfficeHours

ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    database_url: str = Field(f"sqlite:///{ROOT / 'var' / 'workorders.db'}", env="DATABASE_URL")
    redis_url: str = Field("redis://127.0.0.1:6379/0", env="REDIS_URL")
    # 32 random bytes, urlsafe base64. Encrypts personal data at rest and keys its lookup hashes.
    data_key: str = Field(..., env="LINLI_DATA_KEY")
    # Keys being rotated away from, comma-separated: still read (and looked up under) until
    # `python -m workorders rotate-key` has re-encrypted everything with LINLI_DATA_KEY.
    data_keys_retired: str = Field("", env="LINLI_DATA_KEYS_RETIRED")
    # Where the hospital adapter finds the FHIR R4 server (the stand-in by default).
    fhir_base_url: str = Field("http://127.0.0.1:8090/fhir", env="FHIR_BASE_URL")
    sla_config: Path = Field(ROOT / "data" / "sla.json", env="SLA_CONFIG")
    # Resolved orders close by themselves when the resident has not rated them by then.
    rating_timeout_hours: float = Field(72.0, env="RATING_TIMEOUT_HOURS")
    scheduler_interval_seconds: float = Field(5.0, env="SCHEDULER_INTERVAL_SECONDS")
    # One scheduler sweeps across hosts; another takes over this long after it died.
    scheduler_lease_seconds: float = Field(10.0, gt=0, env="SCHEDULER_LEASE_SECONDS")
    # Prometheus metrics of the work (workorders/metrics.py) on this port; 0: not served.
    scheduler_metrics_port: int = Field(0, ge=0, le=65535, env="SCHEDULER_METRICS_PORT")
    scheduler_metrics_host: str = Field("127.0.0.1", env="SCHEDULER_METRICS_HOST")
    token_ttl_hours: float = Field(12.0, env="TOKEN_TTL_HOURS")
    event_stream: str = Field("linli:events", env="EVENT_STREAM")
    event_stream_maxlen: int = Field(100_000, env="EVENT_STREAM_MAXLEN")
    # With Redis replicas (Sentinel): an event counts as published once this many replicas
    # hold it too, so a failover cannot lose it from the stream (services/events.py).
    event_replicas: int = Field(0, ge=0, env="EVENT_REPLICAS")
    timezone: str = Field("Asia/Shanghai", env="LINLI_TIMEZONE")
    # SOS terminals: how often they report; silent for two intervals means a visit order.
    terminal_heartbeat_seconds: float = Field(300.0, env="TERMINAL_HEARTBEAT_SECONDS")
    # Signed terminal requests are accepted this far from the server's clock, either way.
    terminal_clock_skew_seconds: float = Field(300.0, env="TERMINAL_CLOCK_SKEW_SECONDS")
    # Username of the supervisor called last in an unacknowledged emergency's escalation chain;
    # empty: the supervisor role as a whole (the console shows it to whoever is on duty).
    duty_supervisor: str = Field("", env="LINLI_DUTY_SUPERVISOR")
    # Call recordings are personal data of the caller's voice: not kept unless a deployment
    # decides to (and says so to callers); until then call records refuse an `audio_path`.
    keep_call_audio: bool = Field(False, env="KEEP_CALL_AUDIO")
    # When staff are at work (in `timezone`); the hotline reads the same variable.
    office_hours: str = Field("mon-fri 08:30-17:30", env="LINLI_OFFICE_HOURS")
    # A hand-over nobody has claimed alerts the supervisors after this much waiting inside
    # office hours, and again after each further interval.
    handoff_alert_seconds: float = Field(180.0, gt=0, env="HANDOFF_ALERT_SECONDS")
    # A photo a resident sends (WeChat) joins their latest open repair order created at most
    # this long ago; otherwise it is not kept.
    photo_attach_minutes: float = Field(60.0, gt=0, env="PHOTO_ATTACH_MINUTES")

    class Config:
        env_file = str(ROOT / "var" / "linli.env")
        env_file_encoding = "utf-8"

    @validator("office_hours")
    def _hours_parse(cls, value: str) -> str:
        OfficeHours.parse(value)
        return value

    @validator("data_key")
    def _key_is_32_bytes(cls, value: str) -> str:
        _check_key(value, "LINLI_DATA_KEY")
        return value

    @validator("data_keys_retired")
    def _retired_are_keys(cls, value: str) -> str:
        for key in _split(value):
            _check_key(key, "LINLI_DATA_KEYS_RETIRED")
        return value

    def retired_keys(self) -> list[str]:
        return _split(self.data_keys_retired)

    def hours(self) -> OfficeHours:
        return OfficeHours.parse(self.office_hours, self.timezone)


def _split(keys: str) -> list[str]:
    return [key.strip() for key in keys.split(",") if key.strip()]


def _check_key(value: str, name: str) -> None:
    try:
        raw = base64.urlsafe_b64decode(value.encode() + b"=" * (-len(value) % 4))
    except ValueError as exc:  # binascii.Error is a ValueError
        raise ValueError(f"{name} must be urlsafe base64") from exc
    if len(raw) != 32:
        raise ValueError(f"{name} must decode to 32 bytes")


@lru_cache
def get_settings() -> Settings:
    return Settings()

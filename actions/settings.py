"""What the action server needs from its environment (one place, read once)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class ActionSettings:
    api_url: str
    api_token: str
    redis_url: str
    policies_dir: Path
    # Namespace of the action server's Redis keys (outbox, handoff queue).
    redis_prefix: str = "linli"
    timezone: str = "Asia/Shanghai"
    # The gas company's 24-hour emergency line, said in the gas advice; none: 119.
    gas_emergency_line: str = ""


@lru_cache
def settings() -> ActionSettings:
    return ActionSettings(
        api_url=os.environ.get("WORKORDERS_URL", "http://127.0.0.1:8000"),
        api_token=os.environ.get("LINLI_TOKEN_ACTIONS", ""),
        redis_url=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        policies_dir=Path(os.environ.get("POLICIES_DIR", ROOT / "data" / "policies")),
        redis_prefix=os.environ.get("LINLI_REDIS_PREFIX", "linli"),
        gas_emergency_line=os.environ.get("LINLI_GAS_EMERGENCY_LINE", "").strip(),
    )


def community() -> str:
    """Community new residents are registered in (one deployment serves one community)."""
    return os.environ.get("LINLI_COMMUNITY", "阳光社区")

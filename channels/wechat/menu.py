"""The community account's custom menu: the web chat's service buttons, in WeChat's menu bar.

WeChat allows 3 buttons in the bar with up to 5 entries each, so the six services are grouped:
「办事」 (看病预约, 居家养老, 报修), 「问事」 (政策咨询, 我的工单) and 「找人工」 alone, where a
resident who is stuck finds it without opening anything. Labels are the plain words the web chat
uses (short: WeChat cuts a bar button after 4 characters, an entry after 8 on small phones).

Every entry is a `click` button: WeChat pushes a CLICK event with its `key`, which `for_key`
turns into the dialogue intent to send and the label to record, as the web chat records it.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

log = logging.getLogger(__name__)

MENU_INTENTS: dict[str, str] = {
    "MEDICAL": "/book_medical",
    "HOME_CARE": "/book_home_care",
    "REPAIR": "/report_repair",
    "POLICY": "/ask_policy",
    "STATUS": "/check_status",
    "HUMAN": "/request_human",
}
MENU_LABELS: dict[str, str] = {
    "MEDICAL": "看病预约",
    "HOME_CARE": "居家养老",
    "REPAIR": "报修",
    "POLICY": "政策咨询",
    "STATUS": "我的工单",
    "HUMAN": "找人工",
}


def _click(key: str) -> dict[str, str]:
    return {"type": "click", "name": MENU_LABELS[key], "key": key}


MENU: dict[str, Any] = {
    "button": [
        {"name": "办事", "sub_button": [_click("MEDICAL"), _click("HOME_CARE"), _click("REPAIR")]},
        {"name": "问事", "sub_button": [_click("POLICY"), _click("STATUS")]},
        _click("HUMAN"),
    ]
}


def for_key(key: str) -> tuple[str, str] | None:
    """(label, intent) of a menu click's EventKey; None for a key this menu does not have (an
    older menu still cached on a phone)."""
    intent = MENU_INTENTS.get(key)
    return None if intent is None else (MENU_LABELS[key], intent)


class MenuApi(Protocol):
    async def get_menu(self) -> dict[str, Any] | None: ...

    async def create_menu(self, menu: dict[str, Any]) -> None: ...


async def ensure_menu(api: MenuApi, menu: dict[str, Any] | None = None) -> bool:
    """Create the menu unless WeChat already shows it; True when it was (re)created.

    Called at every gateway start: an unchanged menu is left alone (WeChat pushes a new menu
    to phones only over time, and creates count against a daily quota)."""
    wanted = MENU if menu is None else menu
    current = await api.get_menu()
    if current is not None and _normalised(current) == _normalised(wanted):
        return False
    await api.create_menu(wanted)
    log.info("WeChat menu %s", "created" if current is None else "replaced")
    return True


def _normalised(menu: dict[str, Any]) -> list[dict[str, Any]]:
    """The buttons as menu/get echoes them: it adds empty `sub_button` lists to leaves."""

    def button(entry: dict[str, Any]) -> dict[str, Any]:
        listed = entry.get("sub_button") or []
        if isinstance(listed, dict):  # get_current_selfmenu_info's {"list": [...]}
            listed = listed.get("list", [])
        subs = [button(sub) for sub in listed]
        kept = {k: v for k, v in entry.items() if k != "sub_button"}
        return {**kept, "sub_button": subs} if subs else kept

    return [button(entry) for entry in menu.get("button", [])]

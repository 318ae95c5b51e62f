"""The console's 居民, 统计 and 审计 pages in real Chromium against the API as a real process,
the API changes they brought (a purpose for reveals, conversations by resident), and a
property-based run over the endpoints they touched.

Statistics are seeded with the real order services and explicit clocks in 2001, a year no other
test uses: the API process cannot be given a clock, and the SLA sweep that marks breaches scans
every order in the database, so only orders due before 2001 could be touched by it (none are).
"""

from __future__ import annotations

import csv
import io
import re
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import Page, Route, expect

from tests.browser import Console, artifacts_dir
from tests.factories import repair_body, resident_body, unique_phone
from tests.support import ROOT, Api, Backend, fuzz_api
from workorders.contract import KIND_LABELS, Role, Status
from workorders.hospital.fhir import FhirHospitalAdapter
from workorders.schemas import OrderCreate
from workorders.security import ROLE_SCOPES, Caller
from workorders.services import orders, sweep
from workorders.services.orders import CHANNEL_LABELS
from workorders.services.sla import SlaPolicy

SH = ZoneInfo("Asia/Shanghai")
POLICY = SlaPolicy.from_file(ROOT / "data" / "sla.json")
S = Status
Y = 2001
sqlite_only = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)

DETAILS: dict[str, dict[str, Any]] = {
    "repair": {"category": "水管", "location": "home", "description": "厨房水管漏水了"},
    "complaint": {"text": "师傅迟到了两个小时"},
    "policy_question": {"question": "高龄津贴怎么领"},
}


def sh(month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(Y, month, day, hour, minute, tzinfo=SH)


def me(api: Api, account: str) -> dict[str, Any]:
    return api.call(account, "GET", "/auth/me").json()


def new_resident(api: Api, **overrides: Any) -> dict[str, Any]:
    answer = api.call("bot", "POST", "/residents", json=resident_body(**overrides))
    assert answer.status_code == 201, answer.text
    return answer.json()


def talk(api: Api, resident_id: int, text: str = "你好") -> str:
    """A web-chat conversation of the resident's, as the gateway records it; its key."""
    key = f"web-{uuid.uuid4().hex[:12]}"
    message = {"role": "resident", "text": text}
    body = {"channel": "web", "resident_id": resident_id, "messages": [message]}
    answer = api.call("gateway", "POST", f"/conversations/{key}/messages", json=body)
    assert answer.status_code == 200, answer.text
    return key


def audit_of(api: Api, resident_id: int) -> list[dict[str, Any]]:
    answer = api.call(
        "admin",
        "GET",
        "/audit",
        params={"resource_type": "resident", "resource_id": resident_id, "limit": 1000},
    )
    assert answer.status_code == 200, answer.text
    return answer.json()["items"]


# --- seeding the statistics ------------------------------------------------------------------


class Seeder:
    """Orders made by the real services at chosen instants, for residents made over the API."""

    def __init__(self, api: Api, backend: Backend, hospital: FhirHospitalAdapter) -> None:
        agent = me(api, "agent")
        self.api = api
        self.backend = backend
        self.hospital = hospital
        scopes = ROLE_SCOPES[Role.agent]
        self.caller = Caller(agent["id"], agent["username"], Role.agent, scopes, None)
        self.residents: dict[str, int] = {}

    def resident(self, community: str) -> int:
        if community not in self.residents:
            self.residents[community] = new_resident(self.api, community=community)["id"]
        return self.residents[community]

    def order(
        self,
        community: str,
        kind: str,
        channel: str,
        at: datetime,
        *steps: tuple[Status, timedelta],
        rating: tuple[int, timedelta] | None = None,
    ) -> int:
        body = OrderCreate(
            kind=kind, channel=channel, resident_id=self.resident(community), details=DETAILS[kind]
        )
        with self.backend.session() as session:
            made = orders.create(session, self.caller, body, None, self.hospital, POLICY, at)
            for target, after in steps:
                orders.transition(
                    session, self.caller, made.order.id, target, "测试", self.hospital, POLICY,
                    at + after,
                )  # fmt: skip
            if rating is not None:
                orders.rate(session, self.caller, made.order.id, rating[0], None, at + rating[1])
            return made.order.id

    def sweep(self, at: datetime) -> sweep.SweepResult:
        return sweep.sweep(self.backend.factory, POLICY, at, timedelta(hours=72))


def seed_march(seed: Seeder, a: str, b: str, c: str) -> dict[str, list[int]]:
    """Three communities' March: completed with ratings, on hold, reopened, cancelled, breached,
    and one order awaiting its first response at the end; one in April (not in the cohort)."""
    m, hr, d = timedelta(minutes=1), timedelta(hours=1), timedelta(days=1)
    made: dict[str, list[int]] = {a: [], b: [], c: []}

    def order(community: str, *args: Any, **kwargs: Any) -> int:
        made[community].append(seed.order(community, *args, **kwargs))
        return made[community][-1]

    order(a, "repair", "wechat", sh(3, 2, 9), (S.accepted, 30 * m), (S.in_progress, hr),
          (S.resolved, 3 * hr), rating=(5, 5 * hr))  # fmt: skip
    order(a, "repair", "hotline", sh(3, 3, 10), (S.accepted, 20 * m), (S.resolved, 2 * hr),
          rating=(4, 3 * hr))  # fmt: skip
    late = order(a, "complaint", "hotline", sh(3, 5, 9))
    order(a, "policy_question", "wechat", sh(3, 8, 9), (S.cancelled, 10 * m))
    order(b, "repair", "terminal", sh(3, 10, 9), (S.accepted, 10 * m), (S.on_hold, hr),
          (S.in_progress, 5 * hr), (S.resolved, 6 * hr), rating=(3, 7 * hr))  # fmt: skip
    stuck = order(b, "complaint", "wechat", sh(3, 12, 9))
    order(b, "repair", "wechat", sh(3, 20, 9), (S.accepted, hr), (S.resolved, 4 * hr),
          (S.in_progress, d), (S.resolved, d + 2 * hr), rating=(5, 2 * d))  # fmt: skip
    order(c, "policy_question", "hotline", sh(3, 25, 9), (S.accepted, 5 * m), (S.resolved, 30 * m))
    order(c, "repair", "wechat", sh(3, 31, 23, 30))
    seed.order(c, "repair", "wechat", sh(4, 1, 9))  # April: not in March's cohort

    assert seed.sweep(sh(3, 5, 12)).response_breaches == 1  # the complaint, due after 2 h
    with seed.backend.session() as session:
        orders.transition(session, seed.caller, late, S.accepted, None, seed.hospital, POLICY,
                          sh(3, 5, 13))  # fmt: skip
        orders.transition(session, seed.caller, late, S.resolved, None, seed.hospital, POLICY,
                          sh(3, 6, 9))  # fmt: skip
        orders.rate(session, seed.caller, late, 2, "太慢了", sh(3, 6, 10))
    assert seed.sweep(sh(3, 12, 12)).response_breaches == 1  # the second complaint
    assert seed.sweep(sh(3, 16)).resolution_breaches == 1  # ... and its 48 h to resolve
    assert stuck
    return made


# --- reading figures back from the page --------------------------------------------------------


def half_up(numerator: int, denominator: int) -> Decimal | None:
    if denominator == 0:
        return None
    return (Decimal(numerator) / Decimal(denominator)).quantize(
        Decimal("0.0001"), rounding=ROUND_HALF_UP
    )


def _dist(f: dict[str, Any], score: str) -> int:
    return int(f["satisfaction"]["distribution"].get(score, 0))


def _satisfied(f: dict[str, Any]) -> int:
    return _dist(f, "4") + _dist(f, "5")


# Column header -> (how the page writes it, the API's figure). 响应及时率 and 满意率 are derived
# from the API's counts with the definitions the page states.
COLUMNS: dict[str, tuple[str, Callable[[dict[str, Any]], Any]]] = {
    "新建": ("count", lambda f: f["created"]),
    "取消": ("count", lambda f: f["cancelled"]),
    "办结": ("count", lambda f: f["completed"]),
    "未办结": ("count", lambda f: f["open_at_end"]),
    "重新打开": ("count", lambda f: f["reopened"]),
    "办结率": ("percent", lambda f: f["completion_rate"]),
    "首次响应超时": ("count", lambda f: f["sla"]["response_breaches"]),
    "办理超时": ("count", lambda f: f["sla"]["resolution_breaches"]),
    "响应及时率": (
        "percent",
        lambda f: half_up(f["created"] - f["sla"]["response_breaches"], f["created"]),
    ),
    "评价数": ("count", lambda f: f["satisfaction"]["rated"]),
    "4–5分评价": ("count", _satisfied),
    "满意率": ("percent", lambda f: half_up(_satisfied(f), f["satisfaction"]["rated"])),
    "平均分": ("decimal", lambda f: f["satisfaction"]["average"]),
    "评价率": ("percent", lambda f: f["satisfaction"]["rating_rate"]),
    "已响应": ("count", lambda f: f["first_response_seconds"]["count"]),
    "首次响应中位数": ("seconds", lambda f: f["first_response_seconds"]["p50"]),
    "首次响应P90": ("seconds", lambda f: f["first_response_seconds"]["p90"]),
    "待首次响应": ("count", lambda f: f["awaiting_first_response"]),
    "已计办结用时": ("count", lambda f: f["resolution_seconds"]["count"]),
    "办结用时中位数": ("seconds", lambda f: f["resolution_seconds"]["p50"]),
    "办结用时P90": ("seconds", lambda f: f["resolution_seconds"]["p90"]),
    **{f"{s}分": ("count", lambda f, s=s: _dist(f, s)) for s in "12345"},
}
UNITS = {"天": 86400, "小时": 3600, "分": 60, "秒": 1}


def read_cell(how: str, text: str) -> Any:
    """The number a cell shows, as the API would give it (None for "—")."""
    if text == "—":
        return None
    if how == "count":
        return int(text)
    if how == "percent":
        assert re.fullmatch(r"\d+\.\d{2}%", text), text
        return Decimal(text[:-1]) / 100
    if how == "decimal":
        return Decimal(text)
    parts = re.findall(r"(\d+)(天|小时|分|秒)", text)
    assert "".join(n + u for n, u in parts) == text, text
    return sum(int(n) * UNITS[u] for n, u in parts)


def api_value(how: str, value: Any) -> Any:
    if value is None:
        return None
    if how in ("percent", "decimal"):
        return Decimal(str(value))
    if how == "seconds":
        return round(value)
    return value


def row_label(group_by: str, key: str | None) -> str:
    if group_by == "community":
        return key or "未关联居民"
    if group_by == "kind":
        return KIND_LABELS[key]
    if group_by == "channel":
        return CHANNEL_LABELS.get(key, "接口")
    if group_by == "week":
        return f"{key} 起"
    return str(key)


def table_cells(page: Page, selector: str) -> list[list[str]]:
    return page.eval_on_selector(
        selector, "t => [...t.rows].map(r => [...r.cells].map(c => c.innerText.trim()))"
    )


def assert_tables_match(page: Page, stats: dict[str, Any]) -> int:
    """Every figure in every grouped table equals GET /stats; returns the cells compared."""
    compared = 0
    rows = [(row_label(stats["group_by"], g["key"]), g) for g in stats["groups"]]
    rows.append(("合计", stats["overall"]))
    for table in ("rates", "times", "satisfaction", "volume"):
        header, *body = table_cells(page, f"#s-table-{table}")
        assert [r[0] for r in body] == [label for label, _ in rows], table
        for cells, (label, figures) in zip(body, rows, strict=True):
            for column, text in zip(header[1:], cells[1:], strict=True):
                how, value = COLUMNS[column]
                assert read_cell(how, text) == api_value(how, value(figures)), (
                    table,
                    label,
                    column,
                    text,
                )
                compared += 1
    header, *body = table_cells(page, "#s-table-distribution")
    satisfaction = stats["overall"]["satisfaction"]
    for score_label, shown, share in body:
        score = score_label.removesuffix("分")
        assert int(shown) == satisfaction["distribution"][score]
        expected = half_up(satisfaction["distribution"][score], satisfaction["rated"])
        assert read_cell("percent", share) == expected
        compared += 2
    return compared


def show_stats(page: Page, **choices: str) -> None:
    """Set the form as staff would and wait for the new figures."""
    for name, value in choices.items():
        target = page.locator(f"#s-{name}")
        if target.evaluate("e => e.tagName") == "SELECT":
            target.select_option(value)
        else:
            target.fill(value)
    page.evaluate("document.documentElement.dataset.stats = 'asked'")
    page.get_by_role("button", name="统计", exact=True).click()
    expect(page.locator("html")).to_have_attribute("data-stats", "ready")


# --- 统计 ----------------------------------------------------------------------------------------


@pytest.fixture
def hospital(fhir_url: str) -> Iterator[FhirHospitalAdapter]:
    adapter = FhirHospitalAdapter(fhir_url)
    yield adapter
    adapter.close()


@sqlite_only
def test_the_statistics_page_shows_what_the_api_says(
    api: Api, backend: Backend, console: Console, hospital: FhirHospitalAdapter
) -> None:
    tag = uuid.uuid4().hex[:6]
    a, b, c = (f"统计页{tag}{name}社区" for name in ("东风", "长青", "和平"))
    made = seed_march(Seeder(api, backend, hospital), a, b, c)

    page = console.open("supervisor", "/console/stats")
    page.emulate_media(reduced_motion="reduce")  # charts drawn at once, for the screenshot
    page.goto(f"/console/stats?from={Y}-03-01&to={Y}-04-01&group_by=community")
    expect(page.locator("html")).to_have_attribute("data-stats", "ready")
    expect(page.locator("#s-until")).to_have_value(f"{Y}-03-31")  # the last day, included

    compared = 0
    base = {"from": f"{Y}-03-01", "to": f"{Y}-04-01"}
    for group_by in ("community", "kind", "channel", "week"):
        if group_by != "community":
            show_stats(page, group=group_by)
        stats = api.call("supervisor", "GET", "/stats", params={**base, "group_by": group_by})
        assert stats.status_code == 200, stats.text
        compared += assert_tables_match(page, stats.json())
        if group_by == "community":
            overall = stats.json()["overall"]
            mine = {g["key"]: g for g in stats.json()["groups"] if g["key"] in (a, b, c)}
            assert (mine[a]["created"], mine[b]["created"], mine[c]["created"]) == (4, 3, 2)
            assert overall["sla"]["response_breaches"] >= 2
            assert overall["satisfaction"]["rated"] >= 5
            console.screenshot(page, "stats")
            assert (artifacts_dir() / "stats.png").stat().st_size > 10_000

    # Filters: one community's repairs, by channel (the same filters asked of the API).
    show_stats(page, community=a, kind="repair", group="channel")
    params = {**base, "community": a, "kind": "repair", "group_by": "channel"}
    filtered = api.call("supervisor", "GET", "/stats", params=params).json()
    assert filtered["overall"]["created"] == 2
    compared += assert_tables_match(page, filtered)
    assert compared > 300

    # Drill-down: the completed orders of one community, behind its number.
    show_stats(page, community="", kind="", group="community")
    volume = page.locator("#s-table-volume")
    volume.locator("tr", has=page.get_by_role("button", name=f"{a}：查看全部工单")).get_by_role(
        "button", name=re.compile("办结 3：查看")
    ).click()
    drill = page.locator("#s-drill")
    expect(drill).to_be_focused()
    expect(page.locator("#s-drill-h")).to_contain_text(f"{a} · 办结")
    expect(page.locator("#s-drill-summary")).to_contain_text("共 3 张")
    shown = page.locator("#s-drill-table tbody th").all_inner_texts()
    assert sorted(int(t.lstrip("#")) for t in shown) == sorted(made[a][:3])
    # ... and the orders behind a breach count, in the overview.
    page.locator("#s-overview").get_by_role("button", name=re.compile("^合计 首次响应超时")).click()
    expect(page.locator("#s-drill-h")).to_contain_text("合计 · 首次响应超时")
    breached = {made[a][2], made[b][1]}
    expect(page.locator("#s-drill-table tbody th").first).to_be_visible()
    ids = {int(t.lstrip("#")) for t in page.locator("#s-drill-table tbody th").all_inner_texts()}
    assert breached <= ids

    # CSV: what the table says, in UTF-8 with a BOM (Excel reads the Chinese right).
    with page.expect_download() as download_info:
        page.locator("#s-csv-rates").click()
    download = download_info.value
    assert download.suggested_filename.endswith(".csv") and "办结率" in download.suggested_filename
    raw = Path(download.path()).read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    exported = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"), newline="")))
    assert exported == table_cells(page, "#s-table-rates")
    assert exported[0][:4] == ["社区", "新建", "取消", "办结"]
    assert console.errors == []


@sqlite_only
def test_the_statistics_page_says_what_is_wrong_with_a_period(api: Api, console: Console) -> None:
    page = console.open("supervisor", "/console/stats")
    expect(page.locator("html")).to_have_attribute("data-stats", "ready")
    page.locator("#s-from").fill(f"{Y}-03-10")
    page.locator("#s-until").fill(f"{Y}-03-01")
    page.get_by_role("button", name="统计", exact=True).click()
    expect(page.locator("#s-error")).to_have_text("结束日期不能早于开始日期。")
    expect(page.locator("#s-until")).to_have_attribute("aria-invalid", "true")
    page.locator("#s-until").fill(f"{Y + 2}-03-01")  # more than 366 days: the API's words
    page.get_by_role("button", name="统计", exact=True).click()
    expect(page.locator("#s-error")).to_contain_text("统计区间最长 366 天")
    # Every formula is written out, in Chinese.
    for term in ("办结率", "响应及时率", "满意率", "最近秩法", "含开始，不含结束"):
        expect(page.locator("main")).to_contain_text(term)
    assert console.errors == []


# --- 居民 ----------------------------------------------------------------------------------------


@sqlite_only
def test_a_profile_is_masked_until_staff_say_why_and_the_reveal_is_audited(
    api: Api, console: Console
) -> None:
    phone = unique_phone()
    name = f"居民页{uuid.uuid4().hex[:6]}"
    resident = new_resident(api, name=name, phone=phone, community="居民页测试社区")
    rid = resident["id"]
    order = api.call("bot", "POST", "/work-orders", json=repair_body(rid))
    assert order.status_code == 201, order.text
    talk(api, rid, "楼道灯坏了")
    agent = me(api, "agent")

    page = console.open("agent", "/console/residents")
    page.get_by_label("姓名").fill(name)
    page.get_by_role("button", name="查找", exact=True).click()
    page.locator("#r-table").get_by_role("link", name=name).click()
    masked = f"{phone[:3]}****{phone[-4:]}"
    expect(page.locator("#r-phone-value")).to_have_text(masked)
    expect(page.locator("#r-facts")).to_contain_text("3号楼*单元***")
    expect(page.locator("#r-orders")).to_contain_text(f"#{order.json()['id']}")
    expect(page.locator("#r-conversations")).to_contain_text("助手接待")
    expect(page.locator("#r-calls")).to_contain_text("没有通话记录")

    # Without a purpose nothing is asked of the API.
    page.get_by_role("button", name="显示完整信息").click()
    expect(page.get_by_label("查看用途（必填）")).to_be_focused()
    page.get_by_role("button", name="确认显示").click()
    expect(page.locator("#r-reveal-error")).to_have_text("请先选择查看用途。")
    expect(page.get_by_label("查看用途（必填）")).to_have_attribute("aria-invalid", "true")
    page.get_by_label("查看用途（必填）").select_option("其他")
    page.get_by_role("button", name="确认显示").click()
    expect(page.locator("#r-reveal-error")).to_have_text("选择“其他”时请写明用途。")
    expect(page.locator("#r-phone-value")).to_have_text(masked)
    assert "reveal_personal_data" not in {e["action"] for e in audit_of(api, rid)}

    page.get_by_label("查看用途（必填）").select_option("回访核实")
    page.get_by_label("补充说明（选“其他”时必填）").fill("核对上门地址")
    page.get_by_role("button", name="确认显示").click()
    expect(page.locator("#r-phone-value")).to_have_text(phone)
    expect(page.locator("#r-facts")).to_contain_text("3号楼2单元502")
    expect(page.locator("#r-facts")).to_contain_text("高血压")  # service notes, only revealed
    expect(page.locator("#r-mask-state")).to_contain_text("回访核实：核对上门地址")
    reveals = [e for e in audit_of(api, rid) if e["action"] == "reveal_personal_data"]
    assert [(e["principal_id"], e["detail"]) for e in reveals] == [
        (agent["id"], "回访核实：核对上门地址")
    ]
    console.screenshot(page, "residents-revealed")

    page.get_by_role("button", name="隐藏完整信息").click()
    expect(page.locator("#r-phone-value")).to_have_text(masked)
    expect(page.get_by_role("button", name="显示完整信息")).to_be_focused()
    assert console.errors == []


def test_the_reveal_purpose_is_kept_as_the_audit_detail(api: Api) -> None:
    rid = new_resident(api)["id"]
    path = f"/residents/{rid}"
    number = unique_phone()
    purpose = f"紧急联系\r\n\t家属电话 {number}\n"
    answer = api.call("agent", "GET", path, params={"reveal": "true", "purpose": purpose})
    assert answer.status_code == 200, answer.text
    assert answer.json()["masked"] is False
    plain = api.call("agent", "GET", path, params={"purpose": "回访核实"})
    assert plain.json()["masked"] is True  # a purpose alone reveals nothing
    for bad in ("长" * 101, "回访\x00核实"):
        refused = api.call("agent", "GET", path, params={"reveal": "true", "purpose": bad})
        assert refused.status_code == 422, refused.text
    reveals = [e for e in audit_of(api, rid) if e["action"] == "reveal_personal_data"]
    # One line, no control characters, a number in it masked like everywhere else.
    assert [e["detail"] for e in reveals] == [f"紧急联系 家属电话 {number[:3]}****{number[-4:]}"]
    # Without a purpose (API clients of before) the reveal is still audited.
    api.call("agent", "GET", path, params={"reveal": "true"})
    details = [e["detail"] for e in audit_of(api, rid) if e["action"] == "reveal_personal_data"]
    assert details[0] is None and len(details) == 2


def test_conversations_can_be_listed_by_resident(api: Api) -> None:
    mine, other = new_resident(api)["id"], new_resident(api)["id"]
    keys: dict[int, set[str]] = {}
    for rid in (mine, other, mine):
        keys.setdefault(rid, set()).add(talk(api, rid))
    page = api.call("agent", "GET", "/conversations", params={"state": "all", "resident_id": mine})
    assert page.status_code == 200, page.text
    assert page.json()["total"] == 2
    assert {c["key"] for c in page.json()["items"]} == keys[mine]
    assert {c["resident_id"] for c in page.json()["items"]} == {mine}
    everyone = api.call("agent", "GET", "/conversations", params={"state": "all", "limit": 200})
    assert everyone.json()["total"] >= 3


# --- 审计 ----------------------------------------------------------------------------------------


@sqlite_only
def test_admins_see_who_revealed_what_and_why_and_agents_may_not_look(
    api: Api, console: Console
) -> None:
    rid = new_resident(api, community="审计页测试社区")["id"]
    revealed = api.call(
        "agent", "GET", f"/residents/{rid}", params={"reveal": "true", "purpose": "紧急联系"}
    )
    assert revealed.status_code == 200
    for _ in range(55):  # more than one page of entries for this resident
        assert api.call("agent2", "GET", f"/residents/{rid}").status_code == 200

    # The page's own first list and the staff names arrive only after the admin has filtered:
    # what they chose stays chosen, and the late unfiltered list does not replace theirs.
    page = console.open("admin", "/console/")
    held: dict[str, Route] = {}

    def hold_first(route: Route) -> None:
        name = "principals" if route.request.url.split("?")[0].endswith("/principals") else "list"
        if name in held:
            route.continue_()
        else:
            held[name] = route

    page.route(re.compile(r"/(principals|audit\?.*)$"), hold_first)
    page.goto("/console/audit")
    page.get_by_label("对象类型").select_option("resident")
    page.get_by_label("对象编号").fill(str(rid))
    page.get_by_role("button", name="筛选", exact=True).click()
    expect(page.locator("#a-summary")).to_contain_text("共 57 条记录，当前显示第 1–50 条")
    held["list"].continue_()
    held["principals"].continue_()
    expect(page.locator("#a-table tbody")).to_contain_text("agent2（agent2，工作人员）")
    expect(page.get_by_label("对象类型")).to_have_value("resident")
    expect(page.get_by_label("对象编号")).to_have_value(str(rid))
    expect(page.locator("#a-summary")).to_contain_text("共 57 条记录，当前显示第 1–50 条")
    expect(page.locator("#a-table tbody tr")).to_have_count(50)
    assert f"resource_id={rid}" in page.url
    page.get_by_role("button", name="下一页").click()
    expect(page.locator("#a-summary")).to_contain_text("当前显示第 51–57 条")
    reveal = page.locator('#a-table tr[data-action="reveal_personal_data"]')
    expect(reveal).to_have_count(1)
    expect(reveal).to_contain_text("显示完整个人信息")
    expect(reveal).to_contain_text("agent（agent，工作人员）")
    expect(reveal).to_contain_text("用途：紧急联系")
    expect(reveal).to_contain_text(f"居民 #{rid}")
    expect(page.get_by_role("button", name="下一页")).to_be_disabled()
    console.screenshot(page, "audit")

    # By person: only agent2's reads.
    agent2 = me(api, "agent2")
    page.goto(
        f"/console/audit?principal_id={agent2['id']}&resource_type=resident&resource_id={rid}"
    )
    expect(page.locator("#a-summary")).to_contain_text("共 55 条记录")
    expect(page.get_by_label("工作人员")).to_have_value(str(agent2["id"]))
    assert console.errors == []

    agent_page = console.open("agent", "/console/orders")
    refused = agent_page.goto("/console/audit")
    assert refused is not None and refused.status == 403
    expect(agent_page.locator("main")).to_contain_text("没有打开此页面的权限")
    expect(agent_page.locator(".mainnav")).not_to_contain_text("审计")


# --- bad input ---------------------------------------------------------------------------------


def test_the_touched_endpoints_have_no_server_errors(api: Api, tmp_path: Path) -> None:
    fuzz_api(
        api,
        tmp_path,
        "--header",
        f"Authorization: Bearer {api.process.tokens['admin']}",
        "--include-path-regex",
        r"^/(residents/\{resident_id\}|conversations|audit|stats)$",
        "--max-examples",
        "60",
        "--max-time",
        "20",
        timeout=180,
    )

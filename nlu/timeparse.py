"""Spoken Chinese dates and times to ISO 8601 in Asia/Shanghai, relative to a given `now`.

Residents (many elderly, many northern) say 明儿上午, 下礼拜三下午两点, 后儿个晌午, 月底; ASR
writes numbers in digits or characters. `parse(text, now)` returns a `TimeExpr` (start, end,
grain, text); `find_all(text, now)` returns every mention with character spans, which the Rasa
component `nlu.normalizers.ChineseNormalizer` turns into `date`/`time` entities.

Conventions (all local time, Asia/Shanghai, UTC+8, no DST):

* grain `day`: start = 00:00 of the day, end = None; multi-day spans (周末, 下周) have
  end = 00:00 of the day after the last day.
* grain `window`: a part of the day or a range; start and end are set (end may be None only
  for open "X点以后" windows).
* grain `minute`: a clock time; end = None.

Parts of the day (window start-end):
  凌晨 00:00-06:00 · 早上/早晨/一早/清早 06:00-09:00 · 上午/上半天/前半晌/头午 08:00-12:00 ·
  中午/晌午 11:30-13:30 · 下午/下半天/后半晌/后晌 13:00-17:30 · 傍晚/擦黑/傍黑 17:00-19:00 ·
  晚上/晚间/夜里 18:00-21:00 · 半夜/深夜/后半夜 23:00-次日03:00 · 白天 08:00-18:00.

Clock hours:
* with a part of the day, 12-hour readings follow it: 下午三点 = 15:00, 中午一点 = 13:00,
  晚上十点 = 22:00, 晚上十二点 = next day 00:00, 半夜两点/夜里两点 = next day 02:00 (the night
  after the named day), 凌晨两点 = 02:00 of the named day.
* without one, the daytime rule: 7-11 → a.m., 12 → noon, 1-6 → p.m. (三点 = 15:00, 八点 =
  08:00); 0 and 13-24 are 24-hour readings.
* minutes: 半 = 30, 一刻 = 15, 三刻 = 45, 过五分/零五/五分 = 5, 差五分十点/十点差五分 = 09:55;
  X点多 = window X:00 to X+1:00; 八九点 = window 08:00-10:00; X点以前 = window from the part of
  the day's start (else 06:00) to X; X点以后 = window from X to the part's end (else open).

Days:
* 今天/今儿(个)/今个 0, 明天/明儿(个)/明个/明日 +1, 后天/后儿(个) +2, 大后天 +3, 昨天/昨儿 -1,
  前天/前儿 -2; 今晚/明早/明晚/昨晚 combine a day with 晚上/早上.
* weeks start on Monday. 下周三/下礼拜三/下星期三 = Wednesday of next calendar week;
  这周三/本周三 = Wednesday of this week even when it is already past (the dialogue can
  reject a past date and ask again); 上周三 = last week's; bare 周三 = the next Wednesday on
  or after today; 周末 = Saturday of this week, end Monday 00:00 (today when it is already the
  weekend); 下周 alone = next Monday to next-next Monday.
* N号 alone = this month when the day is today or later, else next month; M月N号 without a
  year = this year when not before today, else next year; 下个月五号 / 这个月五号 as said.
* 月底 = last day of this month; 下个月底 = last day of next month; 月初 = the 1st of next month
  (of this month only when today is the 1st), 这个月初 = the 1st of this month; 月中 = the 15th.
* N天后 = today + N; 过两天 = +2; 过几天 = +3; 一个礼拜以后 = +7; N个月后 = same day N months on.

When no day is said, a part of the day resolves to today if its window has not ended yet
(else tomorrow), and a clock time to today if it is still ahead (else tomorrow).
Several mentions in one sentence (明天吧，嗯，上午九点) are joined when only fillers lie between
them; a later mention without a day takes the day of an earlier one (下礼拜三去，上午九点).
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from typing import Literal

from nlu.numerals import cn_to_int, to_halfwidth

try:
    from zoneinfo import ZoneInfo

    SHANGHAI: tzinfo = ZoneInfo("Asia/Shanghai")
except Exception:  # pragma: no cover - no tz database; China has had no DST since 1991
    SHANGHAI = timezone(timedelta(hours=8), "Asia/Shanghai")

Grain = Literal["day", "window", "minute"]


@dataclass(frozen=True)
class TimeExpr:
    """A resolved time mention; `end` is None for single days and clock times."""

    start: datetime
    end: datetime | None
    grain: Grain
    text: str

    def as_dict(self) -> dict[str, str | None]:
        """JSON-friendly form used in entity `additional_info`."""
        return {
            "start": self.start.isoformat(),
            "end": self.end.isoformat() if self.end else None,
            "grain": self.grain,
            "date": self.start.date().isoformat(),
            "text": self.text,
        }


@dataclass(frozen=True)
class TimeMatch:
    """A mention in a text: the resolved expression and character spans of its parts."""

    expr: TimeExpr
    start: int
    end: int
    date_span: tuple[int, int] | None
    time_span: tuple[int, int] | None


# ------------------------------------------------------------------------------ patterns

_NUM = r"(?:\d+|[零〇一二两三四五六七八九十]+)"
_WD = r"[一二三四五六日天七1-7]"
_WEEK = r"(?:周|星期|礼拜|禮拜)"
_WEEK_PREFIX = r"下下个|下下|下一个|下个|下一|下|这个|这一|这|本|今|上上个|上上|上一个|上个|上一|上"
_MONTH_PREFIX = r"下下个|下下|下个|下|这个|这|本|上个|上"
_NOT_ADDRESS = r"(?![楼樓栋棟单元门室院线床窗口箱座幢户层])"

_REL_DAYS: dict[str, int] = {
    "大后天": 3,
    "大后儿": 3,
    "后天": 2,
    "後天": 2,
    "后儿个": 2,
    "后儿": 2,
    "明天": 1,
    "明儿个": 1,
    "明儿": 1,
    "明个": 1,
    "明日": 1,
    "今天": 0,
    "今儿个": 0,
    "今儿": 0,
    "今个": 0,
    "今日": 0,
    "当天": 0,
    "昨天": -1,
    "昨儿个": -1,
    "昨儿": -1,
    "昨日": -1,
    "前天": -2,
    "前儿个": -2,
    "大前天": -3,
}

# name → (start minutes, end minutes, hour rule); end may exceed 24 h (next day).
_PERIODS: dict[str, tuple[int, int, str]] = {
    "night": (0, 6 * 60, "small"),
    "early": (6 * 60, 9 * 60, "am"),
    "morning": (8 * 60, 12 * 60, "am"),
    "noon": (11 * 60 + 30, 13 * 60 + 30, "noon"),
    "afternoon": (13 * 60, 17 * 60 + 30, "pm"),
    "dusk": (17 * 60, 19 * 60, "pm"),
    "evening": (18 * 60, 21 * 60, "evening"),
    "midnight": (23 * 60, 27 * 60, "midnight"),
    "daytime": (8 * 60, 18 * 60, "day"),
}
_PERIOD_WORDS: dict[str, str] = {
    "凌晨": "night",
    "大清早": "early",
    "一大早": "early",
    "清早": "early",
    "一早": "early",
    "早上": "early",
    "早晨": "early",
    "早起": "early",
    "早晌": "early",
    "上午": "morning",
    "上半天": "morning",
    "前半晌": "morning",
    "前半天": "morning",
    "前晌": "morning",
    "头午": "morning",
    "中午": "noon",
    "晌午头": "noon",
    "晌午": "noon",
    "正午": "noon",
    "下午": "afternoon",
    "下半天": "afternoon",
    "后半晌": "afternoon",
    "后半天": "afternoon",
    "后晌": "afternoon",
    "过晌": "afternoon",
    "午后": "afternoon",
    "傍晚": "dusk",
    "傍黑儿": "dusk",
    "傍黑": "dusk",
    "擦黑": "dusk",
    "黄昏": "dusk",
    "晚半晌": "dusk",
    "晚上": "evening",
    "晚间": "evening",
    "夜里": "evening",
    "夜间": "evening",
    "黑夜": "evening",
    "后半夜": "midnight",
    "半夜": "midnight",
    "深夜": "midnight",
    "午夜": "midnight",
    "白天": "daytime",
}
# 今晚 / 明早 / 明儿晚上 …: a day and a part of the day in one word.
_COMBO_DAYS = {"今": 0, "明": 1, "昨": -1}
_COMBO_PERIODS = {
    "早上": "early",
    "早晨": "early",
    "早": "early",
    "晚上": "evening",
    "晚": "evening",
}
_WEEKDAY_INDEX = {
    "一": 0,
    "二": 1,
    "三": 2,
    "四": 3,
    "五": 4,
    "六": 5,
    "日": 6,
    "天": 6,
    "七": 6,
    "1": 0,
    "2": 1,
    "3": 2,
    "4": 3,
    "5": 4,
    "6": 5,
    "7": 6,
}


def _alt(words: list[str]) -> str:
    return "|".join(sorted((re.escape(w) for w in words), key=len, reverse=True))


_REL_DAY_RE = re.compile(f"(?:{_alt(list(_REL_DAYS))})")
_COMBO_RE = re.compile(f"(?P<d>[今明昨])(?P<p>{_alt(list(_COMBO_PERIODS))})(?!饭|餐|了|点儿)")
_PERIOD_RE = re.compile(f"(?:{_alt(list(_PERIOD_WORDS))})")
_WEEKDAY_RE = re.compile(rf"(?P<p>{_WEEK_PREFIX})?(?:个)?{_WEEK}(?P<d>{_WD})")
_WEEKEND_RE = re.compile(rf"(?P<p>{_WEEK_PREFIX})?(?:个)?(?:周末|{_WEEK}六{_WEEK}[日天])")
_WEEK_RE = re.compile(
    rf"(?P<p>下下个|下下|下一个|下个|下一|下|这个|这|本)(?:个)?{_WEEK}(?!{_WD}|末)"
)
_MONTH_DAY_RE = re.compile(
    rf"(?:(?P<y>今年|明年|去年|\d{{4}}年|[〇零一二三四五六七八九]{{4}}年))?"
    rf"(?:(?P<mp>{_MONTH_PREFIX})月|(?P<m>{_NUM})月份?)?(?:的)?"
    rf"(?P<d>{_NUM})(?:号|日){_NOT_ADDRESS}"
)
_MONTH_EDGE_RE = re.compile(
    rf"(?:(?P<mp>{_MONTH_PREFIX})(?:个)?月|(?P<m>{_NUM})月份?)?(?:的)?"
    r"(?P<e>月底|月末|月初|月中|底|末|初|中旬|中)"
)
_LATER_RE = re.compile(
    rf"(?:再)?(?P<n>{_NUM}|半|几)(?:个)?(?P<u>天|日|礼拜|星期|周|月)(?:以后|之后|后)(?!天)"
)
_AFTER_DAYS_RE = re.compile(rf"(?:再)?过(?:上)?(?P<n>{_NUM}|几)天")

# Clock times. "一点" is also "a little" (快一点, 早一点儿, 一点都不): guarded below.
_SOFT_BEFORE = set("快慢早晚大小好多少高低轻重近远有点差些")
_CLOCK_RE = re.compile(
    rf"(?:差(?P<pre>{_NUM}分|一刻)(?:钟)?)?"
    rf"(?P<h>{_NUM})(?:点|點)(?!儿|点|都|也|没|不|事|意思|东西|小)"
    r"(?:"
    r"(?P<half>半)"
    r"|(?P<q1>(?:过)?(?:一刻|1刻))"
    r"|(?P<q3>三刻|3刻)"
    rf"|差(?P<post>{_NUM}分|一刻)(?:钟)?"
    rf"|过(?P<mg>{_NUM})分?"
    rf"|零(?P<mz>{_NUM})分?"
    rf"|(?P<mf>{_NUM})分"
    r"|(?P<mt>(?:[二三四五]?十[一二三四五六七八九]?|[1-5]\d|0[1-9]))(?!点|号|天|日|个|岁)"
    r"|(?P<more>多)"
    r")?"
    r"(?:钟|整|来钟|多钟)?"
)
_COLON_RE = re.compile(r"(?P<h>[0-2]?\d)\s*[:：]\s*(?P<m>[0-5]\d)")
_HOUR_PAIR_RE = re.compile(
    r"(?P<h1>[一二三四五六七八九十]|十[一二])(?P<h2>[二两三四五六七八九十]|十[一二])点(?:钟)?"
)
_BARE_RANGE_RE = re.compile(
    rf"(?P<h1>{_NUM})(?:点)?\s*(?:到|至|-|~|—)\s*(?P<h2>{_NUM})(?:点钟|点)"
    r"(?!半|一刻|三刻|过|零|差|多|[一二三四五六七八九十\d])"
)
_RANGE_SEP_RE = re.compile(r"到|至|~|-|—|–")
_BEFORE_RE = re.compile(r"(?:以前|之前|前)(?!天|儿)")
_AFTER_RE = re.compile(r"(?:以后|之后|后)(?!天|儿)")
_GAP_RE = re.compile(
    r"(?:[\s,，、。.!！~～…]|的|吧|呢|啊|呀|嘛|哈|嗯|呃|哦|噢|唉|诶|欸|那个|这个|那就|就是|就|那|"
    r"大概|大约|差不多|最好|左右|前后|上下|的样子|时候|再|是|在|吧)*"
)


@dataclass
class _Token:
    kind: str  # day, period, clock, range, sep, before, after
    start: int
    end: int
    day: date | None = None
    day_end: date | None = None
    period: str | None = None
    hour: int | None = None
    minute: int = 0
    hour2: int | None = None  # ranges: 八九点, 八到十点
    minute2: int = 0
    approx_hour: bool = False  # X点多
    extra: dict[str, int] = field(default_factory=dict)


# ------------------------------------------------------------------------------ helpers


def _num(text: str | None) -> int | None:
    return None if text is None else cn_to_int(text)


def _add_months(day: date, months: int) -> date:
    month_index = day.month - 1 + months
    year = day.year + month_index // 12
    month = month_index % 12 + 1
    last = calendar.monthrange(year, month)[1]
    return date(year, month, min(day.day, last))


def _month_start(today: date, prefix: str | None) -> date:
    offsets = {
        None: 0,
        "这个": 0,
        "这": 0,
        "本": 0,
        "下个": 1,
        "下": 1,
        "下下个": 2,
        "下下": 2,
        "上个": -1,
        "上": -1,
    }
    return _add_months(today.replace(day=1), offsets.get(prefix, 0))


def _week_offset(prefix: str | None) -> int | None:
    if prefix is None:
        return None
    if prefix.startswith("下下"):
        return 2
    if prefix.startswith("下"):
        return 1
    if prefix.startswith("上上"):
        return -2
    if prefix.startswith("上"):
        return -1
    return 0


def _minutes(text: str | None) -> int | None:
    if text is None:
        return None
    if text == "一刻":
        return 15
    return _num(text.rstrip("分"))


# ------------------------------------------------------------------------------ scanning


def _scan_at(text: str, pos: int, today: date) -> _Token | None:
    """The longest token starting at `pos`, or None."""
    candidates: list[_Token] = []

    def add(match: re.Match[str] | None, build: Callable[[re.Match[str]], _Token | None]) -> None:
        if match and match.end() > pos:
            token = build(match)
            if token is not None:
                candidates.append(token)

    add(_COMBO_RE.match(text, pos), lambda m: _combo(m, today))
    add(_REL_DAY_RE.match(text, pos), lambda m: _rel_day(m, today))
    add(_WEEKDAY_RE.match(text, pos), lambda m: _weekday(m, today))
    add(_WEEKEND_RE.match(text, pos), lambda m: _weekend(m, today))
    add(_WEEK_RE.match(text, pos), lambda m: _week(m, today))
    add(_MONTH_DAY_RE.match(text, pos), lambda m: _month_day(m, today))
    add(_MONTH_EDGE_RE.match(text, pos), lambda m: _month_edge(m, today))
    add(_LATER_RE.match(text, pos), lambda m: _later(m, today))
    add(_AFTER_DAYS_RE.match(text, pos), lambda m: _after_days(m, today))
    add(_PERIOD_RE.match(text, pos), _period)
    add(_HOUR_PAIR_RE.match(text, pos), _hour_pair)
    add(_BARE_RANGE_RE.match(text, pos), _bare_range)
    add(_CLOCK_RE.match(text, pos), lambda m: _clock(m, text))
    add(_COLON_RE.match(text, pos), _colon)
    if not candidates:
        return None
    return max(candidates, key=lambda t: t.end)


def _combo(m: re.Match[str], today: date) -> _Token:
    day = today + timedelta(days=_COMBO_DAYS[m.group("d")])
    return _Token("day", m.start(), m.end(), day=day, period=_COMBO_PERIODS[m.group("p")])


def _rel_day(m: re.Match[str], today: date) -> _Token:
    return _Token("day", m.start(), m.end(), day=today + timedelta(days=_REL_DAYS[m.group(0)]))


def _weekday(m: re.Match[str], today: date) -> _Token:
    index = _WEEKDAY_INDEX[m.group("d")]
    offset = _week_offset(m.group("p"))
    if offset is None:
        day = today + timedelta(days=(index - today.weekday()) % 7)
    else:
        monday = today - timedelta(days=today.weekday())
        day = monday + timedelta(days=7 * offset + index)
    return _Token("day", m.start(), m.end(), day=day)


def _weekend(m: re.Match[str], today: date) -> _Token:
    offset = _week_offset(m.group("p")) or 0
    monday = today - timedelta(days=today.weekday())
    saturday = monday + timedelta(days=7 * offset + 5)
    start = today if offset == 0 and today > saturday else saturday
    return _Token("day", m.start(), m.end(), day=start, day_end=saturday + timedelta(days=2))


def _week(m: re.Match[str], today: date) -> _Token:
    offset = _week_offset(m.group("p")) or 0
    monday = today - timedelta(days=today.weekday()) + timedelta(days=7 * offset)
    start = today if offset == 0 else monday
    return _Token("day", m.start(), m.end(), day=start, day_end=monday + timedelta(days=7))


def _year(text: str | None, today: date) -> int | None:
    if text is None:
        return None
    if text == "今年":
        return today.year
    if text == "明年":
        return today.year + 1
    if text == "去年":
        return today.year - 1
    return _num(text.rstrip("年"))


def _month_day(m: re.Match[str], today: date) -> _Token | None:
    day_n = _num(m.group("d"))
    if day_n is None or not 1 <= day_n <= 31:
        return None
    year = _year(m.group("y"), today)
    try:
        if m.group("m") is not None:
            month = _num(m.group("m"))
            if month is None or not 1 <= month <= 12:
                return None
            day = date(year or today.year, month, day_n)
            if year is None and day < today:
                day = date(today.year + 1, month, day_n)
        elif m.group("mp") is not None:
            first = _month_start(today, m.group("mp"))
            day = first.replace(day=day_n)
        else:
            if m.group("y") is not None:
                return None
            day = today.replace(day=day_n) if day_n >= today.day else None
            if day is None:
                first = _add_months(today.replace(day=1), 1)
                day = first.replace(day=day_n)
    except ValueError:
        return None
    return _Token("day", m.start(), m.end(), day=day)


def _month_edge(m: re.Match[str], today: date) -> _Token | None:
    edge = m.group("e")
    prefix, month_text = m.group("mp"), m.group("m")
    if edge in ("底", "末", "初", "中", "中旬") and prefix is None and month_text is None:
        return None  # a bare 底/初 is not a date
    if month_text is not None:
        month = _num(month_text)
        if month is None or not 1 <= month <= 12:
            return None
        first = date(today.year, month, 1)
        if _add_months(first, 1) <= today:
            first = date(today.year + 1, month, 1)
    else:
        first = _month_start(today, prefix)
    last = calendar.monthrange(first.year, first.month)[1]
    if edge in ("月底", "月末", "底", "末"):
        day = first.replace(day=last)
    elif edge in ("月中", "中", "中旬"):
        day = first.replace(day=15)
    else:  # 月初 / 初
        if prefix is None and month_text is None and today.day != 1:
            day = _add_months(first, 1)
        else:
            day = first
    return _Token("day", m.start(), m.end(), day=day)


def _later(m: re.Match[str], today: date) -> _Token | None:
    n_text, unit = m.group("n"), m.group("u")
    if n_text == "半":
        days = 15 if unit == "月" else 3
        return _Token("day", m.start(), m.end(), day=today + timedelta(days=days))
    n = 3 if n_text == "几" else _num(n_text)
    if n is None or n > 366:
        return None
    if unit == "月":
        return _Token("day", m.start(), m.end(), day=_add_months(today, n))
    days = n * 7 if unit in ("礼拜", "星期", "周") else n
    return _Token("day", m.start(), m.end(), day=today + timedelta(days=days))


def _after_days(m: re.Match[str], today: date) -> _Token | None:
    n = 3 if m.group("n") == "几" else _num(m.group("n"))
    if n is None or n > 366:
        return None
    return _Token("day", m.start(), m.end(), day=today + timedelta(days=n))


def _period(m: re.Match[str]) -> _Token:
    return _Token("period", m.start(), m.end(), period=_PERIOD_WORDS[m.group(0)])


def _clock(m: re.Match[str], text: str) -> _Token | None:
    hour = _num(m.group("h"))
    if hour is None or hour > 24:
        return None
    soft = m.group("h") in ("一", "1") and m.start() > 0 and text[m.start() - 1] in _SOFT_BEFORE
    if soft and m.group("half") is None and m.group("mf") is None:
        # 快一点 / 早一点 / 差一点: "a little", unless a minute part follows
        return None
    minute = 0
    if m.group("half"):
        minute = 30
    elif m.group("q1"):
        minute = 15
    elif m.group("q3"):
        minute = 45
    else:
        for key in ("mg", "mz", "mf", "mt"):
            if m.group(key):
                value = _num(m.group(key))
                if value is None or value >= 60:
                    return None
                minute = value
                break
    less = _minutes(m.group("pre") or m.group("post"))
    token = _Token("clock", m.start(), m.end(), hour=hour, minute=minute)
    if less:
        token.extra["less"] = less
    if m.group("more"):
        token.approx_hour = True
    return token


def _colon(m: re.Match[str]) -> _Token | None:
    hour, minute = int(m.group("h")), int(m.group("m"))
    if hour > 24 or minute > 59:
        return None
    return _Token("clock", m.start(), m.end(), hour=hour, minute=minute)


def _hour_pair(m: re.Match[str]) -> _Token | None:
    h1, h2 = _num(m.group("h1")), _num(m.group("h2"))
    if h1 is not None and h2 is not None and h1 >= 10 and h2 < 10:
        h2 += 10  # 十一二点 = 11-12
    if h1 is None or h2 is None or h2 != h1 + 1:
        return None
    return _Token("clock", m.start(), m.end(), hour=h1, hour2=h2 + 1)


def _bare_range(m: re.Match[str]) -> _Token | None:
    h1, h2 = _num(m.group("h1")), _num(m.group("h2"))
    if h1 is None or h2 is None or h1 > 24 or h2 > 24:
        return None
    return _Token("clock", m.start(), m.end(), hour=h1, hour2=h2)


def _tokenize(text: str, today: date) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(text):
        token = _scan_at(text, pos, today)
        if token is None:
            if tokens and tokens[-1].kind in ("clock", "period"):
                sep = _RANGE_SEP_RE.match(text, pos)
                before = _BEFORE_RE.match(text, pos)
                after = _AFTER_RE.match(text, pos)
                for kind, match in (("sep", sep), ("before", before), ("after", after)):
                    if match and match.end() > pos:
                        tokens.append(_Token(kind, match.start(), match.end()))
                        pos = match.end()
                        break
                else:
                    pos += 1
                continue
            pos += 1
            continue
        tokens.append(token)
        pos = token.end
    return tokens


def _group(text: str, tokens: list[_Token]) -> list[list[_Token]]:
    """Tokens that follow each other with only fillers between them form one mention."""
    groups: list[list[_Token]] = []
    for token in tokens:
        if groups:
            last = groups[-1][-1]
            gap = text[last.end : token.start]
            joinable = _GAP_RE.fullmatch(gap) is not None and len(gap) <= 8
            if token.kind == "sep" and gap.strip():
                joinable = False
            if joinable and not _conflicts(groups[-1], token):
                groups[-1].append(token)
                continue
        groups.append([token])
    return groups


def _conflicts(group: list[_Token], token: _Token) -> bool:
    """A second day, or a time after a complete one without a range, starts a new mention."""
    kinds = [t.kind for t in group]
    if token.kind == "day":
        return "day" in kinds
    if token.kind == "period" and "clock" in kinds and "sep" not in kinds:
        # 三点下午 (said backwards) is fine; a period after a range end is not.
        return kinds[-1] not in ("clock",)
    if token.kind == "clock" and "clock" in kinds and kinds[-1] != "sep":
        return kinds[-1] != "period" or "sep" not in kinds
    return False


# ------------------------------------------------------------------------------ resolving


def _apply_period(hour: int, period: str | None) -> tuple[int, int]:
    """(hour 0-23, day offset) for a 12-hour reading under a part of the day."""
    if hour == 24:
        return 0, 1
    if hour == 0:
        return 0, 0
    if period is None:
        if hour >= 13:
            return hour, 0
        if 7 <= hour <= 12:
            return hour, 0
        return hour + 12, 0
    rule = _PERIODS[period][2]
    if hour >= 13:
        return hour, 0
    if rule == "am":
        return hour % 12 if hour == 12 and period == "early" else hour, 0
    if rule == "small":
        return (0 if hour == 12 else hour), 0
    if rule == "noon":
        return (hour, 0) if hour >= 10 else (hour + 12, 0)
    if rule == "pm":
        return (hour, 0) if hour == 12 else (hour + 12, 0)
    if rule == "evening":
        if hour == 12:
            return 0, 1
        if hour <= 4:
            return hour, 1
        return hour + 12, 0
    if rule == "midnight":
        if hour == 12:
            return 0, 1
        if hour <= 6:
            return hour, 1
        return hour + 12 if hour < 12 else hour, 0
    # daytime
    return (hour, 0) if hour >= 7 else (hour + 12, 0)


def _at(day: date, minutes: int) -> datetime:
    return datetime.combine(day, time(0, 0), tzinfo=SHANGHAI) + timedelta(minutes=minutes)


def _clock_minutes(token: _Token, period: str | None) -> tuple[int, int | None]:
    """(start, end) in minutes from 00:00 of the day; end only for ranges and X点多."""
    hour, day_off = _apply_period(token.hour or 0, period)
    start = day_off * 1440 + hour * 60 + token.minute - token.extra.get("less", 0)
    if token.hour2 is not None:
        hour2, day_off2 = _apply_period(token.hour2, period)
        end = day_off2 * 1440 + hour2 * 60
        if end <= start and hour2 < 12:
            end += 12 * 60
        return start, end
    if token.approx_hour:
        return start, start + 60
    return start, None


@dataclass
class _Resolved:
    day: date | None
    day_end: date | None
    start_min: int | None  # minutes from 00:00 of `day` (may exceed 1440)
    end_min: int | None
    grain: Grain
    date_span: tuple[int, int] | None
    time_span: tuple[int, int] | None


def _resolve_group(group: list[_Token]) -> _Resolved | None:
    day_token = next((t for t in group if t.kind == "day"), None)
    day = day_token.day if day_token else None
    day_end = day_token.day_end if day_token else None
    combo_period = day_token.period if day_token else None
    time_tokens = [t for t in group if t.kind != "day"]
    date_span = (day_token.start, day_token.end) if day_token else None
    time_span = None
    if time_tokens:
        time_span = (time_tokens[0].start, time_tokens[-1].end)
    elif combo_period and day_token:
        time_span = (day_token.start, day_token.end)

    # Split at a range separator: [period] [clock] (sep [period] [clock])
    sides: list[list[_Token]] = [[]]
    modifier: str | None = None
    for token in time_tokens:
        if token.kind == "sep":
            sides.append([])
        elif token.kind in ("before", "after"):
            modifier = token.kind
        else:
            sides[-1].append(token)
    sides = [s for s in sides if s]
    if not sides:
        if combo_period:
            p_start, p_end, _ = _PERIODS[combo_period]
            return _Resolved(day, None, p_start, p_end, "window", date_span, time_span)
        if day is None:
            return None
        return _Resolved(day, day_end, None, None, "day", date_span, time_span)

    def side_period(side: list[_Token], fallback: str | None) -> str | None:
        return next((t.period for t in side if t.kind == "period"), fallback)

    first_period = side_period(sides[0], combo_period)
    first_clock = next((t for t in sides[0] if t.kind == "clock"), None)
    if len(sides) == 1:
        if first_clock is None:
            p_start, p_end, _ = _PERIODS[first_period or "daytime"]
            return _Resolved(day, None, p_start, p_end, "window", date_span, time_span)
        start, end = _clock_minutes(first_clock, first_period)
        if modifier == "before":
            p_start = _PERIODS[first_period][0] if first_period else 6 * 60
            window_start = p_start if p_start < start else 0
            return _Resolved(day, None, window_start, start, "window", date_span, time_span)
        if modifier == "after":
            p_end = _PERIODS[first_period][1] if first_period else None
            window_end = p_end if p_end is not None and p_end > start else None
            return _Resolved(day, None, start, window_end, "window", date_span, time_span)
        grain: Grain = "window" if end is not None else "minute"
        return _Resolved(day, None, start, end, grain, date_span, time_span)

    # A range: each side resolved on the same day; the end side inherits the start's period.
    second = sides[1]
    second_period = side_period(second, None)
    second_clock = next((t for t in second if t.kind == "clock"), None)
    if first_clock is None:
        start = _PERIODS[first_period or "daytime"][0]
    else:
        start = _clock_minutes(first_clock, first_period)[0]
    if second_clock is None:
        end = _PERIODS[second_period or first_period or "daytime"][1]
    else:
        period = second_period or first_period
        end = _clock_minutes(second_clock, period)[0]
        if end <= start and second_period is None and second_clock.hour and second_clock.hour < 12:
            end += 12 * 60
    if end <= start:
        return None
    return _Resolved(day, None, start, end, "window", date_span, time_span)


def _finish(resolved: _Resolved, now: datetime, text: str) -> TimeExpr:
    today = now.date()
    day = resolved.day
    if resolved.grain == "day":
        assert day is not None
        end = _at(resolved.day_end, 0) if resolved.day_end else None
        return TimeExpr(_at(day, 0), end, "day", text)
    start_min = resolved.start_min or 0
    if day is None:
        day = today
        deadline = resolved.end_min if resolved.end_min is not None else start_min
        if _at(day, deadline) <= now:
            day = today + timedelta(days=1)
    start = _at(day, start_min)
    end = _at(day, resolved.end_min) if resolved.end_min is not None else None
    return TimeExpr(start, end, resolved.grain, text)


def _localize(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(SHANGHAI)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(SHANGHAI)


def find_all(text: str, now: datetime | None = None) -> list[TimeMatch]:
    """Every date/time mention in `text`, resolved relative to `now` (aware; default: clock).

    A mention without a day takes the day of the nearest earlier mention that has one.
    """
    now = _localize(now)
    clean = to_halfwidth(text)
    tokens = _tokenize(clean, now.date())
    matches: list[TimeMatch] = []
    context_day: _Token | None = None
    for group in _group(clean, tokens):
        if all(t.kind in ("sep", "before", "after") for t in group):
            continue
        day_token = next((t for t in group if t.kind == "day"), None)
        if day_token is None and context_day is not None:
            inherited = _Token("day", -1, -1, day=context_day.day)
            resolved = _resolve_group([inherited, *group])
            if resolved is not None:
                resolved.date_span = None
        else:
            resolved = _resolve_group(group)
        if day_token is not None and day_token.day_end is None:
            context_day = day_token
        if resolved is None:
            continue
        start, end = group[0].start, group[-1].end
        expr = _finish(resolved, now, text[start:end])
        matches.append(TimeMatch(expr, start, end, resolved.date_span, resolved.time_span))
    return matches


_GRAIN_RANK = {"day": 0, "window": 1, "minute": 2}


def parse(text: str, now: datetime | None = None) -> TimeExpr | None:
    """The most specific date/time in `text` (finest grain, then earliest), or None."""
    matches = find_all(text, now)
    if not matches:
        return None
    best = max(matches, key=lambda m: (_GRAIN_RANK[m.expr.grain], -m.start))
    return best.expr

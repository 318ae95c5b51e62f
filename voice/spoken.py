"""Screen text -> the words a person would say, for speech synthesis.

espeak-ng reads digits one by one, symbols in English ("%" as "percent") and has no idea that
2026-11-23 is a date, so replies written for the screen are rewritten before synthesis, the way
Chinese people say them on the phone:

* dates: 2026-11-23 → 十一月二十三号星期一 (ISO dates come from the system: the year is dropped
  unless `today` says it is another year, and the weekday is added when none follows);
  2026年11月23日 keeps its explicitly written year (二零二六年十一月二十三号); 日 after a month is
  said 号; 星期1/周7 → 星期一/周日;
* clock times: 14:30 → 下午两点半, 09:00 → 上午九点, 08:15 → 上午八点十五分. We say 十五分, not
  一刻: 一刻/三刻 are regional and easily misheard on a phone line, 十五分 is what hospital
  reminders say. Periods follow actions/common.py: 凌晨 before 6, 上午 before 12, 中午 12,
  下午 before 18, 晚上 after. 8点15分 / 2点半 (already spoken style) only get their digits read;
  ranges 8:00-11:30 → 上午八点到十一点半;
* phone numbers digit by digit with 幺 for 1, groups 3-4-4 (mobile), area code + 4-4 or 3-4
  (landline), 3-3-4 (400/800), separated by "，" so espeak pauses: 13800138000 →
  幺三八，零零幺三，八零零零. Short service numbers (120, 12345) are read digit by digit when the
  text says they are numbers to call (拨打/电话/热线 … before, 急救/热线 … after). Masked digits
  (138****5678) are read 星 each;
* addresses: 3号楼2单元502 → 三号楼二单元五零二: building, unit and floor numbers as numbers, room
  numbers digit by digit (also with 幺, as on the phone);
* money: ¥1,200 / 1200元 → 一千二百元, 3.5元 → 三元五角, 12.05元 → 十二元零五分; 2万元 → 两万元;
  "/月" → 每月;
* percentages 85% → 百分之八十五, temperatures -3℃ → 零下三度;
* counting: 2个 → 两个, 2点 → 两点, 200人 → 两百人, but 2号/2楼/第2 → 二 (numbering, not
  counting); list items "1." / "2、" / ① at the start of a line → 第一，第二，;
* codes (尾号, 验证码, 工单号 …, and any run of 6+ digits) digit by digit;
* removed: URLs, emoji, markdown markup (emphasis, headings, bullets, link targets, tables).

`to_spoken` is a pure function of its text (and `today`); it keeps Chinese punctuation because
espeak pauses on it.
"""

from __future__ import annotations

import re
from datetime import date

DIGITS = "零一二三四五六七八九"
PHONE_DIGITS = "零幺二三四五六七八九"  # 幺 for 1 on the phone, so it is not heard as 七
WEEKDAYS = "一二三四五六日"
_SMALL_UNITS = ("", "十", "百", "千")
_BIG_UNITS = ("", "万", "亿", "万亿")

# Measure words after which a count of 2 is 两 (两个, 两天), not 二.
_MEASURES = (
    "个月|个|位|次|天|年|周岁|周|岁|斤|件|张|份|名|人|种|家|本|台|项|条|趟|遍|间|套|辆|小时|"
    "分钟|秒钟|秒|公里|公斤|千克|克|米|里|块|户|盒|瓶|片|粒|颗|袋|支|只|把|双|碗|顿|步|级|倍|"
    "场|段|首|句|声|口|根|杯|道|笔|餐|晚|夜|处|所|栋楼|层楼|座楼|元|角|毛|万|千|百"
)
# Suffixes that number things (二号, 二楼): the digit is 二 even at 100+ (二百零二号).
_NUMBERING = "号|楼|层|路|室|床|线|期|届|班|排|座|栋|幢|单元|门|车厢|站"
_PERIODS = "上午|下午|中午|晚上|早上|早晨|凌晨|傍晚|夜里|半夜"
_PUNCT = "，。；：！？、,.;:!?"


# ------------------------------------------------------------------------ number words


def say_int(number: int, *, liang: bool = False) -> str:
    """An integer as said aloud: 12 → 十二, 105 → 一百零五, 1200 → 一千二百, 10500 → 一万零五百.

    With `liang` (counting: amounts, measure words) a leading 2 before 百/千/万/亿, or a bare 2,
    is 两: 两个, 两百元, 两万; never inside (一千二百, 二十二).
    """
    if number < 0:
        return "负" + say_int(-number, liang=liang)
    if number == 0:
        return "零"
    groups: list[int] = []
    while number:
        number, group = divmod(number, 10_000)
        groups.append(group)
    out = ""
    need_zero = False
    for index in range(len(groups) - 1, -1, -1):
        group = groups[index]
        if group == 0:
            need_zero = bool(out)
            continue
        if out and (need_zero or group < 1000):
            out += "零"
        out += _say_group(group) + _BIG_UNITS[index]
        need_zero = False
    if out.startswith("一十"):
        out = out[1:]  # 十五, 十万; 一百一十 keeps its 一十
    if liang and out.startswith("二") and (len(out) == 1 or out[1] in "百千万亿"):
        out = "两" + out[1:]
    return out


def _say_group(number: int) -> str:
    """0 < number < 10000, with 零 for gaps inside (1001 → 一千零一, 1010 → 一千零一十)."""
    out = ""
    gap = False
    for position in range(3, -1, -1):
        digit = number // 10**position % 10
        if digit == 0:
            gap = bool(out)
            continue
        if gap:
            out += "零"
            gap = False
        out += DIGITS[digit] + _SMALL_UNITS[position]
    return out


def say_digits(digits: str, *, yao: bool = True) -> str:
    """Digit by digit: 138 → 幺三八 (or 一三八 without `yao`); other characters are kept."""
    table = PHONE_DIGITS if yao else DIGITS
    return "".join(table[int(ch)] if ch.isdigit() else ch for ch in digits)


def say_number(text: str, *, liang: bool = False) -> str:
    """A written number (1,200 / 3.50 / 007) as said: decimals digit by digit after 点.

    Leading zeros mean a code, read digit by digit.
    """
    text = text.replace(",", "")
    whole, _, fraction = text.partition(".")
    if (len(whole) > 1 and whole.startswith("0")) or len(whole) > 16:
        spoken = say_digits(whole, yao=False)
    else:
        spoken = say_int(int(whole or "0"), liang=liang)  # 两点五公里
    if fraction:
        spoken += "点" + say_digits(fraction, yao=False)
    return spoken


def say_time(hour: int, minute: int, second: int | None = None, period: str | None = None) -> str:
    """A clock time: (14, 30) → 下午两点半; `period` when the text already names one."""
    if period is None:
        period = _period_of(hour)
    shown = hour - 12 if hour > 12 else hour
    spoken = period + ("两" if shown == 2 else say_int(shown)) + "点"
    if minute == 30 and not second:
        return spoken + "半"
    if minute:
        spoken += ("零" if minute < 10 else "") + say_int(minute) + "分"
    if second:
        spoken += ("" if minute else "零分") + say_int(second) + "秒"
    return spoken


def _period_of(hour: int) -> str:
    if hour < 6:
        return "凌晨"
    if hour < 12:
        return "上午"
    if hour < 13:
        return "中午"
    if hour < 18:
        return "下午"
    return "晚上"


def say_date(day: date, *, year: bool = False, weekday: bool = True) -> str:
    """十一月二十三号星期一; with `year` 二零二六年十一月二十三号星期一."""
    spoken = f"{say_int(day.month)}月{say_int(day.day)}号"
    if year:
        spoken = say_digits(str(day.year), yao=False) + "年" + spoken
    if weekday:
        spoken += "星期" + ("天" if day.weekday() == 6 else WEEKDAYS[day.weekday()])
    return spoken


def _yuan(text: str) -> str:
    """An amount of money: 1200 → 一千二百元, 3.5 → 三元五角, 12.05 → 十二元零五分, 0.5 → 五角."""
    text = text.replace(",", "")
    whole, _, fraction = text.partition(".")
    fraction = fraction.rstrip("0")
    if len(fraction) > 2:
        return say_number(text) + "元"
    yuan = int(whole or "0")
    jiao = int(fraction[0]) if fraction else 0
    fen = int(fraction[1]) if len(fraction) > 1 else 0
    spoken = say_int(yuan, liang=True) + "元" if yuan or not (jiao or fen) else ""
    if jiao:
        spoken += ("两" if jiao == 2 else DIGITS[jiao]) + "角"
    if fen:
        spoken += ("零" if yuan and not jiao else "") + ("两" if fen == 2 else DIGITS[fen]) + "分"
    return spoken


# ------------------------------------------------------------------------------ passes

_FULLWIDTH = str.maketrans(
    {
        **{chr(0xFF10 + i): str(i) for i in range(10)},
        **{chr(0xFF21 + i): chr(0x41 + i) for i in range(26)},
        **{chr(0xFF41 + i): chr(0x61 + i) for i in range(26)},
        "％": "%",
        "＋": "+",
        "－": "-",
        "／": "/",
        "～": "~",
        "＃": "#",
        "＊": "*",
        "\u3000": " ",
        "\u00a0": " ",
        "﹪": "%",
    }
)

_URL_RE = re.compile(
    r"(?:https?://|ftp://|www\.)[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+", re.IGNORECASE
)
_EMAIL_RE = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_EMOJI_RE = re.compile(
    "["
    "\U0001f000-\U0001faff"  # emoji, pictographs, flags, symbols
    "\u2600-\u27bf"  # miscellaneous symbols, dingbats (☎ ✔ ★)
    "\u2b00-\u2bff"  # arrows and stars (⭐)
    "\u2300-\u23ff"  # technical (⌚ ⏰)
    "\ufe0e\ufe0f\u200d\u20e3"  # variation selectors, joiner, keycap
    "\U000e0020-\U000e007f"  # tags
    "]+"
)
_CIRCLED = {chr(0x2460 + i): i + 1 for i in range(20)}  # ① … ⑳


def _keypad(text: str) -> str:
    """Telephone keys: 按*号键 / *键 → 星号键, 按# → 按井号."""
    text = re.sub(r"[*]\s*号?\s*键", "星号键", text)
    text = re.sub(r"#\s*号?\s*键", "井号键", text)
    return re.sub(r"(?<=按)\s*([*#])", lambda m: "星号" if m.group(1) == "*" else "井号", text)


def _strip_markup(text: str) -> str:
    """Markdown, URLs and emoji: what a screen shows but nobody says."""
    text = re.sub(r"^\s*```.*$", "", text, flags=re.MULTILINE)  # code fences
    text = re.sub(r"`([^`]*)`", r"\1", text)
    text = re.sub(r"!\[([^\]]*)\]\([^)]*\)", r"\1", text)  # images: keep the alt text
    text = re.sub(r"\[([^\]]+)\]\([^)]*\)", r"\1", text)  # links: keep the words
    text = re.sub(r"<[^<>\n]+>", "", text)  # html tags
    text = _URL_RE.sub("", text)
    text = _EMAIL_RE.sub("", text)
    text = re.sub(r"^\s{0,3}#{1,6}\s+", "", text, flags=re.MULTILINE)  # headings
    text = re.sub(r"^\s*>\s?", "", text, flags=re.MULTILINE)  # quotes
    text = re.sub(r"^\s*([-*_])(?:\s*\1){2,}\s*$", "", text, flags=re.MULTILINE)  # rules
    text = re.sub(r"^\s*\|?(?:\s*:?-{2,}:?\s*\|)+\s*:?-*:?\s*$", "", text, flags=re.MULTILINE)
    text = re.sub(r"^\s*[-*+•·]\s+", "", text, flags=re.MULTILINE)  # bullets
    text = re.sub(r"\*\*(.+?)\*\*|__(.+?)__", lambda m: m.group(1) or m.group(2), text)
    text = re.sub(r"(?<![A-Za-z0-9*])\*(?![\s*])(.+?)(?<![\s*])\*(?![A-Za-z0-9*])", r"\1", text)
    text = re.sub(r"~~(.+?)~~", r"\1", text)
    text = re.sub(
        r"^[ \t]*\|(.*?)\|?[ \t]*$",
        lambda m: re.sub(r"\s*\|\s*", "，", m.group(1).strip()),
        text,
        flags=re.MULTILINE,
    )
    text = re.sub(r"[\u2190-\u21ff]", "，", text)  # arrows: a pause
    return _EMOJI_RE.sub("", text)


def _normalize(text: str) -> str:
    text = text.translate(_FULLWIDTH)
    text = re.sub(r"(?<=\d)[：:](?=\d{2})", ":", text)
    text = re.sub(r"(?<=\d)．(?=\d)", ".", text)
    return re.sub(r"(?<=\d)\s*[—–]\s*(?=\d)", "-", text)


def _lists(text: str) -> str:
    """1. / 2、 / (3) / ① at the start of a line, and inline "1. … 2. …" → 第一，."""

    def item(match: re.Match[str]) -> str:
        return f"{match.group(1)}第{say_int(int(match.group(2)))}，"

    text = re.sub(
        r"(^[ \t]*)[(（]?(\d{1,2})(?:[.、)）]|\.(?=\s))(?!\d)[ \t]*", item, text, flags=re.MULTILINE
    )
    # inline items: "1.带身份证 2.带医保卡" → 第一，带身份证；第二，带医保卡
    text = re.sub(r"(?<=[\s：:；;，,。])()(\d{1,2})\.(?=\s*[^\d\s])(?!\d)\s*", item, text)
    text = re.sub(r"(?<=[^\s：:；;，,。])[ \t]+(?=第[一二三四五六七八九十]+，)", "；", text)
    for char, number in _CIRCLED.items():
        text = text.replace(char, f"第{say_int(number)}，")
    return text


def _ordinals(text: str) -> str:
    return re.sub(r"第\s*(\d+)", lambda m: "第" + say_int(int(m.group(1))), text)


_ISO_DATE_RE = re.compile(
    r"(?<![\d.])(\d{4})([-/.])(\d{1,2})\2(\d{1,2})(?![\d])"
    r"(?P<time>[T ]\d{1,2}:\d{2}(?::\d{2})?)?"
)
_CN_DATE_RE = re.compile(r"(?<!\d)(\d{4})\s*年\s*(\d{1,2})\s*月\s*(\d{1,2})\s*[日号]")
_MONTH_DAY_RE = re.compile(r"(?<![\d.])(\d{1,2})\s*月\s*(\d{1,2})\s*[日号]")
_WEEKDAY_AFTER_RE = re.compile(r"\s*[(（]?\s*(?:星期|周|礼拜)")


def _dates(text: str, today: date | None) -> str:
    def iso(match: re.Match[str]) -> str:
        try:
            day = date(int(match.group(1)), int(match.group(3)), int(match.group(4)))
        except ValueError:
            return match.group(0)
        year = today is not None and today.year != day.year
        weekday = not _WEEKDAY_AFTER_RE.match(text, match.end())
        spoken = say_date(day, year=year, weekday=weekday)
        if match.group("time"):
            spoken += match.group("time")[1:]  # read by the clock pass
        return spoken

    def written(match: re.Match[str]) -> str:
        try:
            day = date(int(match.group(1)), int(match.group(2)), int(match.group(3)))
        except ValueError:
            return match.group(0)
        return say_date(day, year=True, weekday=False)

    def month_day(match: re.Match[str]) -> str:
        month, day = int(match.group(1)), int(match.group(2))
        if not (1 <= month <= 12 and 1 <= day <= 31):
            return match.group(0)
        return f"{say_int(month)}月{say_int(day)}号"

    text = _ISO_DATE_RE.sub(iso, text)
    text = _CN_DATE_RE.sub(written, text)
    text = _MONTH_DAY_RE.sub(month_day, text)
    text = re.sub(
        r"(?<!\d)((?:19|20)\d{2})\s*年", lambda m: say_digits(m.group(1), yao=False) + "年", text
    )
    text = re.sub(
        r"(?<![\d.])(1[0-2]|[1-9])\s*月(?!\d)", lambda m: say_int(int(m.group(1))) + "月", text
    )

    def weekday(match: re.Match[str]) -> str:
        word, number = match.group(1), int(match.group(2))
        if number == 7:
            return word + ("日" if word == "周" else "天")
        return word + WEEKDAYS[number - 1]

    return re.sub(rf"(星期|礼拜|周)([1-7])(?!\d|{_MEASURES})", weekday, text)


_CLOCK = r"(\d{1,2}):(\d{2})(?::(\d{2}))?"
_CLOCK_RE = re.compile(
    rf"(?P<period>{_PERIODS})?\s*(?<![\d:.]){_CLOCK}(?![\d:])\s*(?P<ampm>[AaPp]\.?[Mm]\.?)?"
    rf"(?:\s*(?:-|~|到|至)\s*(?P<period2>{_PERIODS})?\s*(\d{{1,2}}):(\d{{2}})(?::(\d{{2}}))?"
    r"(?![\d:]))?"
)
_DIAN_RE = re.compile(
    r"(?<![第\d.])(\d{1,2})\s*点(?:\s*(半|整|一刻|三刻)|\s*(\d{1,2})\s*(分(?!钟))?)?"
)


def _clock_text(hour: int, minute: int, second: int | None, period: str | None) -> str | None:
    if not (0 <= hour <= 24 and 0 <= minute < 60 and (second is None or 0 <= second < 60)):
        return None
    if hour == 24:
        hour, period = 12, period or "晚上"
    return say_time(hour, minute, second, period)


def _times(text: str) -> str:
    def clock(match: re.Match[str]) -> str:
        period = match.group("period")
        hour, minute = int(match.group(2)), int(match.group(3))
        second = int(match.group(4)) if match.group(4) else None
        ampm = (match.group("ampm") or "").lower()
        if ampm.startswith("p") and hour < 12:
            hour += 12
        if period in ("下午", "晚上", "傍晚") and hour < 12:
            hour += 12
        if period is None and ampm.startswith("a") and hour == 12:
            hour = 0
        first = _clock_text(hour, minute, second, period)
        if first is None:
            return match.group(0)
        if match.group(7) is None:
            return first
        hour2, minute2 = int(match.group(7)), int(match.group(8))
        second2 = int(match.group(9)) if match.group(9) else None
        period2 = match.group("period2")
        afternoon = period2 in ("下午", "晚上", "傍晚")
        if hour2 < 12 and (afternoon or (period2 is None and hour >= 12 and hour2 < hour)):
            hour2 += 12  # 下午2:00-5:00 ends at 17:00
        second_text = _clock_text(hour2, minute2, second2, period2)
        if second_text is None:
            return match.group(0)
        first_period = period or _period_of(hour)
        if period2 is None and _period_of(hour2) == first_period:
            second_text = second_text[len(first_period) :]
        return f"{first}到{second_text}"

    def dian(match: re.Match[str]) -> str:
        hour = int(match.group(1))
        if hour > 24:
            return match.group(0)
        spoken = ("两" if hour == 2 else say_int(hour)) + "点"
        if match.group(2):
            return spoken + match.group(2)
        if match.group(3):
            minute = int(match.group(3))
            if minute >= 60:
                return match.group(0)
            zero = "零" if match.group(3).startswith("0") and minute else ""
            return spoken + zero + say_int(minute) + ("分" if match.group(4) else "")
        return spoken

    text = _CLOCK_RE.sub(clock, text)
    return _DIAN_RE.sub(dian, text)


_PHONE_CONTEXT_BEFORE = (
    r"(?:电话|热线|拨打|拨|致电|呼叫|号码|手机|手机号|座机|联系方式|来电|分机|专线)"
    r"(?:号码|号)?(?:是|为|：|:)?\s*"
)
_PHONE_CONTEXT_AFTER = r"(?=\s*(?:急救|报警|火警|热线|电话|服务|求助))"


def _groups(digits: str, sizes: tuple[int, ...]) -> str:
    out, start = [], 0
    for size in sizes:
        out.append(say_digits(digits[start : start + size]))
        start += size
    if start < len(digits):
        out.append(say_digits(digits[start:]))
    return "，".join(part for part in out if part)


def _local_groups(digits: str) -> tuple[int, ...]:
    return (4, 4) if len(digits) == 8 else (3, 4)


def _masked_phones(text: str) -> str:
    """138****5678 (how the API masks numbers): each hidden digit is said 星."""

    def masked(match: re.Match[str]) -> str:
        stars = "星" * len(match.group(2))
        return f"{say_digits(match.group(1))}，{stars}，{say_digits(match.group(3))}"

    return re.sub(r"(?<!\d)(1[3-9]\d)(\*{4})(\d{4})(?!\d)", masked, text)


def _phones(text: str) -> str:
    def mobile(match: re.Match[str]) -> str:
        return _groups(match.group(1) + match.group(2) + match.group(3), (3, 4, 4))

    def landline(match: re.Match[str]) -> str:
        area, local = match.group(1), match.group(2) + match.group(3)
        return say_digits(area) + "，" + _groups(local, _local_groups(local))

    def contextual(match: re.Match[str]) -> str:
        digits = re.sub(r"[-\s]", "", match.group(2))
        if len(digits) >= 7:
            spoken = _groups(digits, _local_groups(digits) if len(digits) <= 8 else (3, 4, 4))
        else:
            spoken = say_digits(digits)
        return match.group(1) + spoken

    text = re.sub(
        r"(?<![\d.])(?:\+?86[-\s]?)?(1[3-9]\d)[-\s]?(\d{4})[-\s]?(\d{4})(?![\d.])", mobile, text
    )
    text = re.sub(
        r"(?<![\d.])([48]00)[-\s]?(\d{3})[-\s]?(\d{4})(?!\d)",
        lambda m: "，".join(say_digits(g) for g in m.groups()),
        text,
    )
    local = r"(\d{3,4})[-\s]?(\d{4})(?!\d)"
    text = re.sub(rf"[(（](0\d{{2,3}})[)）]\s*-?\s*{local}", landline, text)
    text = re.sub(rf"(?<![\d.])(0\d{{2,3}})[-\s]{local}", landline, text)
    text = re.sub(rf"(?<![\d.])(0[12]\d|0[3-9]\d{{2}}){local}", landline, text)
    text = re.sub(rf"({_PHONE_CONTEXT_BEFORE})(\d[\d\s-]{{1,14}}\d)(?![\d.])", contextual, text)
    text = re.sub(
        rf"(?<![\d.])(1\d{{2}}|12\d{{3}}|9\d{{4}})(?![\d.]){_PHONE_CONTEXT_AFTER}",
        lambda m: say_digits(m.group(1)),
        text,
    )
    # 赶紧打120: the emergency and service numbers everybody knows
    return re.sub(
        r"(?<=打)(110|119|120|122|12345|12349)(?![\d.])", lambda m: say_digits(m.group(1)), text
    )


def _addresses(text: str) -> str:
    def room(match: re.Match[str]) -> str:
        return match.group(1) + say_digits(match.group(2)) + (match.group(3) or "")

    text = re.sub(r"(\*+)(?=单元|号楼|栋|幢)", "某", text)  # masked: 3号楼*单元***
    text = re.sub(r"(?<=单元|号楼)\*+", "某室", text)
    text = re.sub(r"(单元|门)\s*(\d{2,4})(室|号|户|房)?(?!\d)", room, text)
    # a building without units: 5号楼1201 (not 3号楼100多户)
    text = re.sub(r"(号楼|栋|幢)\s*(\d{3,4})(室|号|房)?(?![\d多个人户米平层])", room, text)
    text = re.sub(r"(?<![\d.])()(\d{3,4})(室|号房|房间)", room, text)
    text = re.sub(
        r"(?<![\d.])(\d{1,4})\s*(号楼|号院|栋|幢|座|单元|层|楼|号线|路|街|巷|弄)",
        lambda m: say_int(int(m.group(1))) + m.group(2),
        text,
    )
    return text


_AMOUNT = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"


def _money(text: str) -> str:
    def wan(match: re.Match[str]) -> str:
        return say_number(match.group(1), liang=True) + match.group(2)

    text = re.sub(rf"[¥￥]\s*({_AMOUNT})\s*(万元|万|亿元|亿)", wan, text)
    text = re.sub(rf"[¥￥]\s*({_AMOUNT})\s*(?:元|块钱|块)?", lambda m: _yuan(m.group(1)), text)
    text = re.sub(rf"(?<![\d.])({_AMOUNT})\s*(万元|万块|亿元)", wan, text)
    text = re.sub(rf"(?<![\d.])({_AMOUNT})\s*(元|块钱)", lambda m: _yuan(m.group(1)), text)
    text = re.sub(
        rf"(?<![\d.])({_AMOUNT})\s*(块)(?!\d)",
        lambda m: say_number(m.group(1), liang=True) + m.group(2),
        text,
    )
    return re.sub(r"/\s*(月|天|日|次|人|年|小时|周|斤|件|个|份|户|间|张)", r"每\1", text)


def _percent_temperature(text: str) -> str:
    def percent(match: re.Match[str]) -> str:
        value = match.group(1).replace(",", "")
        return "百分之百" if value in ("100", "100.0") else "百分之" + say_number(value)

    text = re.sub(
        r"(?<![\d.])(\d+(?:\.\d+)?)\s*%?\s*(?:-|~|到|至)\s*(\d+(?:\.\d+)?)\s*%",
        lambda m: f"百分之{say_number(m.group(1))}到{say_number(m.group(2))}",
        text,
    )
    text = re.sub(rf"(?<![\d.])({_AMOUNT})\s*%", percent, text)

    def temperature(match: re.Match[str]) -> str:
        below = "零下" if match.group(1) else ""
        return below + say_number(match.group(2), liang=True) + "度"  # 零下两度

    return re.sub(r"(?<![\d.])(-|零下)?(\d+(?:\.\d+)?)\s*(?:℃|°C|°|摄氏度)", temperature, text)


_CODE_RE = re.compile(
    r"(尾号|验证码|编号|单号|工单号|订单号|预约号|挂号号|流水号|卡号|账号|身份证号|身份证|密码|"
    r"房号|门牌号|车牌号|号码|取号|排号)(?:是|为|：|:)?\s*([0-9A-Za-z*][0-9A-Za-z*\-]*)"
)


def _codes(text: str) -> str:
    def code(match: re.Match[str]) -> str:
        value = re.sub(r"\*+", lambda m: "星" * len(m.group(0)), match.group(2))
        return match.group(0)[: match.start(2) - match.start(0)] + say_digits(value)

    text = _CODE_RE.sub(code, text)
    return re.sub(r"(?<![\d.,])\d{6,}(?![\d,]|\.\d)", lambda m: say_digits(m.group(0)), text)


_NUMBER_RE = re.compile(
    rf"(?<![\d.])(-)?({_AMOUNT})(?:\s*(-|~|到|至)\s*({_AMOUNT}))?(?![\d])"
    rf"(?:(?P<measure>{_MEASURES})|(?P<numbering>{_NUMBERING}))?"
)
_CN_NUMERAL = "零一二三四五六七八九十百千万亿两幺"


def _numbers(text: str) -> str:
    """Whatever numbers are left: counts get 两 (两个, 两百人), numbering does not (二号)."""

    def number(match: re.Match[str]) -> str:
        first = match.group(2)
        counting = match.group("measure") is not None
        whole = int(first.replace(",", "").partition(".")[0] or "0")
        liang = counting or (match.group("numbering") is None and whole >= 100)
        spoken = say_number(first, liang=liang)
        if match.group(3):
            spoken += "到" + say_number(match.group(4), liang=counting)
        if match.group(1):
            before = text[match.start() - 1] if match.start() else ""
            if before and before in _CN_NUMERAL:
                spoken = "到" + spoken  # the end of a range whose start is already words
            elif not before.isascii() or not before.isalnum():
                spoken = "负" + spoken  # -5, 温度-5; but Wi-5 stays a dash
        return spoken + (match.group("measure") or match.group("numbering") or "")

    return _NUMBER_RE.sub(number, text)


def _symbols(text: str) -> str:
    text = re.sub(r"\*+号", "星号", text)
    text = re.sub(r"\*{2,}", "", text)  # masks no earlier pass claimed
    text = text.replace("*", "星号").replace("#", "井号")
    numeral = f"[{_CN_NUMERAL}]"
    text = re.sub(rf"(?<={numeral})\s*[-~]\s*(?={numeral}|百分之)", "到", text)
    text = re.sub(rf"(?<={numeral})\s*\+\s*(?={numeral})", "加", text)
    text = re.sub(r"(?<=[\u4e00-\u9fff])\s*/\s*(?=[\u4e00-\u9fff])", "、", text)
    text = re.sub(r"(?<=[\u4e00-\u9fff])\s*&\s*(?=[\u4e00-\u9fff])", "和", text)
    text = re.sub(r"[—–]+", "，", text)
    return re.sub(r"[~^\\_=+<>{}\[\]\"'@/&|-]", " ", text)


def _tidy(text: str) -> str:
    lines = [line.strip() for line in text.splitlines()]
    parts: list[str] = []
    for line in lines:
        if not line:
            continue
        if parts and parts[-1][-1] not in _PUNCT + "…）)”』」":
            parts[-1] += "。"
        parts.append(line)
    text = "".join(parts)
    cjk = r"[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]"
    text = re.sub(rf"(?<={cjk})[ \t]+|[ \t]+(?={cjk})", "", text)
    text = re.sub(r"[ \t]{2,}", " ", text)
    text = re.sub(r"[，、]+(?=[。！？；])", "", text)
    text = re.sub(r"([，。；！？、])\1+", r"\1", text)
    text = re.sub(r"[（(]\s*[)）]", "", text)
    text = re.sub(r"^[，。；、：\s]+", "", text)
    return text.strip()


def to_spoken(text: str, *, today: date | None = None) -> str:
    """`text` written for a screen, rewritten as it should be said (see the module docstring).

    `today` only decides whether an ISO date's year is said (when it is not this year).
    """
    text = _normalize(text)
    text = _masked_phones(text)  # before markdown takes 138****5678 for emphasis
    text = _keypad(text)  # and 按*键 … 按*号键
    text = _strip_markup(text)
    text = _lists(text)
    text = _ordinals(text)
    text = _dates(text, today)
    text = _times(text)
    text = _phones(text)
    text = _addresses(text)
    text = _money(text)
    text = _percent_temperature(text)
    text = _codes(text)
    text = _numbers(text)
    text = _symbols(text)
    return _tidy(text)

"""Chinese numerals to digits, for addresses, phone numbers and clock times.

Residents speak numbers two ways and ASR writes them back either in digits or in characters:

* positional numbers with units: 十二 → 12, 二十三 → 23, 一百零五 → 105, and the colloquial
  一百二 → 120 / 三千五 → 3500 (a trailing digit after 百/千/万 means the next lower unit);
* digit strings read one digit at a time: 五零二 → 502, 幺三八 → 138 (幺 = 1 and 洞 = 0 are the
  radio/telephone readings, 两 = 2). Leading zeros are kept (零二 → "02").

Conventions for addresses (`normalize_address`) produce `{building}号楼{unit}单元{room}`:

* building: N号楼 / N栋 / N幢 / N座 / N号院N号楼 (last one wins) / N号 followed by a unit;
* unit: N单元 / N门 / N号门 / N门洞 (northern 门 = 单元);
* room: N室 / N号 / N户 / bare N after the unit, or floor + door: 五楼零二 / 5楼2号 / 12层3号
  → floor × 100 + door (502, 1203), the way Chinese room numbers are built;
* dashed forms 3-2-502 / 3杠2杠502 (spoken 杠 = dash) are building-unit-room; after an explicit
  building, N-N is unit-room.

Pieces that were not said are left out (3号楼502, 2单元502, 502).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DIGIT_CHARS: dict[str, int] = {
    "零": 0,
    "〇": 0,
    "洞": 0,
    "一": 1,
    "幺": 1,
    "壹": 1,
    "二": 2,
    "两": 2,
    "俩": 2,
    "贰": 2,
    "三": 3,
    "叁": 3,
    "四": 4,
    "肆": 4,
    "五": 5,
    "伍": 5,
    "六": 6,
    "陆": 6,
    "七": 7,
    "柒": 7,
    "八": 8,
    "捌": 8,
    "九": 9,
    "玖": 9,
}
UNIT_CHARS: dict[str, int] = {"十": 10, "拾": 10, "百": 100, "佰": 100, "千": 1000, "仟": 1000}
WAN = {"万": 10_000, "萬": 10_000}

# A run of numeral characters (digits, Chinese digits and units).
NUMERAL_CLASS = "0-9零〇洞一幺壹二两贰三叁四肆五伍六陆七柒八捌九玖十拾百佰千仟万萬"
NUMERAL_RE = re.compile(f"[{NUMERAL_CLASS}]+")
# Digits as read in phone numbers: no units, no 俩 (never said inside a number).
PHONE_DIGITS = "0-9零〇洞一幺二两三四五六七八九"


def to_halfwidth(text: str) -> str:
    """Full-width ASCII (０-９, ：, －) to half-width, keeping the length so spans stay valid."""
    out = []
    for ch in text:
        code = ord(ch)
        if 0xFF01 <= code <= 0xFF5E:
            out.append(chr(code - 0xFEE0))
        elif code == 0x3000:
            out.append(" ")
        else:
            out.append(ch)
    return "".join(out)


def cn_to_int(text: str) -> int | None:
    """Value of a numeral run; None when it is not a number.

    Without unit characters the run is a digit string (五零二 → 502); with units it is read
    positionally (一百零五 → 105, 十二 → 12, 一百二 → 120).
    """
    text = to_halfwidth(text.strip())
    if not text:
        return None
    if text.isdigit():
        return int(text)
    if not all(ch in DIGIT_CHARS or ch in UNIT_CHARS or ch in WAN or ch.isdigit() for ch in text):
        return None
    if not any(ch in UNIT_CHARS or ch in WAN for ch in text):
        return int("".join(str(DIGIT_CHARS.get(ch, ch)) for ch in text))
    total = 0
    section = 0
    number: int | None = None
    last_unit = 0
    after_zero = False
    for ch in text:
        if ch in DIGIT_CHARS or ch.isdigit():
            digit = DIGIT_CHARS[ch] if ch in DIGIT_CHARS else int(ch)
            if digit == 0:
                after_zero = True
            if number is not None and number != 0:
                # Two digits in a row inside a positional number (二三十) is not a number.
                return None
            number = digit
        elif ch in UNIT_CHARS:
            unit = UNIT_CHARS[ch]
            section += (number or 1) * unit
            number = None
            last_unit = unit
            after_zero = False
        else:  # 万
            section += number or 0
            total += (section or 1) * WAN[ch]
            section = 0
            number = None
            last_unit = WAN[ch]
            after_zero = False
    if number is not None:
        if last_unit >= 100 and not after_zero:
            # 一百二 = 120, 三千五 = 3500, 两万三 = 23000
            number *= last_unit // 10
        section += number
    return total + section


def digit_string(text: str) -> str | None:
    """A numeral run as a digit string, keeping leading zeros for digit-by-digit readings."""
    text = to_halfwidth(text)
    if text and all(ch in DIGIT_CHARS or ch.isdigit() for ch in text):
        return "".join(str(DIGIT_CHARS.get(ch, ch)) for ch in text)
    value = cn_to_int(text)
    return None if value is None else str(value)


def replace_numerals(text: str) -> str:
    """Every numeral run in `text` written with digits (三号楼二单元 → 3号楼2单元).

    Lengths change, so use this for display, not for entity spans.
    """

    def repl(match: re.Match[str]) -> str:
        value = digit_string(match.group(0))
        return match.group(0) if value is None else value

    return NUMERAL_RE.sub(repl, to_halfwidth(text))


# ---------------------------------------------------------------------------- addresses

_N = f"[{NUMERAL_CLASS}]+"
_SEP = r"[\s,，、的]*"
_BUILDING_RE = re.compile(
    rf"(?P<b>{_N})\s*(?:号楼|号樓|栋楼|栋|棟|幢|号座|座|楼(?={_SEP}{_N}\s*(?:单元|门|号门)))"
    rf"|(?P<b2>{_N})\s*号(?={_SEP}{_N}\s*(?:单元|门洞|号门|门))"
)
_UNIT_RE = re.compile(rf"(?P<u>{_N})\s*(?:单元|门洞|号门|门)(?!口|卫|铃|禁)")
_FLOOR_ROOM_RE = re.compile(rf"(?P<f>{_N})\s*(?:楼|层)\s*(?P<r>{_N})\s*(?:号|室|户)?")
_ROOM_RE = re.compile(rf"(?P<r>{_N})\s*(?:号房|室|号|户)?")
_DASHED_RE = re.compile(
    rf"(?P<b>{_N})\s*(?:-|－|—|杠)\s*(?P<u>{_N})\s*(?:-|－|—|杠)\s*(?P<r>{_N})(?:\s*(?:室|号))?"
)
_UNIT_ROOM_DASH_RE = re.compile(rf"(?P<u>{_N})\s*(?:-|－|—|杠)\s*(?P<r>{_N})(?:\s*(?:室|号))?")


@dataclass(frozen=True)
class Address:
    """Building, unit and room as digit strings; any may be missing."""

    building: str | None
    unit: str | None
    room: str | None
    start: int
    end: int

    def __str__(self) -> str:
        parts = []
        if self.building:
            parts.append(f"{self.building}号楼")
        if self.unit:
            parts.append(f"{self.unit}单元")
        if self.room:
            parts.append(self.room)
        return "".join(parts)


def _room_from_floor(floor: str, door: str) -> str | None:
    floor_n = cn_to_int(floor)
    door_s = digit_string(door)
    if floor_n is None or door_s is None or not 0 < floor_n < 100:
        return None
    door_n = int(door_s)
    if not 0 < door_n < 100:
        return None
    return str(floor_n * 100 + door_n)


def _plausible(number: str | None, limit: int) -> bool:
    return number is not None and 0 < int(number) < limit


def _skip_sep(text: str, pos: int) -> int:
    match = re.compile(_SEP).match(text, pos)
    return match.end() if match else pos


def _parse_address_at(text: str, pos: int) -> Address | None:
    """Parse one address starting exactly at `pos` (a numeral)."""
    dashed = _DASHED_RE.match(text, pos)
    if dashed:
        b, u, r = (digit_string(dashed.group(k)) for k in ("b", "u", "r"))
        if _plausible(b, 1000) and _plausible(u, 100) and _plausible(r, 100_000):
            return Address(b, u, r, pos, dashed.end())
    building = unit = room = None
    end = pos
    cursor = pos
    match = _BUILDING_RE.match(text, cursor)
    if match:
        building = digit_string(match.group("b") or match.group("b2"))
        if not _plausible(building, 1000):
            return None
        end = match.end()
        cursor = _skip_sep(text, end)
        dash = _UNIT_ROOM_DASH_RE.match(text, cursor)
        if dash:
            u, r = digit_string(dash.group("u")), digit_string(dash.group("r"))
            if _plausible(u, 100) and _plausible(r, 100_000):
                return Address(building, u, r, pos, dash.end())
    match = _UNIT_RE.match(text, cursor)
    if match:
        unit = digit_string(match.group("u"))
        if not _plausible(unit, 100):
            unit = None
        else:
            end = match.end()
            cursor = _skip_sep(text, end)
    if building is None and unit is None:
        return None
    floor_room = _FLOOR_ROOM_RE.match(text, cursor)
    if floor_room:
        room = _room_from_floor(floor_room.group("f"), floor_room.group("r"))
        if room:
            end = floor_room.end()
    if room is None:
        room_match = _ROOM_RE.match(text, cursor)
        if room_match:
            candidate = digit_string(room_match.group("r"))
            if _plausible(candidate, 100_000):
                room = candidate
                end = room_match.end()
    return Address(building, unit, room, pos, end)


def find_addresses(text: str) -> list[Address]:
    """Every building/unit/room mention in `text`, with character spans into `text`."""
    text = to_halfwidth(text)
    found: list[Address] = []
    pos = 0
    for match in NUMERAL_RE.finditer(text):
        if match.start() < pos:
            continue
        address = _parse_address_at(text, match.start())
        if address is not None:
            found.append(address)
            pos = address.end
    return found


def normalize_address(text: str) -> str | None:
    """`{building}号楼{unit}单元{room}` from a spoken address, or None when there is none.

    When no building or unit is named the text may still be a bare room (五零二, 502室,
    五楼零二).
    """
    text = to_halfwidth(text).strip()
    addresses = find_addresses(text)
    if addresses:
        return str(addresses[0])
    floor_room = _FLOOR_ROOM_RE.fullmatch(text)
    if floor_room:
        return _room_from_floor(floor_room.group("f"), floor_room.group("r"))
    room = _ROOM_RE.fullmatch(text)
    if room:
        candidate = digit_string(room.group("r"))
        if _plausible(candidate, 100_000):
            return candidate
    return None


# ------------------------------------------------------------------------------- phones

_PHONE_SEP = r"(?:[\s\-—－.,，、]|杠|嗯|呃)"
_PHONE_RUN_RE = re.compile(rf"[{PHONE_DIGITS}](?:{_PHONE_SEP}*[{PHONE_DIGITS}])*")
_MOBILE_RE = re.compile(r"1[3-9]\d{9}")
_LANDLINE_RE = re.compile(r"0\d{9,11}")
_LOCAL_RE = re.compile(r"[2-9]\d{6,7}")


@dataclass(frozen=True)
class Phone:
    """A phone number: mobile as 11 digits, landline as `area-number`."""

    value: str
    start: int
    end: int


def _format_phone(digits: str, allow_local: bool) -> str | None:
    if digits.startswith("86") and len(digits) == 13 and _MOBILE_RE.fullmatch(digits[2:]):
        digits = digits[2:]
    if _MOBILE_RE.fullmatch(digits):
        return digits
    if _LANDLINE_RE.fullmatch(digits):
        area = 3 if digits[1] in "12" else 4
        rest = digits[area:]
        if 7 <= len(rest) <= 8:
            return f"{digits[:area]}-{rest}"
        return None
    if allow_local and _LOCAL_RE.fullmatch(digits):
        return digits
    return None


def find_phones(text: str, allow_local: bool = False) -> list[Phone]:
    """Phone numbers in `text` (digits, Chinese digits, 幺/洞, with pauses between groups).

    Mobile numbers and landlines with an area code are found anywhere; a 7-8 digit local
    number only with `allow_local` (when the caller already knows the text is a phone).
    """
    text = to_halfwidth(text)
    found: list[Phone] = []
    for run in _PHONE_RUN_RE.finditer(text):
        positions = [run.start() + i for i, ch in enumerate(run.group(0)) if _is_digit(ch)]
        digits = "".join(str(DIGIT_CHARS.get(text[i], text[i])) for i in positions)
        value = _format_phone(digits, allow_local)
        if value is not None:
            found.append(Phone(value, positions[0], positions[-1] + 1))
            continue
        # A Chinese digit glued to the number from a neighbouring word (打一幺三八…): try the
        # 11-digit windows at either end, dropping only Chinese-character digits.
        if len(digits) in (12, 13):
            for lo in (len(digits) - 11, 0):
                window = range(lo, lo + 11)
                dropped = [positions[i] for i in range(len(digits)) if i not in window]
                if all(not text[p].isdigit() for p in dropped) and _MOBILE_RE.fullmatch(
                    digits[lo : lo + 11]
                ):
                    found.append(Phone(digits[lo : lo + 11], positions[lo], positions[lo + 10] + 1))
                    break
    return found


def _is_digit(ch: str) -> bool:
    return ch.isdigit() or ch in DIGIT_CHARS


def extract_phone(text: str, allow_local: bool = False) -> str | None:
    """The first phone number in `text`: 11-digit mobile, or landline `0xx-xxxxxxxx`."""
    phones = find_phones(text, allow_local=allow_local)
    return phones[0].value if phones else None

"""Chinese numerals, addresses and phone numbers (nlu/numerals.py)."""

from __future__ import annotations

import pytest

from nlu.numerals import (
    cn_to_int,
    digit_string,
    extract_phone,
    find_addresses,
    find_phones,
    normalize_address,
    replace_numerals,
)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("二十三", 23),
        ("一百零五", 105),
        ("十二", 12),
        ("十", 10),
        ("两", 2),
        ("幺", 1),
        ("洞", 0),
        ("一百二", 120),
        ("三千五", 3500),
        ("两万三", 23000),
        ("一千零十", 1010),
        ("五零二", 502),
        ("２３", 23),
        ("42", 42),
    ],
)
def test_cn_to_int(text: str, value: int) -> None:
    assert cn_to_int(text) == value


@pytest.mark.parametrize("text", ["", "二三十", "楼", "十楼"])
def test_cn_to_int_rejects_non_numbers(text: str) -> None:
    assert cn_to_int(text) is None


def test_digit_strings_keep_leading_zeros() -> None:
    assert digit_string("零二") == "02"
    assert digit_string("洞洞七") == "007"
    assert digit_string("二十") == "20"


def test_replace_numerals() -> None:
    assert replace_numerals("三号楼二单元五零二") == "3号楼2单元502"
    assert replace_numerals("十二号楼") == "12号楼"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("三号楼二单元五零二", "3号楼2单元502"),
        ("十二号楼", "12号楼"),
        ("3栋2门502", "3号楼2单元502"),
        ("3-2-502", "3号楼2单元502"),
        ("三杠二杠五零二", "3号楼2单元502"),
        ("三号楼二单元五楼零二", "3号楼2单元502"),
        ("十二号楼三单元一零一室", "12号楼3单元101"),
        ("3号楼2-502", "3号楼2单元502"),
        ("我住三号楼，二单元，五零二", "3号楼2单元502"),
        ("幸福小区十五栋一单元十二层三号", "15号楼1单元1203"),
        ("二十三号楼四门二零一", "23号楼4单元201"),
        ("３号楼２单元５０２", "3号楼2单元502"),
        ("2单元502", "2单元502"),
        ("五零二", "502"),
        ("502室", "502"),
        ("五楼零二", "502"),
        ("今天三号去", None),
        ("你好", None),
    ],
)
def test_normalize_address(text: str, expected: str | None) -> None:
    assert normalize_address(text) == expected


def test_find_addresses_spans_point_into_the_text() -> None:
    text = "我住在幸福小区十二号楼三单元一零一室，麻烦快点"
    (address,) = find_addresses(text)
    assert text[address.start : address.end] == "十二号楼三单元一零一室"
    assert (address.building, address.unit, address.room) == ("12", "3", "101")


@pytest.mark.parametrize(
    "text", ["住在三号去看看", "我三号来", "一号线地铁", "单元门坏了", "二单元门口"]
)
def test_no_address_in_ordinary_speech(text: str) -> None:
    found = [a for a in find_addresses(text) if a.building or a.room]
    assert not found, found


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("幺三八一二三四五六七八", "13812345678"),
        ("一三八 一二三四 五六七八", "13812345678"),
        ("一三八，一二三四，五六七八", "13812345678"),
        ("幺三八、嗯、一二三四五六七八", "13812345678"),
        ("我电话是13812345678", "13812345678"),
        ("打一幺三八一二三四五六七八", "13812345678"),
        ("+86 138 1234 5678", "13812345678"),
        ("010-87654321", "010-87654321"),
        ("零二一 六二三四 五六七八", "021-62345678"),
        ("零五七一八八八八六六六六", "0571-88886666"),
        ("我住三号楼", None),
        ("一二三", None),
        ("身份证号110101195001011234", None),
    ],
)
def test_extract_phone(text: str, expected: str | None) -> None:
    assert extract_phone(text) == expected


def test_local_landline_only_when_asked() -> None:
    assert extract_phone("八八六六五五四四") is None
    assert extract_phone("八八六六五五四四", allow_local=True) == "88665544"


def test_phone_span() -> None:
    text = "电话幺三八一二三四五六七八谢谢"
    (phone,) = find_phones(text)
    assert text[phone.start : phone.end] == "幺三八一二三四五六七八"

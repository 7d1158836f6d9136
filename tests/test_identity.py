"""inventory.privacy.identity: canonical forms, the GB 11643 checks, masks and the PII scanner."""

from __future__ import annotations

import pickle
import unicodedata
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inventory.privacy.identity import (
    ERROR_CODES,
    Gender,
    IdentityError,
    ResidentId,
    birth_date_of,
    canonical_mobile,
    canonical_name,
    canonical_resident_id,
    check_patient_consistency,
    find_pii,
    gender_of,
    make_resident_id,
    mask_mobile,
    mask_name,
    mask_resident_id,
    parse_resident_id,
    resident_id_check_char,
)

# A fixed "today" keeps the birth-date plausibility checks independent of the clock.
TODAY = date(2026, 3, 1)
STANDARD_EXAMPLE = "11010519491231002X"  # the example number in GB 11643-1999

# Shared CPUs: timing is not what these properties are about.
relaxed = settings(deadline=None)

FULLWIDTH = {str(i): chr(0xFF10 + i) for i in range(10)}
ASCII_DIGITS = "0123456789"
GENDERS: list[Gender] = ["male", "female"]


def _is_any_digit(ch: str) -> bool:
    return unicodedata.decimal(ch, None) is not None or ch.isnumeric()


# Digits of other scripts: Arabic-Indic, Devanagari, Thai, mathematical bold, ... but not the
# full-width forms, which are folded on purpose.
foreign_digits = st.characters(categories=["Nd"]).filter(
    lambda c: not c.isascii() and not 0xFF10 <= ord(c) <= 0xFF19
)
# Separators that cannot extend a run of digits in any script.
non_digit_chars = st.characters(codec="utf-8").filter(lambda c: not _is_any_digit(c))
non_digit_text = st.text(alphabet=non_digit_chars, max_size=40)


@st.composite
def valid_ids(draw: st.DrawFn) -> str:
    """Valid numbers: any 6-digit region, a plausible birth date, either gender."""
    born = draw(st.dates(min_value=date(TODAY.year - 149, 1, 1), max_value=TODAY))
    region = draw(st.text(alphabet=ASCII_DIGITS, min_size=6, max_size=6))
    gender = draw(st.sampled_from(GENDERS))
    seq = draw(st.integers(0, 499))
    return make_resident_id(born, gender, region=region, seq=seq)


def _code(excinfo: pytest.ExceptionInfo[IdentityError]) -> str:
    return excinfo.value.code


# --- resident ID numbers: properties ------------------------------------------------------


@relaxed
@given(valid_ids())
def test_generated_ids_are_canonical(resident_id: str) -> None:
    """Every number make_resident_id produces canonicalises to itself."""
    assert canonical_resident_id(resident_id, today=TODAY) == resident_id


@relaxed
@given(valid_ids(), st.data())
def test_fullwidth_and_lowercase_forms_fold_to_ascii(resident_id: str, data: st.DataObject) -> None:
    """Full-width digits, x/ｘ/Ｘ and surrounding whitespace give the same ASCII number."""
    chars = []
    for ch in resident_id:
        if ch == "X":
            chars.append(data.draw(st.sampled_from(["X", "x", "\uff38", "\uff58"])))
        else:
            chars.append(data.draw(st.sampled_from([ch, FULLWIDTH[ch]])))
    pad = data.draw(st.sampled_from(["", " ", "\t", "\u3000", " \n"]))
    assert canonical_resident_id(pad + "".join(chars) + pad, today=TODAY) == resident_id


@relaxed
@given(non_digit_text, foreign_digits, st.text(max_size=40))
def test_any_foreign_digit_is_refused_with_its_own_code(
    before: str, digit: str, after: str
) -> None:
    """Any text containing a non-ASCII, non-full-width digit is refused as such, not folded."""
    with pytest.raises(IdentityError) as excinfo:
        canonical_resident_id(before + digit + after, today=TODAY)
    assert _code(excinfo) == "resident_id_non_ascii_digit"


@relaxed
@given(valid_ids(), st.integers(0, 17), foreign_digits)
def test_foreign_digit_in_a_valid_number_is_the_bypass_and_refused(
    resident_id: str, position: int, digit: str
) -> None:
    """A valid number with one digit rewritten in another script (§0.9 bypass) is refused."""
    forged = resident_id[:position] + digit + resident_id[position + 1 :]
    with pytest.raises(IdentityError) as excinfo:
        canonical_resident_id(forged, today=TODAY)
    assert _code(excinfo) == "resident_id_non_ascii_digit"


@relaxed
@given(valid_ids(), st.integers(0, 17), st.data())
def test_one_changed_character_breaks_the_check_character(
    resident_id: str, position: int, data: st.DataObject
) -> None:
    """Changing any one digit (or the check character) is caught by MOD 11-2."""
    alphabet = ASCII_DIGITS + ("X" if position == 17 else "")
    replacement = data.draw(st.sampled_from([c for c in alphabet if c != resident_id[position]]))
    mistyped = resident_id[:position] + replacement + resident_id[position + 1 :]
    with pytest.raises(IdentityError) as excinfo:
        canonical_resident_id(mistyped, today=TODAY)
    assert _code(excinfo) == "resident_id_checksum"


@relaxed
@given(st.text(max_size=20), st.text(alphabet=ASCII_DIGITS, min_size=6), st.text(max_size=20))
def test_refusals_never_echo_the_input(before: str, digits: str, after: str) -> None:
    """Error messages name the field and the rule, never the value (they reach logs)."""
    # The messages hold no run of 6 digits, so finding one would mean the input leaked.
    raw = before + digits + after
    refusals: list[IdentityError] = []
    parsers: list[Callable[[str], str]] = [
        lambda value: canonical_resident_id(value, today=TODAY),
        canonical_mobile,
        canonical_name,
    ]
    for parse in parsers:
        try:
            parse(raw)
        except IdentityError as exc:
            refusals.append(exc)
    assert refusals  # a name never contains digits
    for refusal in refusals:
        assert refusal.code in ERROR_CODES
        assert digits not in str(refusal)
        assert digits not in repr(refusal)


# --- resident ID numbers: examples ----------------------------------------------------------


def test_standard_example_is_valid() -> None:
    """The GB 11643-1999 example 11010519491231002X is valid: born 1949-12-31, female."""
    assert canonical_resident_id(STANDARD_EXAMPLE, today=TODAY) == STANDARD_EXAMPLE
    assert resident_id_check_char(STANDARD_EXAMPLE[:17]) == "X"
    assert birth_date_of(STANDARD_EXAMPLE) == date(1949, 12, 31)
    assert gender_of(STANDARD_EXAMPLE) == "female"


def test_gender_is_the_parity_of_the_17th_digit() -> None:
    """Odd 17th digit is male, even is female."""
    male = make_resident_id(date(1990, 1, 1), "male", seq=7)
    female = make_resident_id(date(1990, 1, 1), "female", seq=7)
    assert int(male[16]) % 2 == 1
    assert gender_of(male) == "male"
    assert int(female[16]) % 2 == 0
    assert gender_of(female) == "female"


def test_parse_resident_id_reports_what_the_number_encodes_and_masks_its_repr() -> None:
    """parse_resident_id gives region, birth date and gender; repr/str never show the number."""
    parsed = parse_resident_id(" " + STANDARD_EXAMPLE.lower() + " ", today=TODAY)
    assert parsed == ResidentId(STANDARD_EXAMPLE, "110105", date(1949, 12, 31), "female")
    assert STANDARD_EXAMPLE not in repr(parsed)
    assert STANDARD_EXAMPLE not in str(parsed)
    assert find_pii(repr(parsed)) == []


def test_legacy_15_digit_numbers_are_refused_with_their_own_code() -> None:
    """A 15-digit first-generation number gets resident_id_legacy_15, also in full width."""
    for raw in ("110105491231002", "".join(FULLWIDTH[c] for c in "110105491231002")):
        with pytest.raises(IdentityError) as excinfo:
            canonical_resident_id(raw, today=TODAY)
        assert _code(excinfo) == "resident_id_legacy_15"
        assert excinfo.value.field == "resident_id"


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "11010519491231002",  # 17
        "11010519491231002X1",  # 19
        "110105 19491231002X",  # inner space
        "110105-19491231-002X",
        "1101051949123100X2",  # X not last
        "11010519491231002Y",
        "11010519491231002\u200bX",  # zero-width space
        "abcdefghijklmnopqr",
    ],
)
def test_malformed_numbers_are_refused_as_format(raw: str) -> None:
    """Wrong length, inner separators, misplaced X and letters give resident_id_format."""
    with pytest.raises(IdentityError) as excinfo:
        canonical_resident_id(raw, today=TODAY)
    assert _code(excinfo) == "resident_id_format"


@pytest.mark.parametrize(
    "raw",
    ["\u0661" * 18, "\u0967" * 17 + "X", "11010519491231002\u0662", "一一〇一〇五19491231002X"],
)
def test_known_foreign_digit_forms_are_refused(raw: str) -> None:
    """Arabic-Indic, Devanagari and CJK numerals are refused, never converted."""
    with pytest.raises(IdentityError) as excinfo:
        canonical_resident_id(raw, today=TODAY)
    assert _code(excinfo) == "resident_id_non_ascii_digit"


def _with_birth(digits8: str, order: str = "002") -> str:
    body = "110105" + digits8 + order
    return body + resident_id_check_char(body)


@pytest.mark.parametrize("digits8", ["19490230", "19491301", "19490000", "20230229", "00000000"])
def test_impossible_birth_dates_are_refused(digits8: str) -> None:
    """A correct check character does not make 30 February (or month 13) a date."""
    with pytest.raises(IdentityError) as excinfo:
        canonical_resident_id(_with_birth(digits8), today=TODAY)
    assert _code(excinfo) == "resident_id_birth_date"


def test_birth_date_must_not_be_in_the_future() -> None:
    """Born today is accepted; born tomorrow is refused."""
    assert canonical_resident_id(_with_birth(f"{TODAY:%Y%m%d}"), today=TODAY)
    tomorrow = TODAY + timedelta(days=1)
    with pytest.raises(IdentityError) as excinfo:
        canonical_resident_id(_with_birth(f"{tomorrow:%Y%m%d}"), today=TODAY)
    assert _code(excinfo) == "resident_id_birth_date"


def test_age_is_at_most_150_years() -> None:
    """Aged 150 (up to the eve of the 151st birthday) is accepted; 151 is refused."""
    too_old = TODAY.replace(year=TODAY.year - 151)
    oldest = too_old + timedelta(days=1)
    assert canonical_resident_id(_with_birth(f"{oldest:%Y%m%d}"), today=TODAY)
    with pytest.raises(IdentityError) as excinfo:
        canonical_resident_id(_with_birth(f"{too_old:%Y%m%d}"), today=TODAY)
    assert _code(excinfo) == "resident_id_birth_date"


def test_unknown_region_codes_and_permit_prefixes_pass() -> None:
    """Region codes are format-checked only: 000000, 810000 (HK permit) and 9xxxxx pass."""
    for region in ("000000", "810000", "830000", "999999"):
        resident_id = make_resident_id(date(2000, 5, 17), "male", region=region)
        assert canonical_resident_id(resident_id, today=TODAY) == resident_id


def test_non_string_input_is_a_format_error() -> None:
    """A JSON number or null where a string belongs is refused, not crashed on."""
    with pytest.raises(IdentityError) as excinfo:
        canonical_resident_id(110105194912310021, today=TODAY)  # type: ignore[arg-type]
    assert _code(excinfo) == "resident_id_format"


def test_field_name_is_the_callers() -> None:
    """The caller's field name is carried on the error, for the problem document."""
    with pytest.raises(IdentityError) as excinfo:
        canonical_resident_id("nope", today=TODAY, field="patient.id_number")
    assert excinfo.value.field == "patient.id_number"
    assert str(excinfo.value).startswith("patient.id_number ")


def test_identity_error_is_a_value_error_and_pickles() -> None:
    """IdentityError is a ValueError with code/field/message that survives pickling."""
    err = IdentityError("phone_format", "mobile", "mobile must be ...")
    assert isinstance(err, ValueError)
    assert err.http_status == 422
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.code, copy.field, copy.message) == ("phone_format", "mobile", "mobile must be ...")


def test_clock_default_is_china_calendar_day() -> None:
    """Without today=, a number born on China's current date is accepted."""
    china_today = datetime.now(timezone(timedelta(hours=8))).date()
    assert canonical_resident_id(_with_birth(f"{china_today:%Y%m%d}"))


def test_make_resident_id_refuses_bad_arguments() -> None:
    """make_resident_id refuses a bad region, gender, sequence or year."""
    with pytest.raises(ValueError, match="region"):
        make_resident_id(date(2000, 1, 1), "male", region="11010")
    with pytest.raises(ValueError, match="region"):
        make_resident_id(date(2000, 1, 1), "male", region="١١٠١٠٥")
    with pytest.raises(ValueError, match="gender"):
        make_resident_id(date(2000, 1, 1), "other")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="seq"):
        make_resident_id(date(2000, 1, 1), "male", seq=500)
    with pytest.raises(ValueError, match="year"):
        make_resident_id(date(999, 1, 1), "male")


# --- patient consistency --------------------------------------------------------------------


def test_declared_birth_date_and_gender_must_match_the_number() -> None:
    """Matching data passes; a different birth date or gender gets its own code and field."""
    check_patient_consistency(STANDARD_EXAMPLE, date(1949, 12, 31), "female")
    check_patient_consistency(STANDARD_EXAMPLE, datetime(1949, 12, 31, 8, 0), "female")
    with pytest.raises(IdentityError) as excinfo:
        check_patient_consistency(STANDARD_EXAMPLE, date(1949, 12, 30), "female")
    assert (excinfo.value.code, excinfo.value.field) == ("birth_date_mismatch", "birth_date")
    with pytest.raises(IdentityError) as excinfo:
        check_patient_consistency(STANDARD_EXAMPLE, date(1949, 12, 31), "male")
    assert (excinfo.value.code, excinfo.value.field) == ("gender_mismatch", "gender")
    with pytest.raises(IdentityError) as excinfo:
        check_patient_consistency(STANDARD_EXAMPLE, date(1949, 12, 31), "F")
    assert (excinfo.value.code, excinfo.value.field) == ("gender_format", "gender")


def test_consistency_check_refuses_a_non_canonical_number() -> None:
    """check_patient_consistency validates the number it is given."""
    with pytest.raises(IdentityError) as excinfo:
        check_patient_consistency("11010519491231002Y", date(1949, 12, 31), "female")
    assert _code(excinfo) == "resident_id_format"


# --- mobile numbers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        "13812345678",
        " 13812345678 ",
        "138 1234 5678",
        "138-1234-5678",
        "+86 138 1234 5678",
        "+8613812345678",
        "008613812345678",
        "8613812345678",
        "".join(FULLWIDTH[c] for c in "13812345678"),
        "\uff0b86\u3000138\uff0d1234\uff0d5678",
    ],
)
def test_mobile_shapes_people_type_are_accepted(raw: str) -> None:
    """Spaces, hyphens, +86/0086/86 and full-width forms all give the 11 ASCII digits."""
    assert canonical_mobile(raw) == "13812345678"


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "1381234567",  # 10 digits
        "138123456789",  # 12 digits
        "12812345678",  # 12x is not a mobile prefix
        "03812345678",
        "+1 13812345678",
        "+85213812345678",
        "1381234567O",  # letter O
        "\u0661\u0663\u0668\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668",
        "138\u096712345678",
        "138.1234.5678",
    ],
)
def test_non_mobiles_are_refused(raw: str) -> None:
    """Wrong length or prefix, foreign country codes and other scripts' digits: phone_format."""
    with pytest.raises(IdentityError) as excinfo:
        canonical_mobile(raw)
    assert _code(excinfo) == "phone_format"
    assert excinfo.value.field == "mobile"


@relaxed
@given(st.sampled_from("3456789"), st.text(alphabet=ASCII_DIGITS, min_size=9, max_size=9))
def test_every_mainland_mobile_is_canonical(second: str, rest: str) -> None:
    """Every 1[3-9]+9 digits string canonicalises to itself."""
    mobile = "1" + second + rest
    assert canonical_mobile(mobile) == mobile


@relaxed
@given(non_digit_text, foreign_digits, st.text(max_size=20))
def test_foreign_digits_in_a_mobile_are_refused(before: str, digit: str, after: str) -> None:
    """Any text with another script's digit is refused as a mobile."""
    with pytest.raises(IdentityError) as excinfo:
        canonical_mobile(before + digit + after)
    assert _code(excinfo) == "phone_format"


# --- names ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("张三", "张三"),
        ("  欧阳娜娜 ", "欧阳娜娜"),
        ("阿依古丽·买买提", "阿依古丽·买买提"),
        ("阿依古丽・买买提", "阿依古丽·买买提"),  # katakana middle dot folded
        ("阿依古丽•买买提", "阿依古丽·买买提"),  # bullet folded
        ("John Smith", "John Smith"),
        ("John   Smith", "John Smith"),
        ("Jean-Luc O\u2019Brien", "Jean-Luc O'Brien"),
        ("Zoe\u0308", "Zo\u00eb"),  # NFC composes
        ("\u00e9lodie", "\u00e9lodie"),
        ("李", "李"),
        ("\u4e00" * 50, "\u4e00" * 50),
    ],
)
def test_real_names_are_canonicalised(raw: str, canonical: str) -> None:
    """Trim, NFC, dot look-alikes to U+00B7, space runs to one; letters of any script pass."""
    assert canonical_name(raw) == canonical


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "\u4e00" * 51,
        "张3",
        "张\uff13",
        "张 三",  # space between CJK characters
        "·张三",
        "张三·",
        "张··三",
        "John · Smith",
        "John.Smith",
        "-John",
        "张\x00三",
        "张\u200b三",  # zero-width space
        "张\u202e三",  # right-to-left override
        "\u3164",  # Hangul filler: a letter that renders as nothing
        "张三😀",
        "<script>",
        "Robert'); DROP TABLE patients;--",
    ],
)
def test_non_names_are_refused(raw: str) -> None:
    """Digits, stray dots and spaces, control/format/invisible characters: name_format."""
    with pytest.raises(IdentityError) as excinfo:
        canonical_name(raw)
    assert _code(excinfo) == "name_format"
    assert excinfo.value.field == "name"


@relaxed
@given(st.text(max_size=60))
def test_canonical_name_is_idempotent(raw: str) -> None:
    """Whatever canonical_name accepts, it returns unchanged on a second pass."""
    try:
        once = canonical_name(raw)
    except IdentityError:
        return
    assert canonical_name(once) == once
    assert 1 <= len(once) <= 50
    assert not any(unicodedata.category(c) in ("Nd", "Cc", "Cf") for c in once)


# --- masking --------------------------------------------------------------------------------


def test_mask_examples() -> None:
    """The documented mask shapes."""
    assert mask_resident_id("11010519491231002X") == "1101**********002X"
    assert mask_mobile("13812345678") == "138****5678"
    assert mask_name("张三") == "张*"
    assert mask_name("欧阳娜娜") == "欧***"
    assert mask_name("李") == "*"
    assert mask_name("") == ""


@relaxed
@given(st.text(max_size=40))
def test_masks_never_leak_more_than_the_kept_characters(value: str) -> None:
    """Each mask keeps only its documented positions and turns the rest into '*'."""
    rid, mob, name = mask_resident_id(value), mask_mobile(value), mask_name(value)
    for masked in (rid, mob, name):
        assert len(masked) == len(value)
    keep_rid = set(range(4)) | set(range(14, 18)) if len(value) == 18 else set()
    keep_mob = set(range(3)) | set(range(7, 11)) if len(value) == 11 else set()
    keep_name = {0} if len(value) > 1 else set()
    for masked, keep in ((rid, keep_rid), (mob, keep_mob), (name, keep_name)):
        for i, ch in enumerate(masked):
            assert ch == (value[i] if i in keep else "*")


@relaxed
@given(
    valid_ids(), st.sampled_from("3456789"), st.text(alphabet=ASCII_DIGITS, min_size=9, max_size=9)
)
def test_masked_values_are_not_pii(resident_id: str, second: str, rest: str) -> None:
    """The scanner finds nothing in masked numbers (so masked logs pass the leak test)."""
    mobile = "1" + second + rest
    assert find_pii(f"id={mask_resident_id(resident_id)} tel={mask_mobile(mobile)}") == []


# --- the PII scanner ------------------------------------------------------------------------


@relaxed
@given(
    non_digit_text,
    non_digit_chars,
    valid_ids(),
    non_digit_chars,
    st.text(max_size=40),
    non_digit_chars,
)
def test_planted_id_canary_is_found_in_arbitrary_text(
    before: str, sep1: str, canary: str, sep2: str, after: str, sep3: str
) -> None:
    """A valid number planted between any non-digit separators is found."""
    assert canary in find_pii(before + sep1 + canary + sep2 + after + sep3)


@relaxed
@given(
    st.text(max_size=40),
    non_digit_chars,
    st.sampled_from("3456789"),
    st.text(alphabet=ASCII_DIGITS, min_size=9, max_size=9),
    non_digit_chars,
    st.text(max_size=40),
)
def test_planted_mobile_canary_is_found_in_arbitrary_text(
    before: str, sep1: str, second: str, rest: str, sep2: str, after: str
) -> None:
    """A mainland mobile planted between any non-digit separators is found."""
    canary = "1" + second + rest
    assert canary in find_pii(before + sep1 + canary + sep2 + after)


@relaxed
@given(valid_ids(), st.data())
def test_canaries_in_fullwidth_or_foreign_digits_are_found(
    canary: str, data: st.DataObject
) -> None:
    """A leak written in full-width or another script's digits is found as written."""
    zero = data.draw(st.sampled_from([0xFF10, 0x0660, 0x06F0, 0x0966, 0x0E50, 0x1D7CE]))
    written = "".join(chr(zero + int(c)) if c.isdigit() else c for c in canary)
    assert find_pii(f"patient {written} booked") == [written]


@st.composite
def bad_check_ids(draw: st.DrawFn) -> str:
    body = draw(st.text(alphabet=ASCII_DIGITS, min_size=17, max_size=17))
    good = resident_id_check_char(body)
    return body + draw(st.sampled_from([c for c in ASCII_DIGITS + "Xx" if c.upper() != good]))


@relaxed
@given(st.lists(st.tuples(bad_check_ids(), non_digit_text), max_size=10), non_digit_text)
def test_numbers_failing_the_check_are_not_flagged(runs: list[tuple[str, str]], start: str) -> None:
    """18-digit runs with a wrong check character, in digit-free text, give no findings."""
    text = start + "".join(f" {number} {between}" for number, between in runs)
    assert find_pii(text) == []


def test_scanner_examples() -> None:
    """Word boundaries, prefixes, order, and what is deliberately not flagged."""
    assert find_pii(f"a={STANDARD_EXAMPLE} b=13812345678") == [STANDARD_EXAMPLE, "13812345678"]
    assert find_pii(f"b=13812345678 a={STANDARD_EXAMPLE.lower()}") == [
        "13812345678",
        STANDARD_EXAMPLE.lower(),
    ]
    assert find_pii("tel:+86 138-1234-5678") == ["138-1234-5678"]
    assert find_pii("id 110105 19491231 002X.") == ["110105 19491231 002X"]
    assert find_pii("138--1234-5678 1381-2345678") == []  # not a usual grouping
    assert find_pii("tel:+86 13812345678,+8613912345678") == ["13812345678", "13912345678"]
    assert find_pii("order 913812345678 and 138123456789") == []  # longer digit runs
    assert find_pii(f"x1{STANDARD_EXAMPLE}") == []  # 19-digit run
    assert find_pii("id110105194912310021") == []  # wrong check character
    assert find_pii(_with_birth("19491331")) == []  # right check, impossible date
    assert find_pii("no pii here: 12812345678, 2026-03-01") == []

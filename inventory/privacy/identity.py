"""Real-name patient data at the edge: canonical forms, validation, masking, a PII scanner.

Pure functions, no I/O. Every ``canonical_*`` function returns the one form that is stored,
blind-indexed and compared, or raises :class:`IdentityError` with a stable ``code`` and the
``field`` it concerns. Uniqueness rules ("one ID number = one patient") are only sound on
canonical values, so the API canonicalises before anything else sees the input.

Policies decided here (research/reliability.md §0.9 and §3.6):

* **Digits are ASCII.** ``str.isdigit()``, ``\\d`` and ``int()`` accept Arabic-Indic,
  Devanagari and other scripts' digits, so ``١١٠١٠٥…`` would pass a naive check-digit test
  and name a second "patient" for the same person. Full-width digits (U+FF10..U+FF19, what
  Chinese input methods type) are folded to ASCII; every other non-ASCII digit or numeral is
  refused, never normalised: silently accepting one script invites the next.
* **Resident ID numbers** (GB 11643-1999) are 18 characters, ``[0-9]{17}[0-9X]``, with an
  ISO 7064 MOD 11-2 check character and a real, plausible birth date. The region code is
  checked for format only: codes change, and Hong Kong/Macau/Taiwan residence permits (81/82/
  83…) and the 2023 foreigners' permanent residence card (9…) use the same 18-character
  layout and check character, so they pass. Passports and other documents are not ID numbers
  and need their own type.
* **15-digit first-generation numbers are refused** (``resident_id_legacy_15``). Those cards
  stopped being valid on 2013-01-01; converting one means assuming the century and inventing a
  check character for a number the person may never have held, and it would let two strings
  name one patient. The API should ask for the 18-character number on the current card.
* **Mobile numbers**: mainland ``1[3-9]`` + 9 digits. Surrounding whitespace, inner spaces or
  hyphens (``138 1234 5678``, ``138-1234-5678``) and a leading ``+86``/``0086``/``86`` are
  accepted and dropped, because people paste numbers in those shapes and none of them is
  ambiguous for an 11-digit number that starts with 1.
* **Names** are NFC-normalised letters of any script, with ``·`` (U+00B7) between parts
  (minority and transliterated foreign names on ID cards) and single spaces, hyphens or
  apostrophes only between Latin letters. Look-alike dots that input methods produce are folded
  to U+00B7 so the name matches the card.
* **Error messages never echo the input**: they end up in logs and problem documents.

Masks (for logs and for responses that do not need the full value) keep a fixed, documented
set of characters; see :func:`mask_resident_id`, :func:`mask_mobile`, :func:`mask_name`.
:func:`find_pii` is the pattern half of log scrubbing (names can only be masked by field).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import ClassVar, Final, Literal

__all__ = [
    "ERROR_CODES",
    "Gender",
    "IdentityError",
    "ResidentId",
    "birth_date_of",
    "canonical_mobile",
    "canonical_name",
    "canonical_resident_id",
    "check_patient_consistency",
    "find_pii",
    "gender_of",
    "make_resident_id",
    "mask_mobile",
    "mask_name",
    "mask_resident_id",
    "parse_resident_id",
    "resident_id_check_char",
]

Gender = Literal["male", "female"]

#: Every ``IdentityError.code`` this module raises; stable, never renamed.
ERROR_CODES: Final = frozenset(
    {
        "resident_id_format",
        "resident_id_checksum",
        "resident_id_birth_date",
        "resident_id_non_ascii_digit",
        "resident_id_legacy_15",
        "birth_date_mismatch",
        "gender_mismatch",
        "gender_format",
        "phone_format",
        "name_format",
    }
)


class IdentityError(ValueError):
    """Personal data failed validation at the edge.

    ``code`` is one of :data:`ERROR_CODES` (what front ends switch on), ``field`` names the
    input it concerns (the caller may pass its own JSON field name), ``message`` is for people
    and never contains the input value. The API answers ``http_status`` (422).
    """

    http_status: ClassVar[int] = 422

    def __init__(self, code: str, field: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.field = field
        self.message = message

    def __reduce__(self) -> tuple[type[IdentityError], tuple[str, str, str]]:
        # The default rebuilds from args (the message alone), which this __init__ refuses.
        return (type(self), (self.code, self.field, self.message))

    def __repr__(self) -> str:
        return f"IdentityError(code={self.code!r}, field={self.field!r}, message={self.message!r})"


# --- shared helpers -----------------------------------------------------------------------

# Full-width forms are what Chinese input methods produce in full-width mode; they are the
# only non-ASCII characters folded. Lowercase x is folded to the standard's uppercase X.
_FULLWIDTH_DIGITS: Final = {0xFF10 + i: str(i) for i in range(10)}
_ID_FOLD: Final = str.maketrans({**_FULLWIDTH_DIGITS, 0xFF38: "X", 0xFF58: "X", ord("x"): "X"})
_PHONE_FOLD: Final = str.maketrans({**_FULLWIDTH_DIGITS, 0xFF0B: "+", 0xFF0D: "-", 0x3000: " "})

# China has used UTC+8 all year since 1991, so a fixed offset gives the right calendar day
# without a time-zone database; "born in the future" is judged by the hospital's calendar.
_CHINA_STANDARD_TIME: Final = timezone(timedelta(hours=8), "CST")


def _today_in_china() -> date:
    return datetime.now(_CHINA_STANDARD_TIME).date()


def _has_non_ascii_numeral(text: str) -> bool:
    # isnumeric() is wider than isdigit(): it also catches CJK numerals (一, 〇), circled and
    # superscript digits. None of them belongs in a number field.
    return any(not ch.isascii() and ch.isnumeric() for ch in text)


def _require_str(raw: object, field: str, code: str) -> str:
    if not isinstance(raw, str):
        raise IdentityError(code, field, f"{field} must be a string")
    return raw


# --- resident ID numbers (GB 11643-1999) --------------------------------------------------

_ID_RE: Final = re.compile(r"[0-9]{17}[0-9X]", re.ASCII)
_LEGACY_15_RE: Final = re.compile(r"[0-9]{15}", re.ASCII)
_ID_WEIGHTS: Final = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK_CHARS: Final = "10X98765432"
_MAX_AGE_YEARS: Final = 150


def resident_id_check_char(body17: str) -> str:
    """The ISO 7064 MOD 11-2 check character (``0``-``9`` or ``X``) for 17 ASCII digits."""
    if len(body17) != 17 or not body17.isascii() or not body17.isdigit():
        raise ValueError("the check character is computed over exactly 17 ASCII digits")
    total = sum(int(digit) * weight for digit, weight in zip(body17, _ID_WEIGHTS, strict=True))
    return _ID_CHECK_CHARS[total % 11]


def _date_from_digits(digits8: str) -> date | None:
    try:
        return date(int(digits8[0:4]), int(digits8[4:6]), int(digits8[6:8]))
    except ValueError:
        return None


def _verified_shape(raw: object, field: str) -> tuple[str, date]:
    """Canonical form and birth date, with every check that does not depend on the clock."""
    text = _require_str(raw, field, "resident_id_format").strip().translate(_ID_FOLD)
    # Before any length or format check, so the bypass always gets its own code.
    if _has_non_ascii_numeral(text):
        raise IdentityError(
            "resident_id_non_ascii_digit",
            field,
            f"{field} contains digits from another script; use 0-9 and X",
        )
    if _LEGACY_15_RE.fullmatch(text):
        raise IdentityError(
            "resident_id_legacy_15",
            field,
            f"{field} is a 15-digit first-generation number, no longer valid; "
            "give the 18-character number on the current ID card",
        )
    if not _ID_RE.fullmatch(text):
        raise IdentityError(
            "resident_id_format",
            field,
            f"{field} must be 18 characters: 17 digits then a digit or X",
        )
    if resident_id_check_char(text[:17]) != text[17]:
        raise IdentityError(
            "resident_id_checksum",
            field,
            f"{field} has a wrong check character; the number is mistyped",
        )
    born = _date_from_digits(text[6:14])
    if born is None:
        raise IdentityError(
            "resident_id_birth_date", field, f"{field} contains a birth date that does not exist"
        )
    return text, born


def _age_years(born: date, today: date) -> int:
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def canonical_resident_id(
    raw: str, *, today: date | None = None, field: str = "resident_id"
) -> str:
    """The canonical 18-character resident ID number, or :class:`IdentityError`.

    Trims surrounding whitespace, folds full-width digits and ``x``/``ｘ``/``Ｘ`` to ASCII
    ``X``, then requires ``[0-9]{17}[0-9X]``, a correct MOD 11-2 check character, and a birth
    date that exists, is not after ``today`` (default: today in China) and is at most 150 years
    ago. Codes, in the order checked: ``resident_id_non_ascii_digit``,
    ``resident_id_legacy_15``, ``resident_id_format``, ``resident_id_checksum``,
    ``resident_id_birth_date``. The check character comes before the date so that a mistyped
    digit is reported as a typo wherever it falls.
    """
    text, born = _verified_shape(raw, field)
    today = today or _today_in_china()
    if born > today:
        raise IdentityError(
            "resident_id_birth_date", field, f"{field} contains a birth date in the future"
        )
    if _age_years(born, today) > _MAX_AGE_YEARS:
        raise IdentityError(
            "resident_id_birth_date",
            field,
            f"{field} contains a birth date more than {_MAX_AGE_YEARS} years ago",
        )
    return text


def birth_date_of(resident_id: str) -> date:
    """The birth date encoded in a resident ID number (positions 7-14).

    Takes a canonical number; re-checks format, check character and calendar date (not the
    clock-dependent plausibility) and raises :class:`IdentityError` on anything else.
    """
    return _verified_shape(resident_id, "resident_id")[1]


def gender_of(resident_id: str) -> Gender:
    """``"male"`` when the 17th digit (the order code's last) is odd, else ``"female"``."""
    text, _ = _verified_shape(resident_id, "resident_id")
    return "male" if int(text[16]) % 2 else "female"


@dataclass(frozen=True, slots=True)
class ResidentId:
    """A validated resident ID number and what it encodes. ``repr`` shows it masked."""

    number: str  #: canonical 18 characters
    region_code: str  #: first 6 digits; format-checked only
    birth_date: date
    gender: Gender

    def __repr__(self) -> str:
        # Dataclass reprs end up in logs and tracebacks; the plaintext must not.
        return f"ResidentId({mask_resident_id(self.number)!r})"

    __str__ = __repr__


def parse_resident_id(
    raw: str, *, today: date | None = None, field: str = "resident_id"
) -> ResidentId:
    """:func:`canonical_resident_id` plus the facts the number encodes."""
    number = canonical_resident_id(raw, today=today, field=field)
    return ResidentId(
        number=number,
        region_code=number[:6],
        birth_date=birth_date_of(number),
        gender=gender_of(number),
    )


def check_patient_consistency(resident_id: str, birth_date: date, gender: str) -> None:
    """Refuse a declared birth date or gender that contradicts the ID number.

    ``resident_id`` must be canonical. Codes: ``gender_format`` (not ``"male"``/``"female"``,
    field ``gender``), ``birth_date_mismatch`` (field ``birth_date``), ``gender_mismatch``
    (field ``gender``).
    """
    if gender not in ("male", "female"):
        raise IdentityError("gender_format", "gender", "gender must be 'male' or 'female'")
    # A datetime is a date subclass but never compares equal to one; compare the calendar day.
    declared = (birth_date.year, birth_date.month, birth_date.day)
    encoded = birth_date_of(resident_id)
    if declared != (encoded.year, encoded.month, encoded.day):
        raise IdentityError(
            "birth_date_mismatch",
            "birth_date",
            "birth_date does not match the birth date in the ID number",
        )
    if gender != gender_of(resident_id):
        raise IdentityError(
            "gender_mismatch", "gender", "gender does not match the gender in the ID number"
        )


def make_resident_id(birth_date: date, gender: Gender, region: str = "110105", seq: int = 0) -> str:
    """A valid resident ID number, for tests and fuzzing (the check character is computed).

    ``seq`` (0-499) is the person's place among those of ``gender`` born that day in
    ``region``; the 3-digit order code is ``2*seq+1`` for men and ``2*seq`` for women, so every
    ``seq`` gives a number of the requested gender.
    """
    if len(region) != 6 or not region.isascii() or not region.isdigit():
        raise ValueError("region must be 6 ASCII digits")
    if gender not in ("male", "female"):
        raise ValueError("gender must be 'male' or 'female'")
    if not 0 <= seq <= 499:
        raise ValueError("seq must be in 0..499")
    if not 1000 <= birth_date.year <= 9999:
        raise ValueError("birth_date must have a 4-digit year")
    order = 2 * seq + (1 if gender == "male" else 0)
    body = f"{region}{birth_date:%Y%m%d}{order:03d}"
    return body + resident_id_check_char(body)


# --- mobile numbers -----------------------------------------------------------------------

_MOBILE_RE: Final = re.compile(r"(?:\+86|0086|86)?(1[3-9][0-9]{9})", re.ASCII)


def canonical_mobile(raw: str, *, field: str = "mobile") -> str:
    """The canonical 11-digit mainland mobile number, or :class:`IdentityError` ``phone_format``.

    Full-width digits, ``＋`` and ``－`` are folded; spaces and hyphens anywhere and a
    leading ``+86``, ``0086`` or ``86`` are dropped; what is left must be ``1[3-9]`` and 9 more
    ASCII digits. Other scripts' digits are refused.
    """
    text = _require_str(raw, field, "phone_format").strip().translate(_PHONE_FOLD)
    if _has_non_ascii_numeral(text):
        raise IdentityError(
            "phone_format", field, f"{field} contains digits from another script; use 0-9"
        )
    compact = text.replace(" ", "").replace("-", "")
    match = _MOBILE_RE.fullmatch(compact)
    if match is None:
        raise IdentityError(
            "phone_format",
            field,
            f"{field} must be a mainland mobile number: 11 digits starting 13-19",
        )
    return match.group(1)


# --- names --------------------------------------------------------------------------------

_MIDDLE_DOT: Final = "\u00b7"
# Dots that input methods and word processors put where the ID card has U+00B7.
_NAME_FOLD: Final = str.maketrans(
    {0x30FB: _MIDDLE_DOT, 0xFF65: _MIDDLE_DOT, 0x2022: _MIDDLE_DOT, 0x2027: _MIDDLE_DOT,
     0x22C5: _MIDDLE_DOT, 0x2019: "'"}
)  # fmt: skip
# Letters (category Lo) that render as nothing: a "name" made of them looks blank or
# lets two names that look identical differ.
_INVISIBLE_LETTERS: Final = frozenset("\u115f\u1160\u3164\uffa0")
_LATIN_JOINERS: Final = frozenset(" -'")
_MAX_NAME_LEN: Final = 50
_SPACE_RUN_RE: Final = re.compile(r" {2,}")


def _is_letter(ch: str) -> bool:
    return unicodedata.category(ch).startswith("L") and ch not in _INVISIBLE_LETTERS


def _is_letter_or_mark(ch: str) -> bool:
    return _is_letter(ch) or unicodedata.category(ch).startswith("M")


def _is_latin_letter(ch: str) -> bool:
    return _is_letter(ch) and unicodedata.name(ch, "").startswith("LATIN ")


def canonical_name(raw: str, *, field: str = "name") -> str:
    """The canonical real name, or :class:`IdentityError` ``name_format``.

    Trims, NFC-normalises, folds look-alike dots to ``·`` and runs of spaces to one, then
    requires 1-50 characters: letters of any script (combining marks may follow a letter),
    ``·`` between two letters, and a space, hyphen or apostrophe only between two Latin
    letters. Digits, punctuation, control and format characters are refused.
    """
    text = _require_str(raw, field, "name_format").strip()
    text = unicodedata.normalize("NFC", text).translate(_NAME_FOLD)
    text = _SPACE_RUN_RE.sub(" ", text)
    if not 1 <= len(text) <= _MAX_NAME_LEN:
        raise IdentityError(
            "name_format", field, f"{field} must be 1 to {_MAX_NAME_LEN} characters"
        )
    for i, ch in enumerate(text):
        if _is_letter(ch):
            continue
        before = text[i - 1] if i > 0 else ""
        after = text[i + 1] if i + 1 < len(text) else ""
        if unicodedata.category(ch).startswith("M") and before and _is_letter_or_mark(before):
            continue
        if ch == _MIDDLE_DOT and before and after and _is_letter(before) and _is_letter(after):
            continue
        if (
            ch in _LATIN_JOINERS
            and before
            and after
            and _is_latin_letter(before)
            and _is_latin_letter(after)
        ):
            continue
        raise IdentityError(
            "name_format",
            field,
            f"{field} may contain only letters, '·' between parts, and single spaces, "
            "hyphens or apostrophes between Latin letters",
        )
    return text


# --- masking ------------------------------------------------------------------------------


def mask_resident_id(value: str) -> str:
    """``1101**********1234``: first 4 and last 4 of an 18-character number.

    The first 4 name province and city, the last 4 are the order code and check character:
    enough for a person to tell their own family members apart, and the common practice on
    Chinese booking sites. Not a pseudonym: with a known birth date the hidden district is
    guessable, so never log a masked number next to a birth date. Anything not 18 characters
    long is masked entirely.
    """
    if len(value) != 18:
        return "*" * len(value)
    return value[:4] + "*" * 10 + value[-4:]


def mask_mobile(value: str) -> str:
    """``138****5678``: carrier prefix and last 4 of an 11-digit number; else all masked."""
    if len(value) != 11:
        return "*" * len(value)
    return value[:3] + "****" + value[-4:]


def mask_name(value: str) -> str:
    """``张*``, ``欧***``: the first character kept, one ``*`` per other character.

    A one-character name is masked entirely, since keeping its first character would keep all
    of it.
    """
    if len(value) <= 1:
        return "*" * len(value)
    return value[0] + "*" * (len(value) - 1)


# --- scanning text for leaked PII ---------------------------------------------------------

# Matched on text whose digits of every script are folded to ASCII (one code point for one,
# so offsets stay valid), so a leak written with the §0.9 bypass digits is found too. Digit
# runs are the boundary: letters around a number do not hide it, but a longer run of digits
# is some other number. The usual groupings (6-8-4 for IDs, 3-4-4 for mobiles, with one
# space or hyphen) are found as well, because raw input gets logged in the shape it was typed.
_PII_ID_RE: Final = re.compile(
    r"(?<![0-9])[0-9]{6}[ -]?[0-9]{8}[ -]?[0-9]{3}(?:[0-9](?![0-9])|X)", re.ASCII
)
_PII_MOBILE_RE: Final = re.compile(
    r"(?<![0-9])(?:(?:\+|00)?86[ -]?)?(1[3-9][0-9](?:[ -]?[0-9]{4}){2})(?![0-9])", re.ASCII
)


def _fold_for_scan(text: str) -> str:
    if text.isascii():
        return text.replace("x", "X")
    out = []
    for ch in text:
        if ch.isascii():
            out.append("X" if ch == "x" else ch)
            continue
        digit = unicodedata.decimal(ch, None)
        if digit is not None:
            out.append(str(digit))
        elif ch in "\uff38\uff58":
            out.append("X")
        else:
            out.append(ch)
    return "".join(out)


def find_pii(text: str) -> list[str]:
    """Resident ID numbers and mainland mobile numbers found in ``text``, in order.

    IDs count only with a correct check character and a calendar date, which leaves about
    one random 18-digit run in 300 flagged. Neither may be part of a longer digit run (a
    ``+86``/``0086``/``86`` prefix before a mobile is allowed and not returned). Groupings
    with single spaces or hyphens (``110105 19491231 002X``, ``138-1234-5678``), full-width
    and other scripts' digits are found too; matches are returned as they appear in
    ``text``. Names cannot be found by pattern: mask them by field name.
    """
    folded = _fold_for_scan(text)
    found: list[tuple[int, str]] = []
    for match in _PII_ID_RE.finditer(folded):
        candidate = match.group().replace(" ", "").replace("-", "")
        if (
            resident_id_check_char(candidate[:17]) == candidate[17]
            and _date_from_digits(candidate[6:14]) is not None
        ):
            found.append((match.start(), text[match.start() : match.end()]))
    for match in _PII_MOBILE_RE.finditer(folded):
        found.append((match.start(1), text[match.start(1) : match.end(1)]))
    found.sort(key=lambda item: item[0])
    return [value for _, value in found]

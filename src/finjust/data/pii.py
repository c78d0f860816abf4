"""Personal data in text: find it, and redact it.

Each detector is a regular expression that finds candidates plus, where the identifier has
one, a checksum from ``python-stdnum`` that confirms them (Luhn for card numbers, ISO 7064
mod 97 for IBANs, the Swedish personal identity number's date and Luhn digit). Only the
candidate patterns are written here: no library finds such numbers inside running text.
Phone numbers have no checksum; the pattern asks for an international ``+`` prefix, a
national trunk ``0`` with separators, or the North American (555) 123-4567 / 555-123-4567
shapes, and 8 to 15 digits, so years, prices and times pass; dates and spans of times that
the trunk shape also matches (01.02.2023, 09.30-10.45) are left out.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from stdnum import iban, luhn
from stdnum.se import personnummer

from finjust.registry import Registry


@dataclass(frozen=True)
class Detector:
    name: str
    pattern: re.Pattern[str]
    #: confirms a candidate (a checksum); None accepts every match
    confirm: Callable[[str], bool] | None
    placeholder: str
    #: True where ``confirm`` is a checksum, which a number running on past the identifier fails
    #: while the identifier passes: its prefixes are tried then (a length check has no such tell)
    checksum: bool = False


@dataclass(frozen=True)
class PiiMatch:
    kind: str
    start: int
    end: int
    text: str


#: in the order they claim text: an IBAN's digits are not also reported as a phone number
DETECTORS: Registry[Detector] = Registry("PII detector")


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


def _card(text: str) -> bool:
    digits = _digits(text)
    # card numbers begin with 2-6 (Mastercard, Amex, Visa, Discover...); this keeps Luhn-valid
    # runs of zeros and account numbers out
    return 13 <= len(digits) <= 19 and digits[0] in "23456" and luhn.is_valid(digits)


#: what the national-trunk pattern also matches but a phone number is not: a date, day or month
#: first (01.02.2023, 05-06-2021, 12/31/2024), or a span of times (09.30-10.45)
_DATE = re.compile(r"(\d{1,2})([./-])(\d{1,2})\2(\d{2}|\d{4})")
_TIME_SPAN = re.compile(r"([01]?\d|2[0-3])[.:][0-5]\d ?[-\u2013] ?([01]?\d|2[0-3])[.:][0-5]\d")


def _is_date(text: str) -> bool:
    match = _DATE.fullmatch(text)
    return match is not None and _day_and_month(match.group(1), match.group(3))


def _day_and_month(first: str, second: str) -> bool:
    """Whether two numbers read as a day and a month, in either order."""
    low, high = sorted((int(first), int(second)))
    return 1 <= low <= 12 and high <= 31


def _iban(text: str) -> bool:
    """An IBAN passing its country's format and mod-97 check, written in one case (lower-case
    letters in running text would otherwise make a lower-case word after two digits a candidate)."""
    letters = [c for c in text if c.isalpha()]
    return (all(c.isupper() for c in letters) or all(c.islower() for c in letters)) and iban.is_valid(text)


#: a span of dates leading a candidate: "01.06-31.08", "01.02.2023-05.06.2023" (day or month first)
_DATE_SPAN = re.compile(r"(\d{1,2})[./](\d{1,2})(?:[./](?:\d{4}|\d{2}))? ?[-\u2013]")


def _phone(text: str) -> bool:
    # a date leading the candidate is one followed by a time ("01-02-2023 10:30" matches the trunk shape)
    return (8 <= len(_digits(text)) <= 15 and not _is_date(text.split()[0]) and not _TIME_SPAN.fullmatch(text)
            and not _starts_a_date_span(text))  # fmt: skip


def _starts_a_date_span(text: str) -> bool:
    match = _DATE_SPAN.match(text)
    return match is not None and _day_and_month(match.group(1), match.group(2))


#: an address, its user in any script (``anna.öberg@``), whole: the match starts where the
#: address does; but not an SSH remote (``git@github.com:acme/repo.git``), whose user is the
#: service's (the domain must end there, not go on into ``:path``; a ``:port`` may follow)
_EMAIL = re.compile(r"(?<![\w%+-])(?<!\w\.)[\w%+-][\w.%+'-]*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
                    r"(?![A-Za-z0-9-])(?!:[A-Za-z~/])")  # an apostrophe inside the user (o'neil@), not before it

for _detector in (
    Detector("email", _EMAIL, None, "[EMAIL]"),
    Detector("iban", re.compile(r"\b[A-Za-z]{2}\d{2}(?: ?[A-Za-z0-9]){11,30}\b"), _iban, "[IBAN]", checksum=True),
    # not after a "+": an international phone number (+49 152 ...) passes Luhn one time in ten
    Detector("card", re.compile(r"(?<![\d+-])\d(?:[ -]?\d){12,18}(?![\d-])"), _card, "[CARD]", checksum=True),
    Detector("personnummer", re.compile(r"(?<![\d+-])(?:\d{2})?\d{6}[-+]?\d{4}(?![\d-])"),
             personnummer.is_valid, "[PERSONNUMMER]", checksum=True),
    # not the later groups of a number written in thousands ("1 000 000 000"), though a phone
    # number may follow any other number ("order 4421 070-123 45 67")
    Detector("phone", re.compile(r"(?<![\w+])(?!(?<=\d[ .,])\d{3}(?:[ .,]\d{3})+(?![ .,]?\d))(?:\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){2,6}|\(?0\d{1,3}\)?(?:[ .-]\d{2,4}){2,4}"
                                 r"|(?:\([2-9]\d{2}\) ?|[2-9]\d{2}[ .-])\d{3}[ .-]\d{4})(?![\d])"), _phone, "[PHONE]"),
):  # fmt: skip
    DETECTORS.add(_detector.name, _detector)

_HAS_DIGITS = re.compile(r"\d\D{0,2}\d\D{0,2}\d\D{0,2}\d\D{0,2}\d\D{0,2}\d\D{0,2}\d")


def find_pii(text: str) -> list[PiiMatch]:
    """Every confirmed PII match in ``text``, in order, none overlapping."""
    has_at, has_digits = "@" in text, _HAS_DIGITS.search(text) is not None
    if not has_at and not has_digits:  # most records: skip the patterns entirely
        return []
    claimed: list[PiiMatch] = []
    end: int | None  # a candidate's end, then its confirmed end (None: not confirmed)
    for name in ("email", "iban", "card", "personnummer", "phone"):
        if name == "email" and not has_at or name != "email" and not has_digits:
            continue
        detector = DETECTORS.get(name)
        for match in detector.pattern.finditer(text):
            start, end = match.span()
            if any(start < c.end and c.start < end for c in claimed):
                continue
            end = _confirmed_end(detector, text, start, end)
            if end is not None:
                claimed.append(PiiMatch(name, start, end, text[start:end]))
    return sorted(claimed, key=lambda m: m.start)


def _confirmed_end(detector: Detector, text: str, start: int, end: int) -> int | None:
    """Where the confirmed identifier starting at ``start`` ends: the whole candidate, else its
    longest prefix the pattern and the checksum accept and that ends at a word's end.

    The patterns are greedy: a card number followed by an expiry ("4111 1111 1111 1111 12/25")
    or an IBAN by a word in capitals ("DE89370400440532013000 ASAP") makes a candidate that
    fails its checksum while the identifier inside it passes.
    """
    if detector.confirm is None or detector.confirm(text[start:end]):
        return end
    if not detector.checksum:
        return None
    for shorter in range(end - 1, start, -1):
        at_word_end = text[shorter - 1].isalnum() and not text[shorter].isalnum()
        candidate = text[start:shorter]
        if at_word_end and detector.pattern.fullmatch(candidate) and detector.confirm(candidate):
            return shorter
    return None


def redact_pii(text: str) -> str:
    """``text`` with every PII match replaced by its placeholder, such as ``[EMAIL]``."""
    matches = find_pii(text)
    for match in reversed(matches):
        text = text[: match.start] + DETECTORS.get(match.kind).placeholder + text[match.end :]
    return text

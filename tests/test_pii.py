"""PII detectors: valid identifiers are found, numbers failing their checksum are not."""

from __future__ import annotations

import pytest

from finjust.data.pii import find_pii, redact_pii


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("write to ingrid.halvorsen@nordhavn.example today", "email"),
        ("mail ops@nordhavn.example: urgent", "email"),
        ("card 4111 1111 1111 1111 on file", "card"),
        ("card 5555-5555-5555-4444", "card"),
        ("pay to SE45 5000 0000 0583 9825 7466 please", "iban"),
        ("pay to DE89370400440532013000", "iban"),
        ("personnummer 811218-9876", "personnummer"),
        ("personnummer 19811218-9876", "personnummer"),
        ("call +46 31 390 6142 on weekdays", "phone"),
        ("ring 031-390 61 42", "phone"),
        ("call (555) 123-4567 today", "phone"),
        ("call 555-123-4567 today", "phone"),
        ("Call +49 152 8108 3555 today", "phone"),  # passes Luhn: it was taken for a card, its "+" left behind
        ("pay to de89 3704 0044 0532 0130 00", "iban"),  # lower case: only its tail was caught, as a phone
        ("Order 4421 070-123 45 67", "phone"),  # after another number (the thousands rule must not hide it)
        ("Phone: 3 070 123 45 67", "phone"),
        ("Apt 4 (555) 123-4567", "phone"),
        ("x ...anna@example.com", "email"),
    ],
)
def test_valid_identifiers_are_found(text, kind):
    assert [m.kind for m in find_pii(text)] == [kind]


@pytest.mark.parametrize(
    "text",
    [
        "card 4111 1111 1111 1112",  # Luhn digit wrong
        "pay to SE45 5000 0000 0583 9825 7467",  # mod-97 check wrong
        "personnummer 811218-9875",  # Luhn digit wrong
        "personnummer 811318-9876",  # month 13
        "founded in 2016, open 08:00 to 17:00, 2490 EUR, a 10-year warranty, order 12345678",
        "version 1.2.3 on 2024-01-15",
        "delivered 01.02.2023, returned 05-06-2021, meeting 09.30-10.45",  # dates and times, not phones
        "git clone git@github.com:acme/repo.git",  # an SSH remote, not a person's address
        "meeting on 01-02-2023 10:30, kl. 01.02.2023 12.30",  # a date and a time: not one phone number
        "due 01.13.2023 or 12/31/2024",  # month first
        "Revenue was 1 000 000 000 SEK, 2 500 000 units",  # thousands, not a national number
        "Open 01.06-31.08 daily, between 01.02.2023-05.06.2023",  # spans of dates
        "Error code Ab12 then 1234 5678 9012 34",  # a mixed-case candidate is no IBAN
    ],
)
def test_invalid_checksums_and_ordinary_numbers_are_not_pii(text):
    assert find_pii(text) == []


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        ("mail anna.öberg@example.se", "mail [EMAIL]"),  # the whole user, not "anna.ö[EMAIL]"
        ("ssh to jo_e@host.example.com:8080 please", "ssh to [EMAIL]:8080 please"),  # a port may follow
        ("mail anna.o'neil@example.com or 'bo@example.com'", "mail [EMAIL] or '[EMAIL]'"),  # not "anna.o'[EMAIL]"
    ],
)
def test_an_address_is_redacted_whole(text, redacted):
    assert redact_pii(text) == redacted


def test_redaction_replaces_each_match_by_its_placeholder():
    text = "Mail ingrid@nordhavn.example or call +46 31 390 6142; IBAN SE45 5000 0000 0583 9825 7466."
    assert redact_pii(text) == "Mail [EMAIL] or call [PHONE]; IBAN [IBAN]."


@pytest.mark.parametrize(
    ("text", "redacted"),
    [  # a greedy candidate runs past the identifier and fails its checksum; the identifier passes
        ("Card 4111 1111 1111 1111 12/25", "Card [CARD] 12/25"),
        ("IBAN DE89370400440532013000 ASAP", "IBAN [IBAN] ASAP"),
        ("IBAN DE89 3704 0044 0532 0130 00 EUR 500", "IBAN [IBAN] EUR 500"),
        # inside a longer number: not a card
        ("order 41111111111111111234 shipped", "order 41111111111111111234 shipped"),
    ],
)
def test_an_identifier_followed_by_more_digits_or_capitals_is_still_found(text, redacted):
    assert redact_pii(text) == redacted

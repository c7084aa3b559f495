"""Entity extraction: types, values, normalised forms and code-point offsets."""

from __future__ import annotations

import itertools

import pytest

from services.intent.entities import extract_entities


def spans(text: str) -> list[tuple[str, str, str]]:
    out = []
    for e in extract_entities(text):
        assert text[e.start : e.end] == e.value  # offsets index the original string
        out.append((e.type, e.value, e.normalized))
    return out


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "where is my order 113542617735902?",
            [("order_id", "113542617735902", "113542617735902")],
        ),
        (
            "can you help me canceling purchase 00004587345?",
            [("order_id", "00004587345", "00004587345")],
        ),
        ("I don't know how I can see my bill #00108", [("invoice_id", "#00108", "00108")]),
        (
            "invoice no. INV-2024-001 shows 3 USD",
            [("invoice_id", "INV-2024-001", "INV-2024-001"), ("amount", "3 USD", "3.00 USD")],
        ),
        ("reimburse $12 please", [("amount", "$12", "12.00 USD")]),
        (
            "I was charged £1,299.50 twice, refund 20 euros",
            [("amount", "£1,299.50", "1299.50 GBP"), ("amount", "20 euros", "20.00 EUR")],
        ),
        (
            "ship to Munich, Germany or New York, USA",
            [
                ("city", "Munich", "Munich"),
                ("country", "Germany", "DE"),
                ("city", "New York", "New York"),
                ("country", "USA", "US"),
            ],
        ),
        (
            "email me at Bob.S@example.co.uk",
            [("email", "Bob.S@example.co.uk", "bob.s@example.co.uk")],
        ),
        (
            "Mr. Jones wants order #A12-345 sent to us",
            [("person_name", "Mr. Jones", ""), ("order_id", "A12-345", "A12-345")],
        ),
        ("tell us about your refund policy", []),
        (
            "I paid 12 dollars for order number 7788-XZ",
            [
                ("amount", "12 dollars", "12.00 USD"),
                ("order_id", "7788-XZ", "7788-XZ"),
            ],
        ),
    ],
)
def test_extracts_expected_entities(text: str, expected: list[tuple[str, str, str]]) -> None:
    assert spans(text) == expected


def test_offsets_are_code_points_not_bytes() -> None:
    text = "Größe 🙂🙂 — où est ma commande order 98765432 à Liverpool?"
    entities = extract_entities(text)
    order = next(e for e in entities if e.type == "order_id")
    city = next(e for e in entities if e.type == "city")
    assert text[order.start : order.end] == "98765432"
    assert order.start == text.index("98765432")  # str index = code point, emoji count as one
    assert (city.value, city.normalized) == ("Liverpool", "Liverpool")


def test_pronoun_us_is_not_a_country_and_short_numbers_are_not_orders() -> None:
    assert spans("can you call us about the 3 items?") == []


def test_entities_never_overlap() -> None:
    text = "refund $45.00 for order 12345678 to bob@shop.com in Dublin, Ireland"
    entities = extract_entities(text)
    for a, b in itertools.pairwise(entities):
        assert a.end <= b.start
    assert {e.type for e in entities} == {"amount", "order_id", "email", "city", "country"}

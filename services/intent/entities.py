"""Rule- and gazetteer-based entity extraction with code-point offsets.

Recognises order ids, invoice ids, amounts (with currency), emails, cities, countries and
titled person names. Offsets index the original string in Unicode code points (Python ``str``
indices); ``end`` is exclusive. Overlapping candidates are resolved by priority, then length.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from services.intent.gazetteer import CITIES, COUNTRIES, COUNTRY_ABBREVIATIONS


@dataclass(frozen=True)
class Entity:
    """One entity found in a message."""

    type: str
    value: str
    start: int
    end: int
    normalized: str = ""


_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# An id token: letters, digits and dashes, at least one digit, 3..40 characters.
_ID = r"(?=[A-Za-z0-9-]*\d)[A-Za-z0-9][A-Za-z0-9-]{2,39}"
_ID_LEAD = r"(?:\s*(?:number|no\.?|num|nr|id|#|:|is)\s*)*\s*#?\s*"
_INVOICE = re.compile(
    r"\b(?:invoice|bill|receipt)s?" + _ID_LEAD + r"(?P<id>" + _ID + r")\b", re.IGNORECASE
)
_HASH_ID = re.compile(r"(?<![\w#])#(?P<id>\d{3,20})\b")
_ORDER = re.compile(
    r"\b(?:order|purchase|package|parcel|shipment|delivery|tracking|consignment)s?"
    + _ID_LEAD
    + r"(?P<id>"
    + _ID
    + r")\b",
    re.IGNORECASE,
)
# A bare long number (7+ digits) is taken as an order id when nothing else claims it.
_BARE_NUMBER = re.compile(r"(?<![\w.,$£€¥#])\d{7,20}(?![\w.,])")
_NUMBER = r"\d{1,3}(?:,\d{3})+(?:\.\d{1,2})?|\d+(?:[.,]\d{1,2})?"
_SYMBOLS = {"$": "USD", "£": "GBP", "€": "EUR", "¥": "JPY"}
_CODES = ("USD", "GBP", "EUR", "JPY", "CAD", "AUD", "CHF", "SEK", "NOK", "DKK", "PLN", "INR")
_WORDS = {
    "dollar": "USD",
    "dollars": "USD",
    "bucks": "USD",
    "pound": "GBP",
    "pounds": "GBP",
    "quid": "GBP",
    "euro": "EUR",
    "euros": "EUR",
    "yen": "JPY",
}
_AMOUNT_SYMBOL = re.compile(r"(?P<cur>[$£€¥])\s?(?P<num>" + _NUMBER + r")(?!\d)")
_AMOUNT_CODE_BEFORE = re.compile(
    r"\b(?P<cur>" + "|".join(_CODES) + r")\s?(?P<num>" + _NUMBER + r")(?!\d)"
)
_AMOUNT_AFTER = re.compile(
    r"(?<![\w.])(?P<num>"
    + _NUMBER
    + r")\s?(?P<cur>"
    + "|".join(_CODES)
    + "|"
    + "|".join(sorted(_WORDS, key=len, reverse=True))
    + r")\b",
    re.IGNORECASE,
)
_PERSON = re.compile(r"\b(?:Mr|Mrs|Ms|Miss|Dr)\.?\s+[A-Z][a-z]+(?:[-\s][A-Z][a-z]+)?")


def _gazetteer_pattern(names: list[str], flags: int) -> re.Pattern[str]:
    # Longest first so "new york" wins over a shorter overlapping name.
    alternatives = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    return re.compile(r"(?<![\w.])(?:" + alternatives + r")(?![\w])", flags)


_CITY = _gazetteer_pattern(list(CITIES), re.IGNORECASE)
_COUNTRY = _gazetteer_pattern(list(COUNTRIES), re.IGNORECASE)
_COUNTRY_ABBR = _gazetteer_pattern(list(COUNTRY_ABBREVIATIONS), 0)

# Higher wins when candidates overlap.
_PRIORITY = {
    "email": 7,
    "invoice_id": 6,
    "amount": 5,
    "order_id": 4,
    "person_name": 3,
    "city": 2,
    "country": 2,
}


def _normalize_amount(number: str, currency: str) -> str:
    text = number.replace(",", "") if re.search(r",\d{3}", number) else number.replace(",", ".")
    try:
        value = Decimal(text)
    except InvalidOperation:
        return ""
    return f"{value:.2f} {currency}"


def _currency(token: str) -> str:
    if token in _SYMBOLS:
        return _SYMBOLS[token]
    upper = token.upper()
    if upper in _CODES:
        return upper
    return _WORDS.get(token.lower(), "")


def _candidates(text: str) -> list[Entity]:
    found: list[Entity] = []
    for m in _EMAIL.finditer(text):
        found.append(Entity("email", m.group(), m.start(), m.end(), m.group().lower()))
    for m in _INVOICE.finditer(text):
        s, e = m.span("id")
        found.append(Entity("invoice_id", text[s:e], s, e, text[s:e].upper()))
    for m in _ORDER.finditer(text):
        s, e = m.span("id")
        found.append(Entity("order_id", text[s:e], s, e, text[s:e].upper()))
    for m in _HASH_ID.finditer(text):
        # "#00108" after bill/invoice is caught above; a lone "#12345" is an order reference
        # unless an invoice word precedes it closely.
        before = text[max(0, m.start() - 24) : m.start()].lower()
        kind = "invoice_id" if re.search(r"invoice|bill|receipt", before) else "order_id"
        s, e = m.span()
        found.append(Entity(kind, text[s:e], s, e, m.group("id")))
    for m in _BARE_NUMBER.finditer(text):
        found.append(Entity("order_id", m.group(), m.start(), m.end(), m.group()))
    for pattern in (_AMOUNT_SYMBOL, _AMOUNT_CODE_BEFORE, _AMOUNT_AFTER):
        for m in pattern.finditer(text):
            currency = _currency(m.group("cur"))
            normalized = _normalize_amount(m.group("num"), currency) if currency else ""
            found.append(Entity("amount", m.group(), m.start(), m.end(), normalized))
    for m in _PERSON.finditer(text):
        found.append(Entity("person_name", m.group(), m.start(), m.end(), ""))
    for m in _CITY.finditer(text):
        found.append(Entity("city", m.group(), m.start(), m.end(), CITIES[m.group().lower()]))
    for m in _COUNTRY.finditer(text):
        code = COUNTRIES[m.group().lower()]
        found.append(Entity("country", m.group(), m.start(), m.end(), code))
    for m in _COUNTRY_ABBR.finditer(text):
        code = COUNTRY_ABBREVIATIONS[m.group()]
        found.append(Entity("country", m.group(), m.start(), m.end(), code))
    return found


def extract_entities(text: str) -> list[Entity]:
    """Entities in ``text``, ordered by start offset, none overlapping."""
    chosen: list[Entity] = []
    ranked = sorted(
        _candidates(text), key=lambda c: (-_PRIORITY[c.type], -(c.end - c.start), c.start)
    )
    for cand in ranked:
        if all(cand.end <= c.start or cand.start >= c.end for c in chosen):
            chosen.append(cand)
    return sorted(chosen, key=lambda c: c.start)


def first_of_type(entities: list[Entity], kind: str) -> Entity | None:
    """The first entity of type ``kind``, or None."""
    return next((e for e in entities if e.type == kind), None)

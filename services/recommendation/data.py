"""Interaction logs: reading the Online Retail CSV and the project's own event log.

Everything downstream (training, evaluation, serving) works on :class:`Interactions`: parallel
numpy arrays of user id, item id, time (epoch seconds), event type and quantity, with string ids
kept as given. Readers accept

- the Online Retail CSV (``InvoiceNo,StockCode,...``), gzip or plain, filtered as the data
  README's protocol says (customers only, no cancellations, positive quantity and price, product
  codes of five digits plus an optional letter);
- the project's event log as CSV or JSONL with ``user_id,item_id,timestamp,event_type,quantity``
  (timestamp ISO 8601 or epoch seconds; event_type view/click/add_to_cart/purchase);
- the feedback SQLite database the service writes (``*.db``/``*.sqlite``), read directly.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np

#: Event types, in the order of the proto enum FeedbackType (0 is unspecified).
EVENT_TYPES: tuple[str, ...] = ("unspecified", "view", "click", "add_to_cart", "purchase")
PURCHASE = EVENT_TYPES.index("purchase")

#: How much one event of each type says about interest, relative to a purchase. Used when
#: building the training matrix and the live history; purchases are the evaluation target.
EVENT_WEIGHTS: dict[int, float] = {1: 0.1, 2: 0.25, 3: 0.5, 4: 1.0}

_STOCK_CODE = re.compile(r"^\d{5}[A-Za-z]?$")


@dataclass(frozen=True)
class Interactions:
    """A log of events as parallel arrays (one row per event), sorted by time."""

    user_ids: np.ndarray  # object array of str
    item_ids: np.ndarray  # object array of str
    times: np.ndarray  # float64 epoch seconds
    event_types: np.ndarray  # int8, index into EVENT_TYPES
    quantities: np.ndarray  # float32
    #: Item id -> description, where the source has one.
    descriptions: dict[str, str]

    def __len__(self) -> int:
        return int(self.times.shape[0])

    def select(self, mask: np.ndarray) -> Interactions:
        """The rows where ``mask`` is true."""
        return Interactions(
            self.user_ids[mask],
            self.item_ids[mask],
            self.times[mask],
            self.event_types[mask],
            self.quantities[mask],
            self.descriptions,
        )

    def between(self, start: float | None, end: float | None) -> Interactions:
        """Rows with ``start <= time < end`` (either bound may be open)."""
        mask = np.ones(len(self), dtype=bool)
        if start is not None:
            mask &= self.times >= start
        if end is not None:
            mask &= self.times < end
        return self.select(mask)

    @staticmethod
    def from_rows(
        rows: Iterable[tuple[str, str, float, int, float]],
        descriptions: dict[str, str] | None = None,
    ) -> Interactions:
        """Build from ``(user_id, item_id, time, event_type, quantity)`` tuples."""
        users: list[str] = []
        items: list[str] = []
        times: list[float] = []
        types: list[int] = []
        qty: list[float] = []
        for user, item, t, et, q in rows:
            users.append(user)
            items.append(item)
            times.append(t)
            types.append(et)
            qty.append(q)
        order = np.argsort(np.asarray(times, dtype=np.float64), kind="stable")
        return Interactions(
            np.asarray(users, dtype=object)[order],
            np.asarray(items, dtype=object)[order],
            np.asarray(times, dtype=np.float64)[order],
            np.asarray(types, dtype=np.int8)[order],
            np.asarray(qty, dtype=np.float32)[order],
            descriptions or {},
        )


def parse_date(text: str) -> float:
    """``YYYY-MM-DD`` (or a full ISO timestamp) as epoch seconds, UTC."""
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"expected YYYY-MM-DD, got {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def end_of_day(text: str) -> float:
    """The first second after the day ``text`` (so ``--test-until`` is inclusive)."""
    return parse_date(text) + (timedelta(days=1).total_seconds() if len(text) == 10 else 0.0)


def _open_text(path: Path) -> io.TextIOBase:
    with path.open("rb") as probe:
        magic = probe.read(2)
    if magic == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return path.open("r", encoding="utf-8", newline="")


def _parse_time(text: str, cache: dict[str, float]) -> float:
    value = cache.get(text)
    if value is None:
        stripped = text.strip()
        try:
            value = float(stripped)
        except ValueError:
            moment = datetime.fromisoformat(stripped.replace("Z", "+00:00"))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            value = moment.timestamp()
        cache[text] = value
    return value


def _event_type(text: str) -> int:
    name = text.strip().lower().replace("-", "_")
    if name.startswith("feedback_type_"):
        name = name[len("feedback_type_") :]
    if name == "cart":
        name = "add_to_cart"
    if name not in EVENT_TYPES or name == "unspecified":
        raise ValueError(
            f"unknown event_type {text!r}; expected view, click, add_to_cart, purchase"
        )
    return EVENT_TYPES.index(name)


def _online_retail_rows(
    reader: Iterator[dict[str, str]], descriptions: dict[str, str]
) -> Iterator[tuple[str, str, float, int, float]]:
    cache: dict[str, float] = {}
    for row in reader:
        customer = (row.get("CustomerID") or "").strip()
        invoice = (row.get("InvoiceNo") or "").strip()
        code = (row.get("StockCode") or "").strip()
        if not customer or invoice.startswith("C") or not _STOCK_CODE.match(code):
            continue
        try:
            quantity = float(row["Quantity"])
            price = float(row["UnitPrice"])
        except (KeyError, ValueError):
            continue
        if quantity <= 0 or price <= 0:
            continue
        if customer.endswith(".0"):
            customer = customer[:-2]
        code = code.upper()
        if code not in descriptions and row.get("Description"):
            descriptions[code] = row["Description"].strip()
        yield customer, code, _parse_time(row["InvoiceDate"], cache), PURCHASE, quantity


def _event_rows(
    records: Iterable[dict[str, object]],
) -> Iterator[tuple[str, str, float, int, float]]:
    cache: dict[str, float] = {}
    for number, record in enumerate(records, start=1):
        try:
            user = str(record["user_id"]).strip()
            item = str(record["item_id"]).strip()
            when = _parse_time(str(record["timestamp"]), cache)
            event_type = _event_type(str(record.get("event_type") or "purchase"))
            raw_quantity = record.get("quantity")
            quantity = float(raw_quantity) if raw_quantity not in (None, "") else 1.0  # type: ignore[arg-type]
        except (KeyError, ValueError) as exc:
            raise ValueError(f"event log record {number}: {exc}") from None
        if not user or not item:
            raise ValueError(f"event log record {number}: user_id and item_id must not be empty")
        yield user, item, when, event_type, max(quantity, 1.0)


def read_sqlite_events(path: Path) -> Interactions:
    """Events of the service's feedback database (see :mod:`services.recommendation.store`)."""
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = connection.execute(
            "SELECT user_id, item_id, event_time, event_type, quantity FROM events"
        ).fetchall()
    finally:
        connection.close()
    return Interactions.from_rows((u, i, float(t), int(e), float(q)) for u, i, t, e, q in rows)


def read_interactions(path: Path) -> Interactions:
    """Read any supported interaction log (format detected from the header or suffix)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix in (".db", ".sqlite", ".sqlite3"):
        return read_sqlite_events(path)
    descriptions: dict[str, str] = {}
    with _open_text(path) as handle:
        first = handle.readline()
        if first.lstrip().startswith("{"):
            records = (json.loads(line) for line in [first, *handle] if line.strip())
            return Interactions.from_rows(_event_rows(records))
        header = next(csv.reader([first]))
        reader = csv.DictReader(handle, fieldnames=header)
        if "InvoiceNo" in header and "StockCode" in header:
            return Interactions.from_rows(_online_retail_rows(reader, descriptions), descriptions)
        if "user_id" in header and "item_id" in header:
            return Interactions.from_rows(_event_rows(reader))
    raise ValueError(
        f"{path}: unknown format; expected the Online Retail CSV (InvoiceNo,StockCode,...) or an "
        "event log with user_id,item_id,timestamp,event_type,quantity (CSV or JSONL)"
    )

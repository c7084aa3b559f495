"""Reading the Online Retail CSV and the event-log formats."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from services.recommendation.data import PURCHASE, read_interactions

ONLINE_RETAIL = """InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country
536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,2010-12-01 08:26:00,2.55,17850.0,United Kingdom
536365,71053,WHITE METAL LANTERN,6,2010-12-01 08:26:00,3.39,17850.0,United Kingdom
C536379,71053,WHITE METAL LANTERN,-1,2010-12-01 09:41:00,3.39,17850.0,United Kingdom
536380,POST,POSTAGE,1,2010-12-01 09:45:00,18.0,12583.0,France
536381,22139,RETROSPOT TEA SET,2,2010-12-01 09:50:00,4.95,,United Kingdom
536382,22140,FREE GIFT,2,2010-12-01 09:51:00,0.0,12583.0,France
536383,22141,CHRISTMAS CRAFT,3,2010-12-02 10:00:00,1.25,12583.0,France
"""


def test_online_retail_rows_are_filtered_as_the_protocol_says(tmp_path: Path) -> None:
    path = tmp_path / "retail.csv.gz"
    path.write_bytes(gzip.compress(ONLINE_RETAIL.encode()))
    log = read_interactions(path)
    # Kept: two lines of 17850 and the CHRISTMAS CRAFT line; dropped: cancellation, postage,
    # missing customer, zero price.
    assert sorted(zip(log.user_ids.tolist(), log.item_ids.tolist(), strict=True)) == [
        ("12583", "22141"),
        ("17850", "71053"),
        ("17850", "85123A"),
    ]
    assert set(log.event_types.tolist()) == {PURCHASE}
    assert log.descriptions["71053"] == "WHITE METAL LANTERN"
    assert list(log.times) == sorted(log.times)


def test_event_log_csv_and_jsonl_read_the_same(tmp_path: Path) -> None:
    rows = [
        {
            "user_id": "a",
            "item_id": "x",
            "timestamp": "2011-01-02T00:00:00Z",
            "event_type": "click",
        },
        {
            "user_id": "a",
            "item_id": "y",
            "timestamp": 1293000000,
            "event_type": "purchase",
            "quantity": 3,
        },
    ]
    jsonl = tmp_path / "events.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    csv_path = tmp_path / "events.csv"
    csv_path.write_text(
        "user_id,item_id,timestamp,event_type,quantity\n"
        "a,x,2011-01-02T00:00:00Z,click,\n"
        "a,y,1293000000,purchase,3\n"
    )
    for path in (jsonl, csv_path):
        log = read_interactions(path)
        assert log.item_ids.tolist() == ["y", "x"]  # sorted by time
        assert log.event_types.tolist() == [PURCHASE, 2]
        assert log.quantities.tolist() == [3.0, 1.0]


def test_unknown_formats_and_event_types_are_reported(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(ValueError, match="unknown format"):
        read_interactions(bad)
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("user_id,item_id,timestamp,event_type\na,x,2011-01-01,teleport\n")
    with pytest.raises(ValueError, match="event_type"):
        read_interactions(wrong)

"""CSV loading: layouts, flags and error messages that name the flag or the line."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.intent.data import (
    DataError,
    LabeledTexts,
    choose_held_out_intents,
    load_labeled_csv,
    load_response_templates,
)
from services.intent.defaults import DEFAULT_DATA


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_reads_banking77_layout(tmp_path: Path) -> None:
    p = write(
        tmp_path / "b.csv", "text,category\nmy card is late,card_arrival\nfx?,exchange_rate\n"
    )
    data = load_labeled_csv(p)
    assert data.texts == ["my card is late", "fx?"]
    assert data.label_set == ["card_arrival", "exchange_rate"]


def test_reads_shipped_bitext_sample_with_templates() -> None:
    data = load_labeled_csv(DEFAULT_DATA)
    assert len(data) == 4514
    assert len(data.label_set) == 27
    templates = load_response_templates(DEFAULT_DATA, "intent")
    assert set(templates) == set(data.label_set)


def test_custom_columns(tmp_path: Path) -> None:
    p = write(tmp_path / "c.csv", "msg,lab,x\nhello,greet,1\nbye,leave,2\n")
    with pytest.raises(DataError, match="--text-col and --label-col"):
        load_labeled_csv(p)
    assert load_labeled_csv(p, "msg", "lab").labels == ["greet", "leave"]
    with pytest.raises(DataError, match="--label-col: column 'nope'"):
        load_labeled_csv(p, "msg", "nope")
    with pytest.raises(DataError, match="--text-col: column 'nope'"):
        load_labeled_csv(p, "nope", "lab")


def test_errors_name_the_line(tmp_path: Path) -> None:
    p = write(tmp_path / "d.csv", "text,category\nok,a\n,b\n")
    with pytest.raises(DataError, match=r"d\.csv:3: empty 'text'"):
        load_labeled_csv(p)
    q = write(tmp_path / "e.csv", "text,category\nok,a\nfine,\n")
    with pytest.raises(DataError, match=r"e\.csv:3: empty 'category'"):
        load_labeled_csv(q)


def test_missing_and_binary_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="--data: no such file"):
        load_labeled_csv(tmp_path / "missing.csv")
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"text,category\n\xff\xfe,a\n")
    with pytest.raises(DataError, match="not UTF-8"):
        load_labeled_csv(bad)


def test_held_out_intents_are_seeded() -> None:
    labels = [f"i{n}" for n in range(20)]
    first = choose_held_out_intents(labels, 5, seed=0)
    assert first == choose_held_out_intents(labels, 5, seed=0)
    assert len(set(first)) == 5


def test_oos_split_relabels_held_out_test_messages() -> None:
    from services.intent.oos_split import build_oos_split

    train = LabeledTexts(["a1", "a2", "b1", "c1", "d1"], ["a", "a", "b", "c", "d"])
    test = LabeledTexts(["ta", "tb", "tc", "td"], ["a", "b", "c", "d"])
    new_train, new_test, held = build_oos_split(train, test, 2, seed=0, oos_label="oos")
    assert len(held) == 2
    assert not set(held) & set(new_train.labels)
    assert new_test.labels.count("oos") == 2
    assert [lab for lab in new_test.labels if lab != "oos"] == sorted(set("abcd") - set(held))

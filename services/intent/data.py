"""Reading labelled utterances from CSV files (BANKING77, Bitext, or any text/label CSV).

Errors are :class:`DataError` messages that name the flag or the file line to fix.
"""

from __future__ import annotations

import csv
import gzip
import io
import random
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

# Known layouts: (text column, label column).
BANKING77_COLUMNS = ("text", "category")
BITEXT_COLUMNS = ("instruction", "intent")
MAX_TEXT_CHARS = 2000


class DataError(ValueError):
    """A data file or column problem; the message names the flag or file line."""


@dataclass(frozen=True)
class LabeledTexts:
    """Parallel lists of utterances and their intent labels."""

    texts: list[str]
    labels: list[str]

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise ValueError("texts and labels differ in length")

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def label_set(self) -> list[str]:
        """The distinct labels, sorted."""
        return sorted(set(self.labels))

    def subset(self, indices: Sequence[int]) -> LabeledTexts:
        """The rows at ``indices``, in that order."""
        return LabeledTexts([self.texts[i] for i in indices], [self.labels[i] for i in indices])

    def without_labels(self, labels: set[str]) -> LabeledTexts:
        """The rows whose label is not in ``labels``."""
        keep = [i for i, label in enumerate(self.labels) if label not in labels]
        return self.subset(keep)


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def detect_columns(header: Sequence[str]) -> tuple[str, str] | None:
    """The (text, label) columns of a known layout present in ``header``, else None."""
    for text_col, label_col in (BANKING77_COLUMNS, BITEXT_COLUMNS):
        if text_col in header and label_col in header:
            return text_col, label_col
    return None


def iter_csv_rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row) pairs of a CSV file with a header; ``.csv.gz`` is read transparently."""
    if not path.is_file():
        raise DataError(f"--data: no such file: {path}")
    try:
        with _open_text(path) as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames:
                raise DataError(f"{path}:1: empty file, expected a CSV header")
            for row in reader:
                yield reader.line_num, row
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        raise DataError(f"{path}: malformed CSV: {exc}") from None


def read_header(path: Path) -> list[str]:
    """The header row of a CSV file."""
    if not path.is_file():
        raise DataError(f"--data: no such file: {path}")
    try:
        with _open_text(path) as handle:
            header = next(csv.reader(handle), None)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if not header:
        raise DataError(f"{path}:1: empty file, expected a CSV header")
    return header


def resolve_columns(
    path: Path, text_col: str | None = None, label_col: str | None = None
) -> tuple[str, str]:
    """The (text, label) columns to read: the given ones, checked, or the detected layout."""
    header = read_header(path)
    detected = detect_columns(header)
    text_col = text_col or (detected[0] if detected else None)
    label_col = label_col or (detected[1] if detected else None)
    if text_col is None or label_col is None:
        raise DataError(
            f"{path}: unknown CSV layout (columns {', '.join(header)}); "
            "pass --text-col and --label-col"
        )
    if text_col not in header:
        raise DataError(f"--text-col: column {text_col!r} not in {path} (has {', '.join(header)})")
    if label_col not in header:
        raise DataError(
            f"--label-col: column {label_col!r} not in {path} (has {', '.join(header)})"
        )
    return text_col, label_col


def load_labeled_csv(
    path: Path,
    text_col: str | None = None,
    label_col: str | None = None,
    *,
    allow_empty_labels: bool = False,
) -> LabeledTexts:
    """Read utterances and labels from ``path``.

    Without ``text_col``/``label_col`` the layout is detected: BANKING77 (``text,category``) or
    Bitext (``instruction,intent``). Rows with an empty text or label are errors naming the line.
    Bitext has one row per utterance already; duplicates are kept (they are real frequency).
    """
    text_col, label_col = resolve_columns(path, text_col, label_col)
    texts: list[str] = []
    labels: list[str] = []
    for line, row in iter_csv_rows(path):
        text = (row.get(text_col) or "").strip()
        label = (row.get(label_col) or "").strip()
        if not text:
            raise DataError(f"{path}:{line}: empty {text_col!r}")
        if not label and not allow_empty_labels:
            raise DataError(f"{path}:{line}: empty {label_col!r}")
        texts.append(text[:MAX_TEXT_CHARS])
        labels.append(label)
    if not texts:
        raise DataError(f"{path}: no data rows")
    return LabeledTexts(texts, labels)


def stratified_split(
    data: LabeledTexts, fraction: float, seed: int
) -> tuple[LabeledTexts, LabeledTexts]:
    """Split into (train, held-out) with about ``fraction`` of every label held out.

    Labels with a single example stay in training (they cannot be validated anyway).
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError("fraction must be in (0, 1)")
    by_label: dict[str, list[int]] = defaultdict(list)
    for i, label in enumerate(data.labels):
        by_label[label].append(i)
    rng = random.Random(seed)
    train_idx: list[int] = []
    held_idx: list[int] = []
    for label in sorted(by_label):
        idx = by_label[label]
        rng.shuffle(idx)
        n_held = round(len(idx) * fraction) if len(idx) > 1 else 0
        n_held = min(max(n_held, 1 if len(idx) > 1 else 0), len(idx) - 1)
        held_idx.extend(idx[:n_held])
        train_idx.extend(idx[n_held:])
    rng.shuffle(train_idx)
    return data.subset(sorted(train_idx)), data.subset(sorted(held_idx))


def choose_held_out_intents(labels: Sequence[str], count: int, seed: int) -> list[str]:
    """``count`` labels drawn at random (seeded) from the distinct ``labels``, sorted."""
    distinct = sorted(set(labels))
    if count >= len(distinct):
        raise ValueError(f"cannot hold out {count} of {len(distinct)} intents")
    return sorted(random.Random(seed).sample(distinct, count))


def write_labeled_csv(path: Path, data: LabeledTexts) -> None:
    """Write ``text,category`` rows (the BANKING77 layout)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(BANKING77_COLUMNS)
        writer.writerows(zip(data.texts, data.labels, strict=True))


def load_response_templates(
    path: Path, label_col: str, response_col: str = "response"
) -> dict[str, str]:
    """The shortest reference response per label when the CSV has a ``response`` column
    (Bitext), else an empty mapping. Used as the intent's reply template."""
    if response_col not in read_header(path):
        return {}
    best: dict[str, str] = {}
    for _, row in iter_csv_rows(path):
        label = (row.get(label_col) or "").strip()
        response = (row.get(response_col) or "").strip()
        if label and response and (label not in best or len(response) < len(best[label])):
            best[label] = response
    return best

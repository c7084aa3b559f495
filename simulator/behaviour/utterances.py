"""Customer-service messages with known intents, for support conversations.

The default bank is a sample of the Bitext customer-support data set (12 utterances for each of
its 27 intents), shipped in ``data/utterances.csv`` under CDLA-Sharing-1.0
(``data/LICENSE.utterances.txt``). A larger file with the same columns can be loaded instead.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Utterance:
    """One message and its ground-truth intent."""

    text: str
    intent: str
    category: str


@dataclass(frozen=True)
class UtteranceBank:
    """Utterances grouped by intent."""

    by_intent: Mapping[str, tuple[Utterance, ...]]

    @classmethod
    def from_rows(cls, rows: Sequence[Utterance]) -> UtteranceBank:
        grouped: dict[str, list[Utterance]] = {}
        for row in rows:
            grouped.setdefault(row.intent, []).append(row)
        if not grouped:
            raise ValueError("utterances: the bank is empty")
        return cls({k: tuple(v) for k, v in sorted(grouped.items())})

    @classmethod
    def load(cls, path: Path | None = None) -> UtteranceBank:
        """The shipped sample, or a CSV with columns ``text`` (or ``instruction``), ``intent``
        and optionally ``category``."""
        if path is None:
            ref = resources.files("simulator.behaviour").joinpath("data/utterances.csv")
            text = ref.read_text(encoding="utf-8")
        else:
            text = Path(path).read_text(encoding="utf-8")
        reader = csv.DictReader(text.splitlines())
        rows = [
            Utterance(
                text=(row.get("text") or row.get("instruction") or "").strip(),
                intent=row["intent"].strip(),
                category=(row.get("category") or "").strip(),
            )
            for row in reader
        ]
        return cls.from_rows([r for r in rows if r.text and r.intent])

    @property
    def intents(self) -> tuple[str, ...]:
        return tuple(self.by_intent)

    def sample(self, rng: np.random.Generator, intent: str) -> Utterance:
        """A random utterance of ``intent`` (``KeyError`` for an intent the bank lacks)."""
        options = self.by_intent[intent]
        return options[int(rng.integers(len(options)))]

"""Build an honest out-of-scope benchmark from a labelled train/test pair.

``python -m services.intent.oos_split --train TRAIN.csv --test TEST.csv --out DIR``
draws ``--holdout`` intents at random (seeded), writes ``DIR/train.csv`` without them and
``DIR/test.csv`` with their messages relabelled ``--oos-label``. Train on the first, then
``shoptwin eval intent --data DIR/test.csv --oos-label oos`` measures how many truly unseen
requests the calibrated threshold catches, and what that costs the in-scope ones.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from services.intent.data import (
    DataError,
    LabeledTexts,
    choose_held_out_intents,
    load_labeled_csv,
    write_labeled_csv,
)


def build_oos_split(
    train: LabeledTexts, test: LabeledTexts, holdout: int, seed: int, oos_label: str
) -> tuple[LabeledTexts, LabeledTexts, list[str]]:
    """(train without the held-out intents, test with them relabelled, the held-out intents)."""
    held = choose_held_out_intents(train.labels, holdout, seed)
    held_set = set(held)
    new_test = LabeledTexts(
        list(test.texts), [oos_label if label in held_set else label for label in test.labels]
    )
    return train.without_labels(held_set), new_test, held


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=Path, required=True)
    parser.add_argument("--test", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--holdout", type=int, default=10, help="intents to hold out")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--oos-label", default="oos")
    parser.add_argument("--text-col")
    parser.add_argument("--label-col")
    args = parser.parse_args(argv)
    try:
        train = load_labeled_csv(args.train, args.text_col, args.label_col)
        test = load_labeled_csv(args.test, args.text_col, args.label_col)
        new_train, new_test, held = build_oos_split(
            train, test, args.holdout, args.seed, args.oos_label
        )
    except (DataError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write_labeled_csv(args.out / "train.csv", new_train)
    write_labeled_csv(args.out / "test.csv", new_test)
    (args.out / "held_out_intents.txt").write_text("\n".join(held) + "\n", encoding="utf-8")
    n_oos = new_test.labels.count(args.oos_label)
    print(
        f"held out {len(held)} intents: {', '.join(held)}\n"
        f"{args.out / 'train.csv'}: {len(new_train)} rows; "
        f"{args.out / 'test.csv'}: {len(new_test)} rows, {n_oos} labelled {args.oos_label!r}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

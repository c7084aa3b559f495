"""Commands of the recommendation service: ``train``, ``eval`` and ``bench recommendation``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from services.cli.commands import CommandGroups, add_json_flag
from services.runtime.settings import SettingsError


def register(groups: CommandGroups) -> None:
    """Add this service's subcommands to the command groups."""
    train = groups.train.add_parser(
        "recommendation",
        help="train the recommender",
        description="Train the recommender from the Online Retail CSV (gzip or plain), an event "
        "log (CSV or JSONL: user_id,item_id,timestamp,event_type,quantity) or the service's "
        "feedback SQLite database; writes OUT/<version>/.",
    )
    train.add_argument("--data", type=Path, help="interaction log to train on")
    train.add_argument(
        "--train-until", default=None, help="use events before this date (YYYY-MM-DD)"
    )
    train.add_argument(
        "--out",
        type=Path,
        default=None,
        help="model root (default: DATA_DIR/models/recommendation)",
    )
    train.add_argument(
        "--label-days",
        type=float,
        default=None,
        help="validation window cut from the end of the training window (default: 61)",
    )
    train.add_argument(
        "--default",
        action="store_true",
        help="train the default model from the sample shipped with the project (cached)",
    )
    train.add_argument(
        "--data-dir",
        type=Path,
        default=Path(".shoptwin"),
        help="state directory (default: .shoptwin)",
    )
    train.set_defaults(handler=run_train)

    evaluate = groups.eval.add_parser(
        "recommendation",
        help="Recall@K and NDCG@K against baselines",
        description="Full-ranking Recall@K and NDCG@K of a model and of popularity, repeat-buy "
        "and EASE baselines computed in the same run, for all purchases and new items only.",
    )
    evaluate.add_argument("--model", type=Path, required=True, help="model directory")
    evaluate.add_argument("--data", type=Path, required=True, help="interaction log")
    evaluate.add_argument("--test-from", required=True, help="first test day (YYYY-MM-DD)")
    evaluate.add_argument("--test-until", required=True, help="last test day, inclusive")
    evaluate.add_argument("--k", type=int, default=20, help="list length (default: 20)")
    evaluate.add_argument(
        "--exclude-seen",
        action="store_true",
        help="show only the new-items metrics (training purchases removed from ranking, targets)",
    )
    add_json_flag(evaluate)
    evaluate.set_defaults(handler=run_eval)

    bench = groups.bench.add_parser(
        "recommendation",
        help="Recommend throughput and latency beside bare echo",
        description="Generate a synthetic low-rank model with --items items, serve it in a child "
        "process and measure Recommend over gRPC at several concurrencies, with the echo RPC "
        "measured in the same run.",
    )
    bench.add_argument(
        "--items", type=int, default=100_000, help="catalogue size (default: 100000)"
    )
    bench.add_argument(
        "--users", type=int, default=10_000, help="users with history (default: 10000)"
    )
    bench.add_argument(
        "--concurrency",
        default="1,8,32,128",
        help="in-flight calls per level (default: 1,8,32,128)",
    )
    bench.add_argument("--duration", type=float, default=3.0, help="seconds per level (default: 3)")
    bench.add_argument("--k", type=int, default=20, help="items per Recommend (default: 20)")
    bench.add_argument(
        "--factors",
        choices=["svd", "random"],
        default="svd",
        help="item factors: PureSVD of the synthetic histories, as training makes them, or "
        "i.i.d. Gaussian (the worst case for the norm-ordered top-k) (default: svd)",
    )
    bench.add_argument(
        "--workdir", type=Path, default=None, help="where to write the model (default: a temp dir)"
    )
    add_json_flag(bench)
    bench.set_defaults(handler=run_bench)


def _date(flag: str, text: str) -> float:
    from services.recommendation.data import parse_date

    try:
        return parse_date(text)
    except ValueError as exc:
        raise SettingsError(f"{flag}: {exc}") from None


def run_train(args: argparse.Namespace) -> int:
    import time

    from services.recommendation.data import read_interactions
    from services.recommendation.defaults import ensure_default_model
    from services.recommendation.train import TrainConfig, save_versioned, train

    if args.default:
        path = ensure_default_model(args.data_dir)
        print(f"default model: {path}")
        return 0
    if args.data is None:
        raise SettingsError("--data: required (or use --default)")
    if not args.data.is_file():
        raise SettingsError(f"--data: file not found: {args.data}")
    until = _date("--train-until", args.train_until) if args.train_until else None
    config = TrainConfig() if args.label_days is None else TrainConfig(label_days=args.label_days)
    if config.label_days <= 0:
        raise SettingsError("--label-days: must be positive")
    started = time.monotonic()
    try:
        log = read_interactions(args.data)
        model = train(log, train_until=until, config=config, data_name=str(args.data))
    except ValueError as exc:
        raise SettingsError(f"--data: {exc}") from None
    out = args.out or args.data_dir / "models" / "recommendation"
    directory = save_versioned(model, out)
    print(json.dumps(model.metadata.metrics, indent=2))
    print(
        f"model {model.metadata.version} ({model.metadata.num_users} users, "
        f"{model.metadata.num_items} items) written to {directory} in "
        f"{time.monotonic() - started:.1f} s"
    )
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from services.recommendation.data import end_of_day, read_interactions
    from services.recommendation.evaluate import evaluate
    from services.recommendation.model import RecommenderModel
    from services.runtime.bench import render_table, run_metadata, write_json

    if not 1 <= args.k <= 1000:
        raise SettingsError("--k: must be in 1..1000")
    test_from = _date("--test-from", args.test_from)
    _date("--test-until", args.test_until)
    test_until = end_of_day(args.test_until)
    try:
        model = RecommenderModel.load(args.model)
    except (ValueError, OSError) as exc:
        raise SettingsError(f"--model: {exc}") from None
    if not args.data.is_file():
        raise SettingsError(f"--data: file not found: {args.data}")
    if test_from < model.metadata.reference_time:
        raise SettingsError(
            "--test-from: must not be before the end of the model's training window"
        )
    log = read_interactions(args.data)
    rows = [
        r.__dict__
        for r in evaluate(model, log, test_from=test_from, test_until=test_until, k=args.k)
    ]
    k = args.k
    renamed = [
        {
            "model": r["model"],
            f"recall@{k}": r["recall_all"],
            f"ndcg@{k}": r["ndcg_all"],
            "users": r["users_all"],
            f"recall@{k} new": r["recall_new"],
            f"ndcg@{k} new": r["ndcg_new"],
            "users new": r["users_new"],
        }
        for r in rows
    ]
    columns = (
        ["model", f"recall@{k} new", f"ndcg@{k} new", "users new"]
        if args.exclude_seen
        else [
            "model",
            f"recall@{k}",
            f"ndcg@{k}",
            "users",
            f"recall@{k} new",
            f"ndcg@{k} new",
            "users new",
        ]
    )
    payload = {
        "meta": run_metadata(vars(args) | {"handler": None}),
        "model": model.metadata.version,
        "k": k,
        "rows": [{c: r[c] for c in columns} for r in renamed],
    }
    if args.json_path == Path("-"):
        json.dump(payload, sys.stdout, indent=2)
        print()
    else:
        print(render_table(renamed, columns))
        if args.json_path:
            write_json(args.json_path, payload)
    return 0


def run_bench(args: argparse.Namespace) -> int:
    from services.echo.cli import parse_int_list
    from services.recommendation.bench import run_benchmark

    concurrencies = parse_int_list("--concurrency", args.concurrency)
    if args.items < 100:
        raise SettingsError("--items: must be at least 100")
    if args.duration <= 0:
        raise SettingsError("--duration: must be positive")
    return run_benchmark(args, concurrencies)

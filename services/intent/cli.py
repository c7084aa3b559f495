"""Commands of the intent service: ``train intent``, ``eval intent``, ``bench intent``."""

from __future__ import annotations

import argparse
from pathlib import Path

from services.cli.commands import CommandGroups, add_json_flag
from services.runtime.settings import SettingsError


def register(groups: CommandGroups) -> None:
    """Add this service's subcommands to the command groups."""
    train = groups.train.add_parser(
        "intent",
        help="fine-tune the intent classifier on a CSV of messages and labels",
        description=(
            "Fine-tune all-MiniLM-L6-v2 with a linear head on a CSV (BANKING77 text,category; "
            "Bitext instruction,intent; or any CSV with --text-col/--label-col), calibrate it on "
            "a held-out split, export ONNX fp32+int8 and write OUT/<version>/."
        ),
    )
    train.add_argument("--data", type=Path, help="training CSV (.csv or .csv.gz)")
    train.add_argument("--text-col", help="text column (default: detected)")
    train.add_argument("--label-col", help="label column (default: detected)")
    train.add_argument("--out", type=Path, help="parent directory of the versioned model dir")
    train.add_argument("--version", help="model version name (default: intent-<UTC time>)")
    train.add_argument(
        "--default",
        action="store_true",
        help="build the default model from the shipped Bitext sample into "
        "<data-dir>/models/intent (no-op when it exists)",
    )
    train.add_argument("--data-dir", type=Path, default=Path(".shoptwin"), help="for --default")
    train.add_argument(
        "--epochs", type=int, default=4, help="0 with --init-from: re-export and re-calibrate only"
    )
    train.add_argument("--batch-size", type=int, default=32)
    train.add_argument("--lr", type=float, default=1e-4, help="encoder learning rate")
    train.add_argument("--head-lr", type=float, default=3e-3, help="head learning rate")
    train.add_argument(
        "--init-from", type=Path, help="continue training this model dir (needs torch_state.pt)"
    )
    train.add_argument(
        "--save-torch", action="store_true", help="also save torch weights (for --init-from)"
    )
    train.add_argument(
        "--frozen-layers", type=int, default=0, help="bottom encoder layers to keep frozen (0..6)"
    )
    train.add_argument("--val-fraction", type=float, default=0.06)
    train.add_argument(
        "--oos-reject-rate",
        type=float,
        default=0.05,
        help="share of in-scope validation messages below the out-of-scope threshold",
    )
    train.add_argument("--exclude-intents", default="", help="comma-separated labels to drop")
    train.add_argument("--threads", type=int, default=2, help="torch and ONNX threads")
    train.add_argument("--seed", type=int, default=13)
    train.add_argument("--max-steps", type=int, default=None, help="stop early (smoke runs)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(handler=run_train)

    ev = groups.eval.add_parser(
        "intent",
        help="accuracy, macro-F1 and out-of-scope metrics of an intent model on a CSV",
        description="Evaluate a trained intent model (the served ONNX graph) on a labelled CSV.",
    )
    ev.add_argument("--model", type=Path, required=True, help="model dir (or a parent of them)")
    ev.add_argument("--data", type=Path, required=True, help="test CSV")
    ev.add_argument("--text-col", help="text column (default: detected)")
    ev.add_argument("--label-col", help="label column (default: detected)")
    ev.add_argument("--oos-label", help="label that marks out-of-scope test messages (e.g. oos)")
    ev.add_argument("--variant", choices=("int8", "fp32"), help="default: the model's choice")
    ev.add_argument("--threads", type=int, default=2)
    add_json_flag(ev)
    ev.set_defaults(handler=run_eval)

    bench = groups.bench.add_parser(
        "intent",
        help="in-process latency and gRPC throughput of intent classification beside echo",
        description=(
            "Single-message latency in process (fp32 and int8 ONNX, and the whole pipeline), "
            "then Classify QPS over gRPC against `shoptwin serve intent` in a child process, "
            "beside the bare echo RPC measured in the same run."
        ),
    )
    bench.add_argument("--model", type=Path, help="model dir (default: newest under --data-dir)")
    bench.add_argument("--data-dir", type=Path, default=Path(".shoptwin"))
    bench.add_argument("--calls", type=int, default=500, help="in-process calls per variant")
    bench.add_argument("--threads", type=int, default=1, help="ONNX intra-op threads")
    bench.add_argument("--concurrency", default="1,8,32", help="gRPC in-flight call counts")
    bench.add_argument("--duration", type=float, default=3.0, help="seconds per gRPC level")
    add_json_flag(bench)
    bench.set_defaults(handler=run_bench)


def run_train(args: argparse.Namespace) -> int:
    from services.intent.data import (
        DataError,
        load_labeled_csv,
        load_response_templates,
        resolve_columns,
    )
    from services.intent.defaults import ensure_default_model
    from services.intent.training import TrainConfig, train_intent_model

    if args.default:
        if args.data or args.out:
            raise SettingsError("--default: do not combine with --data or --out")
        path = ensure_default_model(args.data_dir, progress=not args.no_progress)
        print(path)
        return 0
    if args.data is None:
        raise SettingsError("--data: required (or pass --default)")
    if args.out is None:
        raise SettingsError("--out: required")
    if args.epochs < 0 or (args.epochs == 0 and args.init_from is None):
        # 0 epochs re-exports, re-quantises and re-calibrates an --init-from model as is.
        raise SettingsError("--epochs: must be >= 1 (or 0 with --init-from: re-export only)")
    if args.batch_size < 2:
        raise SettingsError("--batch-size: must be >= 2")
    if not 0.0 < args.val_fraction < 0.5:
        raise SettingsError("--val-fraction: must be in (0, 0.5)")
    if not 0.0 <= args.oos_reject_rate < 0.5:
        raise SettingsError("--oos-reject-rate: must be in [0, 0.5)")
    if not 0 <= args.frozen_layers <= 6:
        raise SettingsError("--frozen-layers: must be in 0..6")
    if args.threads < 1:
        raise SettingsError("--threads: must be >= 1")
    try:
        text_col, label_col = resolve_columns(args.data, args.text_col, args.label_col)
        data = load_labeled_csv(args.data, text_col, label_col)
        templates = load_response_templates(args.data, label_col)
    except DataError as exc:
        raise SettingsError(str(exc)) from None
    excluded = {x.strip() for x in args.exclude_intents.split(",") if x.strip()}
    unknown = excluded - set(data.label_set)
    if unknown:
        raise SettingsError(f"--exclude-intents: not labels of {args.data}: {sorted(unknown)}")
    if excluded:
        data = data.without_labels(excluded)
    config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        encoder_lr=args.lr,
        head_lr=args.head_lr,
        save_torch_state=args.save_torch,
        frozen_layers=args.frozen_layers,
        val_fraction=args.val_fraction,
        oos_reject_rate=args.oos_reject_rate,
        threads=args.threads,
        seed=args.seed,
        max_steps=args.max_steps,
    )
    try:
        result = train_intent_model(
            data,
            args.out,
            config,
            version=args.version,
            progress=not args.no_progress,
            source=str(args.data),
            templates=templates,
            init_from=args.init_from,
        )
    except FileExistsError as exc:
        raise SettingsError(str(exc)) from None
    except ValueError as exc:
        raise SettingsError(f"--data: {exc}") from None
    print(result.model_dir)
    return 0


def run_eval(args: argparse.Namespace) -> int:
    import json
    import sys

    from services.intent.data import DataError, load_labeled_csv
    from services.intent.evaluation import evaluate
    from services.intent.inference import IntentModel, ModelFormatError, resolve_model_dir
    from services.runtime.bench import run_metadata, write_json

    model_dir = resolve_model_dir(args.model)
    if model_dir is None:
        raise SettingsError(f"--model: no trained intent model at {args.model}")
    try:
        model = IntentModel(model_dir, variant=args.variant, threads=args.threads)
        data = load_labeled_csv(args.data, args.text_col, args.label_col)
        report = evaluate(model, data, oos_label=args.oos_label)
    except ModelFormatError as exc:
        raise SettingsError(f"--model: {exc}") from None
    except DataError as exc:
        raise SettingsError(str(exc)) from None
    except ValueError as exc:
        raise SettingsError(f"--data: {exc}") from None
    payload = {
        "meta": run_metadata(vars(args) | {"handler": None}),
        "model": {"dir": str(model_dir), "version": model.version, "variant": model.variant},
        "metrics": report,
    }
    if args.json_path == Path("-"):
        json.dump(payload, sys.stdout, indent=2)
        print()
        return 0
    print(f"model {model.version} ({model.variant}) on {args.data}")
    for key, value in report.items():
        print(f"  {key:28s} {value:.4f}" if isinstance(value, float) else f"  {key:28s} {value}")
    if args.json_path:
        write_json(args.json_path, payload)
    return 0


def run_bench(args: argparse.Namespace) -> int:
    import json
    import sys

    from services.echo.cli import parse_int_list
    from services.intent.bench import run_intent_bench
    from services.intent.inference import resolve_model_dir
    from services.runtime.bench import render_table, run_metadata, write_json

    concurrencies = parse_int_list("--concurrency", args.concurrency)
    if args.duration <= 0:
        raise SettingsError("--duration: must be positive")
    if args.calls < 10:
        raise SettingsError("--calls: must be >= 10")
    where = args.model or args.data_dir / "models" / "intent"
    model_dir = resolve_model_dir(where)
    if model_dir is None:
        raise SettingsError(
            f"--model: no trained intent model at {where} (run `shoptwin train intent --default`)"
        )
    result = run_intent_bench(
        model_dir,
        calls=args.calls,
        threads=args.threads,
        concurrencies=concurrencies,
        duration_s=args.duration,
    )
    payload = {"meta": run_metadata(vars(args) | {"handler": None}), **result}
    if args.json_path == Path("-"):
        json.dump(payload, sys.stdout, indent=2)
        print()
        return 0
    print(f"model {model_dir}")
    print(render_table(result["in_process"], ["label", "calls", "p50_ms", "p90_ms", "p99_ms"]))
    print()
    print(
        render_table(result["grpc"], ["label", "concurrency", "qps", "p50_ms", "p99_ms", "errors"])
    )
    print()
    print(
        render_table(
            result["ratios"], ["concurrency", "intent_qps", "echo_qps", "intent_over_echo"]
        )
    )
    if args.json_path:
        write_json(args.json_path, payload)
    return 0

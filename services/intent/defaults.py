"""The default intent model: trained from the Bitext sample shipped in this package, so the
product runs without any external data. Cached under the data directory by version."""

from __future__ import annotations

import fcntl
from collections.abc import Callable
from pathlib import Path

from services.intent.data import load_labeled_csv, load_response_templates
from services.intent.inference import META_FILE
from services.intent.training import TrainConfig, train_intent_model

RESOURCES = Path(__file__).resolve().parent / "resources"
DEFAULT_DATA = RESOURCES / "bitext_customer_support_sample.csv.gz"
# Bump when the default data or recipe changes so cached models are rebuilt.
DEFAULT_VERSION = "default-bitext-v1"
# Bitext is templated: two short epochs reach ~99 % validation accuracy, in minutes on 2 cores.
DEFAULT_CONFIG = TrainConfig(epochs=2, max_length=48, frozen_layers=2, val_fraction=0.1)


def default_model_dir(data_dir: Path) -> Path:
    """Where the default model lives under ``data_dir``."""
    return data_dir / "models" / "intent" / DEFAULT_VERSION


def ensure_default_model(
    data_dir: Path,
    *,
    progress: bool = True,
    log: Callable[[str], None] = print,
    data_path: Path = DEFAULT_DATA,
    config: TrainConfig = DEFAULT_CONFIG,
) -> Path:
    """The default model directory, training it first when it does not exist yet.

    A lock file serialises concurrent callers (``make run`` starting several processes): the
    second one waits and then finds the finished model. ``data_path`` and ``config`` exist for
    tests; the product uses the shipped sample and recipe.
    """
    target = default_model_dir(data_dir)
    if (target / META_FILE).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{DEFAULT_VERSION}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / META_FILE).is_file():
            return target
        data = load_labeled_csv(data_path)
        templates = load_response_templates(data_path, "intent")
        log(f"training the default intent model from {data_path.name} into {target}")
        train_intent_model(
            data,
            target.parent,
            config,
            version=DEFAULT_VERSION,
            progress=progress,
            log=log,
            source=f"{data_path.name} (shipped, CDLA-Sharing-1.0)",
            templates=templates,
        )
    return target

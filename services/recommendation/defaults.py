"""The default model: trained from the Online Retail sample shipped in this package, so the
product runs without any external data. Trained once per data directory and then reused."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from services.recommendation.train import TrainConfig

SAMPLE_PATH = Path(__file__).parent / "sample" / "online_retail_sample.csv.gz"


def default_config() -> TrainConfig:
    """Settings for the sample: the values the full tuning picks on Online Retail for the
    item-item part (so only the blend weights are tuned), to keep first start-up quick."""
    from services.recommendation.train import TrainConfig

    return TrainConfig(
        ease_lambda_grid=(300.0,),
        tau_input_grid=(120.0,),
        tau_matrix_grid=(120.0,),
        validation_windows=1,
    )


def default_model_root(data_dir: Path) -> Path:
    """Where the service looks for models by default."""
    return data_dir / "models" / "recommendation"


def ensure_default_model(data_dir: Path, *, progress: bool = True) -> Path:
    """The newest model under ``<data_dir>/models/recommendation``; trains one from the shipped
    sample into ``<data_dir>/models/recommendation/<version>`` when there is none."""
    from services.recommendation.data import read_interactions
    from services.recommendation.train import newest_model_dir, save_versioned, train

    root = default_model_root(data_dir)
    existing = newest_model_dir(root)
    if existing is not None:
        return existing
    model = train(
        read_interactions(SAMPLE_PATH),
        train_until=None,
        config=default_config(),
        data_name=f"{SAMPLE_PATH.name} (shipped sample, CC BY 4.0)",
        progress=progress,
    )
    return save_versioned(model, root)

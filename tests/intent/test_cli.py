"""The train/eval commands: flags, error messages naming the flag or line, JSON output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.cli.main import main


@pytest.fixture(autouse=True)
def keep_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    # main() points structlog at the sys.stdout of the moment, which capsys closes after the
    # test; later tests in this process would then log into a closed file.
    monkeypatch.setattr("services.cli.main.configure_logging", lambda *_a, **_k: None)


def test_train_errors_name_the_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv_path = tmp_path / "d.csv"
    csv_path.write_text("msg,lab\nhello,a\n", encoding="utf-8")
    out = tmp_path / "m"
    assert main(["train", "intent", "--out", str(out)]) == 2
    assert "--data: required" in capsys.readouterr().err
    args = ["train", "intent", "--data", str(csv_path), "--out", str(out)]
    assert main(args) == 2
    assert "--text-col and --label-col" in capsys.readouterr().err
    assert main([*args, "--text-col", "msg", "--label-col", "nope"]) == 2
    assert "--label-col: column 'nope'" in capsys.readouterr().err
    assert main([*args, "--epochs", "0"]) == 2
    assert "--epochs" in capsys.readouterr().err
    assert main(["train", "intent", "--data", str(tmp_path / "missing.csv"), "--out", "x"]) == 2
    assert "--data: no such file" in capsys.readouterr().err


def test_eval_reports_metrics_as_json(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    test_csv = tmp_path / "test.csv"
    test_csv.write_text(
        "text,category\n"
        "where is my package 12345678,track_order\n"
        "I want my money back,get_refund\n"
        "how tall is mount everest,oos\n",
        encoding="utf-8",
    )
    model = str(tiny_model_dir.parent)
    assert main(["eval", "intent", "--model", model, "--data", str(test_csv)]) == 2
    assert "--oos-label" in capsys.readouterr().err  # 'oos' is unknown to the model
    argv = ["eval", "intent", "--model", model, "--data", str(test_csv), "--oos-label", "oos"]
    assert main([*argv, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model"]["version"] == "tiny-v1"
    metrics = report["metrics"]
    assert metrics["accuracy"] == 1.0
    assert metrics["oos_count"] == 1.0
    assert set(metrics) >= {"macro_f1", "oos_recall", "in_scope_accuracy", "threshold"}
    assert main(["eval", "intent", "--model", str(tmp_path), "--data", str(test_csv)]) == 2
    assert "--model: no trained intent model" in capsys.readouterr().err

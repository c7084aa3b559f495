"""Fine-tuning the sentence encoder with a linear intent head, then calibrating it and
exporting it to ONNX (fp32 and int8) as a versioned model directory."""

from __future__ import annotations

import copy
import json
import math
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from services.intent.calibration import (
    expected_calibration_error,
    fit_temperature,
    pick_threshold,
    softmax,
)
from services.intent.data import LabeledTexts, stratified_split
from services.intent.encoder import ENCODER_NAME, default_encoder_path, load_tokenizer
from services.intent.inference import TEMPLATES_FILE
from services.intent.metrics import classification_metrics

if TYPE_CHECKING:
    import torch

MODEL_KIND = "minilm-finetuned-onnx"
META_FILE = "meta.json"
FP32_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
TOKENIZER_FILE = "tokenizer.json"
TORCH_STATE_FILE = "torch_state.pt"


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run."""

    epochs: int = 6
    batch_size: int = 32
    encoder_lr: float = 1e-4
    head_lr: float = 3e-3
    weight_decay: float = 0.01
    warmup_fraction: float = 0.06
    label_smoothing: float = 0.1
    dropout: float = 0.1
    max_length: int = 64  # tokens while training; BANKING77's longest is ~100
    serve_max_length: int = 128  # tokens at inference (messages up to 2,000 characters)
    val_fraction: float = 0.06
    oos_reject_rate: float = 0.05  # in-scope validation share below the OOS threshold
    # Cap of the threshold: on templated data (Bitext) validation is perfectly separated and
    # the quantile sits at 0.99999, which would flag nearly every real message out of scope.
    max_oos_threshold: float = 0.9
    # Serve int8 unless it is worse than fp32 on validation by more than this AND by more than
    # the validation set can resolve (see ``int8_holds``).
    int8_max_drop: float = 0.005
    freeze_word_embeddings: bool = True  # 12M of 22M parameters; freezing halves step time
    frozen_layers: int = 0  # bottom transformer layers kept frozen (no backward through them)
    seed: int = 13
    threads: int = 2
    max_steps: int | None = None  # cap for smoke runs
    save_torch_state: bool = False  # also write torch_state.pt (to continue training later)


@dataclass
class TrainResult:
    model_dir: Path
    metrics: dict[str, float] = field(default_factory=dict)


def new_version() -> str:
    """A sortable version string, e.g. ``intent-20250101-120000``."""
    return datetime.now(UTC).strftime("intent-%Y%m%d-%H%M%S")


def _seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _build_net(encoder_path: Path, n_labels: int, dropout: float) -> torch.nn.Module:
    import torch
    from transformers import AutoModel

    class IntentNet(torch.nn.Module):
        """Encoder -> masked mean pooling -> dropout -> linear head (logits)."""

        def __init__(self) -> None:
            super().__init__()
            self.encoder = AutoModel.from_pretrained(str(encoder_path))
            hidden = int(self.encoder.config.hidden_size)
            self.dropout = torch.nn.Dropout(dropout)
            self.head = torch.nn.Linear(hidden, n_labels)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            states = self.encoder(input_ids=input_ids, attention_mask=attention_mask)[0]
            mask = attention_mask.unsqueeze(-1).to(states.dtype)
            pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-6)
            return self.head(self.dropout(pooled))

    return IntentNet()


def length_bucketed_batches(
    lengths: Sequence[int], batch_size: int, rng: random.Random, *, pool: int = 50
) -> list[list[int]]:
    """Batches of indices of similar length (less padding), in random order.

    Indices are shuffled, cut into pools of ``pool`` batches, sorted by length inside each pool,
    batched, and the batches shuffled: near-sorted for speed, still random for SGD.
    """
    order = list(range(len(lengths)))
    rng.shuffle(order)
    batches: list[list[int]] = []
    chunk = batch_size * pool
    for start in range(0, len(order), chunk):
        part = sorted(order[start : start + chunk], key=lambda i: lengths[i])
        batches.extend(part[j : j + batch_size] for j in range(0, len(part), batch_size))
    rng.shuffle(batches)
    return batches


def pad_batch(ids: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, attention_mask) int64 arrays padded with 0 to the longest sequence."""
    width = max(len(x) for x in ids)
    input_ids = np.zeros((len(ids), width), dtype=np.int64)
    mask = np.zeros((len(ids), width), dtype=np.int64)
    for row, seq in enumerate(ids):
        input_ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    return input_ids, mask


def _torch_logits(net: torch.nn.Module, ids: list[list[int]], batch_size: int = 128) -> np.ndarray:
    import torch

    net.eval()
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out = np.zeros((len(ids), 0), dtype=np.float32)
    chunks: list[np.ndarray] = []
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            sel = order[start : start + batch_size]
            input_ids, mask = pad_batch([ids[i] for i in sel])
            chunks.append(net(torch.from_numpy(input_ids), torch.from_numpy(mask)).numpy())
    stacked = np.concatenate(chunks) if chunks else out
    result = np.empty_like(stacked)
    result[np.asarray(order)] = stacked
    return result


def export_onnx(net: torch.nn.Module, path: Path) -> None:
    """Export ``net`` (input_ids, attention_mask -> logits) with dynamic batch and length."""
    import torch

    net.eval()
    example = (torch.ones((2, 8), dtype=torch.int64), torch.ones((2, 8), dtype=torch.int64))
    torch.onnx.export(
        net,
        example,
        str(path),
        input_names=["input_ids", "attention_mask"],
        output_names=["logits"],
        dynamic_axes={
            "input_ids": {0: "batch", 1: "sequence"},
            "attention_mask": {0: "batch", 1: "sequence"},
            "logits": {0: "batch"},
        },
        opset_version=17,
        dynamo=False,
    )


def quantize_int8(src: Path, dst: Path) -> None:
    """Dynamic int8 quantisation (per-channel weights) of the MatMul nodes."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Per-channel weight scales: on BANKING77 this keeps int8 within ~0.2 points of fp32,
    # where one scale per tensor lost ~0.4. Only MatMuls: the word-embedding Gather is a
    # lookup, so quantising it saves no time and only loses precision.
    quantize_dynamic(
        str(src),
        str(dst),
        weight_type=QuantType.QInt8,
        per_channel=True,
        op_types_to_quantize=["MatMul"],
    )


def int8_holds(fp32_correct: np.ndarray, int8_correct: np.ndarray, max_drop: float) -> bool:
    """Whether int8 keeps fp32's accuracy on validation: its drop is at most ``max_drop``, or
    the drop is not significant (one-sided exact McNemar test on the messages the two
    variants disagree on, p >= 0.05).

    A few hundred validation messages cannot resolve a half-point drop (4 messages in 600),
    so a bare threshold would pick the variant by noise; the test only refuses int8 when the
    validation set shows it is worse.
    """
    n = len(fp32_correct)
    if n == 0:
        return True
    drop = float(fp32_correct.mean() - int8_correct.mean())
    if drop <= max_drop:
        return True
    only_fp32 = int(np.sum(fp32_correct & ~int8_correct))
    only_int8 = int(np.sum(int8_correct & ~fp32_correct))
    discordant = only_fp32 + only_int8
    # P(X >= only_fp32) for X ~ Binomial(discordant, 1/2): how likely a split at least this
    # lopsided is if the two variants were equally accurate. Integer numerator and
    # denominator: Python's int division stays exact where 2.0**n would overflow (n > 1023).
    p_value = sum(math.comb(discordant, k) for k in range(only_fp32, discordant + 1)) / (
        2**discordant
    )
    return p_value >= 0.05


def train_intent_model(
    data: LabeledTexts,
    out_root: Path,
    config: TrainConfig | None = None,
    *,
    version: str | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    source: str = "",
    templates: dict[str, str] | None = None,
    init_from: Path | None = None,
) -> TrainResult:
    """Fine-tune, calibrate and export a model on ``data``; write ``out_root/<version>/``.

    A stratified ``config.val_fraction`` of ``data`` is held out: it picks the best epoch,
    fits the temperature, sets the out-of-scope threshold, chooses int8 vs fp32 and gives the
    recorded validation metrics. The directory is written under a temporary name and renamed
    when complete, so a half-written model is never picked up.
    """
    import torch
    from tqdm import tqdm

    config = config or TrainConfig()
    torch.set_num_threads(config.threads)
    _seed_everything(config.seed)
    started = time.monotonic()
    labels = data.label_set
    if len(labels) < 2:
        raise ValueError("need at least two distinct labels to train")
    label_index = {label: i for i, label in enumerate(labels)}
    train, val = stratified_split(data, config.val_fraction, config.seed)
    encoder_path = default_encoder_path()
    tokenizer = load_tokenizer(encoder_path / TOKENIZER_FILE, config.max_length)
    train_ids = [e.ids for e in tokenizer.encode_batch(train.texts)]
    val_ids = [e.ids for e in tokenizer.encode_batch(val.texts)]
    train_y = np.asarray([label_index[x] for x in train.labels], dtype=np.int64)
    val_y = np.asarray([label_index[x] for x in val.labels], dtype=np.int64)
    log(
        f"training on {len(train)} messages, validating on {len(val)}, {len(labels)} intents, "
        f"{config.epochs} epochs"
    )

    net = _build_net(encoder_path, len(labels), config.dropout)
    if init_from is not None:
        # Continue training a previous model (same labels): its weights replace the pretrained
        # encoder and the fresh head.
        previous = json.loads((init_from / META_FILE).read_text(encoding="utf-8"))
        if previous["labels"] != labels:
            raise ValueError(f"{init_from} was trained on other labels; cannot continue it")
        state_path = init_from / TORCH_STATE_FILE
        if not state_path.is_file():
            raise ValueError(f"{state_path}: missing (train with --save-torch to continue later)")
        net.load_state_dict(torch.load(state_path, weights_only=True))
    if config.freeze_word_embeddings:
        net.encoder.embeddings.word_embeddings.weight.requires_grad_(False)  # type: ignore[union-attr]
    if config.frozen_layers > 0:
        # With the embeddings and the bottom layers frozen, autograd stops at the first
        # trainable layer: the frozen ones cost a forward pass only.
        for p in net.encoder.embeddings.parameters():  # type: ignore[union-attr]
            p.requires_grad_(False)
        for layer in net.encoder.encoder.layer[: config.frozen_layers]:  # type: ignore[union-attr,index]
            for p in layer.parameters():
                p.requires_grad_(False)
    head_params = list(net.head.parameters())  # type: ignore[union-attr]
    head_ids = {id(p) for p in head_params}
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, p in net.named_parameters():
        if id(p) in head_ids or not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "LayerNorm" in name else decay).append(p)
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "lr": config.encoder_lr, "weight_decay": config.weight_decay},
            {"params": no_decay, "lr": config.encoder_lr, "weight_decay": 0.0},
            {"params": head_params, "lr": config.head_lr, "weight_decay": config.weight_decay},
        ]
    )
    rng = random.Random(config.seed)
    lengths = [len(x) for x in train_ids]
    steps_per_epoch = math.ceil(len(train_ids) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    warmup = max(1, int(total_steps * config.warmup_fraction))

    def lr_factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    best_acc, best_state, best_epoch = -1.0, None, 0
    history: list[dict[str, float]] = []
    step = 0
    for epoch in range(1, config.epochs + 1):
        net.train()
        batches = length_bucketed_batches(lengths, config.batch_size, rng)
        bar = tqdm(batches, desc=f"epoch {epoch}/{config.epochs}", disable=not progress)
        running = 0.0
        for n, batch in enumerate(bar, start=1):
            if step >= total_steps:
                break
            input_ids, mask = pad_batch([train_ids[i] for i in batch])
            logits = net(torch.from_numpy(input_ids), torch.from_numpy(mask))
            loss = loss_fn(logits, torch.from_numpy(train_y[batch]))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            step += 1
            running += float(loss.detach())
            if n % 20 == 0:
                bar.set_postfix(loss=f"{running / n:.3f}")
        val_logits = _torch_logits(net, val_ids) if val_ids else np.zeros((0, len(labels)))
        val_acc = float((val_logits.argmax(1) == val_y).mean()) if len(val_y) else 0.0
        history.append(
            {"epoch": epoch, "train_loss": running / max(1, len(batches)), "val_accuracy": val_acc}
        )
        mean_loss = running / max(1, len(batches))
        log(f"epoch {epoch}: train loss {mean_loss:.4f}, val accuracy {val_acc:.4f}")
        if val_acc > best_acc:
            best_acc, best_epoch = val_acc, epoch
            best_state = copy.deepcopy(net.state_dict())
        if step >= total_steps:
            break
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()

    version = version or new_version()
    out_root.mkdir(parents=True, exist_ok=True)
    final_dir = out_root / version
    if final_dir.exists():
        raise FileExistsError(f"--out: model directory already exists: {final_dir}")
    tmp_dir = out_root / f".{version}.partial"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    tmp_dir.mkdir()
    export_onnx(net, tmp_dir / FP32_FILE)
    if config.save_torch_state:
        torch.save(net.state_dict(), tmp_dir / TORCH_STATE_FILE)
    quantize_int8(tmp_dir / FP32_FILE, tmp_dir / INT8_FILE)
    shutil.copy(encoder_path / TOKENIZER_FILE, tmp_dir / TOKENIZER_FILE)

    # Calibrate on what is actually served: the ONNX graphs, with the serving tokenizer.
    from services.intent.inference import OnnxClassifier

    serve_tok = load_tokenizer(tmp_dir / TOKENIZER_FILE, config.serve_max_length)
    variant_logits: dict[str, np.ndarray] = {}
    for variant, filename in (("fp32", FP32_FILE), ("int8", INT8_FILE)):
        clf = OnnxClassifier(tmp_dir / filename, serve_tok, threads=config.threads)
        variant_logits[variant] = clf.logits(val.texts) if len(val) else np.zeros((0, len(labels)))
    correct = {v: lg.argmax(1) == val_y for v, lg in variant_logits.items()}
    val_acc_by_variant = {v: float(c.mean()) if len(val_y) else 0.0 for v, c in correct.items()}
    variant = (
        "int8" if int8_holds(correct["fp32"], correct["int8"], config.int8_max_drop) else "fp32"
    )
    chosen = variant_logits[variant]
    temperature = fit_temperature(chosen, val_y) if len(val_y) else 1.0
    probs = softmax(chosen, temperature) if len(val_y) else np.zeros((0, len(labels)))
    threshold = (
        min(pick_threshold(probs.max(axis=1), config.oos_reject_rate), config.max_oos_threshold)
        if len(val_y)
        else 0.0
    )
    metrics: dict[str, float] = {}
    if len(val_y):
        cm = classification_metrics(val_y, chosen.argmax(1), len(labels))
        metrics = {
            "val_accuracy": cm["accuracy"],
            "val_macro_f1": cm["macro_f1"],
            "val_accuracy_fp32": val_acc_by_variant["fp32"],
            "val_accuracy_int8": val_acc_by_variant["int8"],
            "val_nll_uncalibrated": float(
                -np.mean(np.log(softmax(chosen)[np.arange(len(val_y)), val_y] + 1e-12))
            ),
            "val_nll": float(-np.mean(np.log(probs[np.arange(len(val_y)), val_y] + 1e-12))),
            "val_ece_uncalibrated": expected_calibration_error(softmax(chosen), val_y),
            "val_ece": expected_calibration_error(probs, val_y),
            "val_rejected_fraction": float((probs.max(axis=1) < threshold).mean()),
        }
    metrics["train_seconds"] = round(time.monotonic() - started, 1)
    metrics["best_epoch"] = float(best_epoch)
    meta: dict[str, Any] = {
        "version": version,
        "kind": MODEL_KIND,
        "encoder": ENCODER_NAME,
        "labels": labels,
        "variant": variant,
        "files": {"fp32": FP32_FILE, "int8": INT8_FILE, "tokenizer": TOKENIZER_FILE},
        "temperature": temperature,
        "oos_threshold": threshold,
        "max_length": config.serve_max_length,
        "metrics": metrics,
        "history": history,
        "config": asdict(config),
        "train_size": len(train),
        "val_size": len(val),
        "source": source,
        "init_from": str(init_from) if init_from else "",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    (tmp_dir / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    if templates:
        kept = {k: v for k, v in templates.items() if k in label_index}
        (tmp_dir / TEMPLATES_FILE).write_text(json.dumps(kept, indent=2) + "\n", encoding="utf-8")
    (tmp_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    tmp_dir.rename(final_dir)
    log(
        f"wrote {final_dir}: serving {variant}, temperature {temperature:.3f}, "
        f"OOS threshold {threshold:.3f}, val accuracy {metrics.get('val_accuracy', 0.0):.4f}"
    )
    return TrainResult(final_dir, metrics)

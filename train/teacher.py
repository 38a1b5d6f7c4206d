"""The wav2vec2 teacher: build it, fine-tune it with transformers' Trainer, and get its logits.

A teacher comes from one of three places:

- a hub name (`facebook/wav2vec2-base`) or a local directory written by `save_pretrained`:
  loaded with `AutoModelForAudioClassification.from_pretrained` and given a fresh head for our
  labels;
- a `ScratchTeacherConfig` (or the `[teacher.scratch]` table of a recipe): a smaller wav2vec2
  with random weights, for when no pretrained checkpoint can be had (no hub is reachable here).

Inputs are raw PCM windows. Like wav2vec2's feature extractor, every window is normalised to
zero mean and unit variance before it enters the model (`normalize_windows`); `AudioTeacher`
wraps a model with that step so that `teacher_logits` and the ONNX export see raw PCM, as the
edgekd model contract wants.

`finetune_teacher` uses the transformers `Trainer`, so the same code runs on one CPU, one GPU, or
several GPUs under `torchrun`/`accelerate launch`. `distill_teacher` trains one instead with the
students' loop (`edgekd_train.distill.loop.distill`): the labels plus the soft targets of a stronger
model, on the same augmented batches the students see. That is how a wav2vec2 trained from random
weights on a small corpus becomes a teacher worth having: its logits and its attention.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

NORMALIZE_EPS = 1e-7  # as in Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm


class TeacherError(ValueError):
    """A teacher cannot be built or trained as asked. The message says how to fix it."""


def _from_mapping(cls: Any, values: Mapping[str, Any], what: str) -> Any:
    """A config dataclass from a recipe table, refusing keys it does not know."""
    known = set(cls.__dataclass_fields__)
    unknown = sorted(set(values) - known)
    if unknown:
        raise TeacherError(f"unknown {what} {unknown}; known: {sorted(known)}")
    return cls(**dict(values))


@dataclass(frozen=True)
class ScratchTeacherConfig:
    """A wav2vec2 trained from random weights: smaller than the 95M-parameter base model.

    The CNN feature encoder keeps wav2vec2's strides (320 samples per frame, 50 frames/s at
    16 kHz); only its width and the transformer's size shrink.
    """

    hidden_size: int = 256
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    intermediate_size: int = 1024
    conv_dim: int = 256  # channels of each of the 7 CNN layers (base: 512)
    feat_extract_norm: str = "layer"  # "layer" trains from scratch more stably than "group"
    num_conv_pos_embeddings: int = 64
    num_conv_pos_embedding_groups: int = 16
    classifier_proj_size: int = 128
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    feat_proj_dropout: float = 0.1
    final_dropout: float = 0.1
    mask_time_prob: float = 0.05  # SpecAugment-style masking while training
    mask_time_length: int = 5
    layerdrop: float = 0.0

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise TeacherError(
                f"teacher hidden_size={self.hidden_size} is not divisible by "
                f"num_attention_heads={self.num_attention_heads}; pick sizes that divide"
            )
        if self.hidden_size % self.num_conv_pos_embedding_groups:
            raise TeacherError(
                f"teacher hidden_size={self.hidden_size} is not divisible by "
                f"num_conv_pos_embedding_groups={self.num_conv_pos_embedding_groups}"
            )
        if self.feat_extract_norm not in ("layer", "group"):
            raise TeacherError(f"teacher feat_extract_norm={self.feat_extract_norm!r} must be 'layer' or 'group'")
        for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "conv_dim"):
            if getattr(self, name) < 1:
                raise TeacherError(f"teacher {name} must be a positive integer, got {getattr(self, name)}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "ScratchTeacherConfig":
        return _from_mapping(cls, values, "teacher option(s)")

    def to_hf(self, labels: Sequence[str]):
        from transformers import Wav2Vec2Config

        return Wav2Vec2Config(
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            intermediate_size=self.intermediate_size,
            conv_dim=(self.conv_dim,) * 7,
            conv_stride=(5, 2, 2, 2, 2, 2, 2),
            conv_kernel=(10, 3, 3, 3, 3, 2, 2),
            feat_extract_norm=self.feat_extract_norm,
            do_stable_layer_norm=self.feat_extract_norm == "layer",
            num_conv_pos_embeddings=self.num_conv_pos_embeddings,
            num_conv_pos_embedding_groups=self.num_conv_pos_embedding_groups,
            classifier_proj_size=self.classifier_proj_size,
            hidden_dropout=self.hidden_dropout,
            attention_dropout=self.attention_dropout,
            activation_dropout=self.activation_dropout,
            feat_proj_dropout=self.feat_proj_dropout,
            final_dropout=self.final_dropout,
            mask_time_prob=self.mask_time_prob,
            mask_time_length=self.mask_time_length,
            mask_feature_prob=0.0,
            layerdrop=self.layerdrop,
            **_label_maps(labels),
        )


def _label_maps(labels: Sequence[str]) -> dict[str, Any]:
    labels = list(labels)
    if not labels or len(set(labels)) != len(labels):
        raise TeacherError(f"labels must be a non-empty list of unique names, got {labels}")
    return {
        "num_labels": len(labels),
        "id2label": {i: name for i, name in enumerate(labels)},
        "label2id": {name: i for i, name in enumerate(labels)},
    }


TeacherSource = str | Path | ScratchTeacherConfig | Mapping[str, Any]


def build_teacher(source: TeacherSource, labels: Sequence[str]):
    """An `AutoModelForAudioClassification` for `labels`.

    `source`: a hub name, a directory written by `save_pretrained`, a `.toml` recipe (its
    `[teacher.scratch]` table), a `ScratchTeacherConfig`, or a mapping of its fields.
    """
    from transformers import AutoModelForAudioClassification, Wav2Vec2ForSequenceClassification

    if isinstance(source, Mapping):
        source = ScratchTeacherConfig.from_mapping(source)
    if isinstance(source, (str, Path)) and str(source).endswith(".toml"):
        source = _scratch_from_recipe(Path(source))
    if isinstance(source, ScratchTeacherConfig):
        model = Wav2Vec2ForSequenceClassification(source.to_hf(labels))
        log.info("teacher: wav2vec2 from scratch, %s parameters", f"{count_parameters(model):,}")
        return model
    name = str(source)
    local = Path(name).expanduser()
    if local.exists() and not (local / "config.json").is_file():
        raise TeacherError(
            f"teacher directory {local} has no config.json; point at a folder written by "
            "`save_pretrained` (or by `edgekd train teacher`)"
        )
    try:
        model = AutoModelForAudioClassification.from_pretrained(  # float32 even if saved in half precision
            str(local) if local.exists() else name, ignore_mismatched_sizes=True, dtype=torch.float32,
            **_label_maps(labels),
        )
    except OSError as exc:
        raise TeacherError(
            f"cannot load teacher {name!r}: it is not a local directory and the model hub did not "
            f"answer ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); pass a directory "
            "saved with save_pretrained, or a recipe with a [teacher.scratch] table"
        ) from None
    log.info("teacher: %s, %s parameters", name, f"{count_parameters(model):,}")
    return model


def _scratch_from_recipe(path: Path) -> ScratchTeacherConfig:
    from edgekd_train.recipe import tomllib

    with open(path, "rb") as fh:
        recipe = tomllib.load(fh)
    table = recipe.get("teacher", {}).get("scratch")
    if table is None:
        raise TeacherError(f"recipe {path} has no [teacher.scratch] table to build a teacher from")
    return ScratchTeacherConfig.from_mapping(table)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def normalize_windows(x: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance per window, as wav2vec2's feature extractor does."""
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + NORMALIZE_EPS)


class AudioTeacher(nn.Module):
    """Raw PCM `[batch, samples]` in, logits `[batch, n_labels]` out (what ONNX export wants)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.model(input_values=normalize_windows(audio)).logits


# --------------------------------------------------------------------------- fine-tuning


@dataclass(frozen=True)
class TeacherTrainConfig:
    epochs: float = 30.0
    batch_size: int = 32
    learning_rate: float = 5e-4
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    freeze_feature_encoder: bool = False  # True for a pretrained teacher with little data
    max_grad_norm: float = 1.0
    bf16: bool = False  # on a GPU that supports it
    seed: int = 0
    shift_s: float = 0.25  # random time shift with zero fill, +-seconds (0: off)
    gain_db: float = 6.0  # random gain, +-dB (no effect after normalisation unless noise is added)
    noise_snr_db: float | None = None  # add white noise at this SNR (None: off)
    num_workers: int = 0
    max_minutes: float | None = None  # stop training (keeping the best checkpoint) after this
    sample_rate: int = 16000
    extra: dict[str, Any] = field(default_factory=dict)  # passed to TrainingArguments

    def __post_init__(self) -> None:
        if self.epochs <= 0 or self.batch_size < 1 or self.learning_rate <= 0:
            raise TeacherError(
                f"teacher training needs epochs > 0, batch_size >= 1, learning_rate > 0 "
                f"(got {self.epochs}, {self.batch_size}, {self.learning_rate})"
            )
        if not 0 <= self.warmup_ratio < 1:
            raise TeacherError(f"warmup_ratio={self.warmup_ratio} must be in [0, 1)")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "TeacherTrainConfig":
        return _from_mapping(cls, values, "teacher training option(s)")


class WindowDataset(torch.utils.data.Dataset):
    """Fixed-length windows and integer labels, as Trainer wants them (`input_values`, `labels`)."""

    def __init__(
        self,
        windows: np.ndarray,
        labels: np.ndarray,
        augment: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None,
        seed: int = 0,
    ) -> None:
        if len(windows) != len(labels):
            raise TeacherError(f"{len(windows)} windows but {len(labels)} labels")
        self.windows = np.asarray(windows, dtype=np.float32)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.augment = augment
        self.seed = seed
        self._rng: np.random.Generator | None = None

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        x = self.windows[i]
        if self.augment is not None:
            if self._rng is None:  # one generator per worker process
                info = torch.utils.data.get_worker_info()
                self._rng = np.random.default_rng([self.seed, info.id if info else 0])
            x = self.augment(x, self._rng)
        t = normalize_windows(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
        return {"input_values": t, "labels": torch.tensor(self.labels[i])}


def simple_augment(cfg: TeacherTrainConfig) -> Callable[[np.ndarray, np.random.Generator], np.ndarray] | None:
    """Time shift (zero fill), gain and optional white noise, from the config."""
    shift = int(round(cfg.shift_s * cfg.sample_rate))
    if shift <= 0 and cfg.gain_db <= 0 and cfg.noise_snr_db is None:
        return None

    def augment(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        y = x.astype(np.float32, copy=True)
        if shift > 0:
            m = min(shift, len(y) - 1)
            k = int(rng.integers(-m, m + 1))
            if k > 0:
                y = np.concatenate([np.zeros(k, np.float32), y[:-k]])
            elif k < 0:
                y = np.concatenate([y[-k:], np.zeros(-k, np.float32)])
        if cfg.gain_db > 0:
            y *= np.float32(10 ** (rng.uniform(-cfg.gain_db, cfg.gain_db) / 20))
        if cfg.noise_snr_db is not None:
            power = float(np.mean(y**2)) + 1e-12
            y += rng.standard_normal(len(y)).astype(np.float32) * np.float32(
                math.sqrt(power / 10 ** (cfg.noise_snr_db / 10))
            )
        return y

    return augment


@dataclass
class TeacherResult:
    model: nn.Module
    best_val_accuracy: float
    history: list[dict[str, Any]]
    train_seconds: float
    stopped_early: bool


def _accuracy(pred) -> dict[str, float]:
    logits = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
    return {"accuracy": float((np.argmax(logits, axis=-1) == pred.label_ids).mean())}


def finetune_teacher(
    model: nn.Module,
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    cfg: TeacherTrainConfig,
    output_dir: str | Path,
    augment: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None,
) -> TeacherResult:
    """Fine-tune (or train from scratch) with `Trainer`; keep the checkpoint best on validation.

    The best model is saved to `output_dir/best` (config + weights, loadable by `build_teacher`).
    `augment(x, rng)` replaces the config's shift/gain/noise augmentation when given.
    """
    from transformers import Trainer, TrainerCallback, TrainingArguments

    output_dir = Path(output_dir)
    if len(val_x) == 0:
        raise TeacherError("teacher fine-tuning needs a non-empty validation set to pick the best checkpoint")
    if cfg.freeze_feature_encoder:
        if not hasattr(model, "freeze_feature_encoder"):
            raise TeacherError(f"{type(model).__name__} has no CNN feature encoder to freeze")
        model.freeze_feature_encoder()
        log.info("teacher: CNN feature encoder frozen")
    steps_per_epoch = math.ceil(len(train_x) / cfg.batch_size)
    total_steps = max(1, math.ceil(cfg.epochs * steps_per_epoch))
    use_bf16 = cfg.bf16 and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    args = TrainingArguments(
        output_dir=str(output_dir / "checkpoints"),
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size * 2,
        learning_rate=cfg.learning_rate,
        weight_decay=cfg.weight_decay,
        warmup_steps=int(cfg.warmup_ratio * total_steps),
        lr_scheduler_type="linear",
        max_steps=total_steps,
        max_grad_norm=cfg.max_grad_norm,
        eval_strategy="epoch",
        save_strategy="epoch",
        save_total_limit=1,
        save_only_model=True,
        load_best_model_at_end=True,
        metric_for_best_model="accuracy",
        greater_is_better=True,
        logging_strategy="epoch",
        report_to="none",
        seed=cfg.seed,
        data_seed=cfg.seed,
        bf16=use_bf16,
        dataloader_num_workers=cfg.num_workers,
        dataloader_pin_memory=torch.cuda.is_available(),
        remove_unused_columns=False,
        disable_tqdm=True,
        **cfg.extra,
    )
    started = time.monotonic()
    stopped = {"early": False}

    class TimeBudget(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if cfg.max_minutes is not None and time.monotonic() - started > 60 * cfg.max_minutes:
                if not stopped["early"]:
                    log.warning("teacher: time budget of %.1f min reached at step %d; stopping", cfg.max_minutes, state.global_step)
                stopped["early"] = True
                control.should_training_stop = True
                control.should_evaluate = True
                control.should_save = True
            return control

    class LogEpoch(TrainerCallback):
        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            log.info("teacher: epoch %.1f step %d %s", state.epoch or 0, state.global_step,
                     {k: round(v, 4) for k, v in (metrics or {}).items() if isinstance(v, float)})

    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=WindowDataset(train_x, train_y, augment or simple_augment(cfg), seed=cfg.seed),
        eval_dataset=WindowDataset(val_x, val_y),
        compute_metrics=_accuracy,
        callbacks=[TimeBudget(), LogEpoch()],
    )
    trainer.train()
    seconds = time.monotonic() - started
    history = [dict(h) for h in trainer.state.log_history]
    accs = [h["eval_accuracy"] for h in history if "eval_accuracy" in h]
    best = float(trainer.state.best_metric if trainer.state.best_metric is not None else max(accs, default=float("nan")))
    trainer.save_model(str(output_dir / "best"))
    log.info("teacher: best validation accuracy %.4f after %.0f s; saved %s", best, seconds, output_dir / "best")
    return TeacherResult(trainer.model, best, history, seconds, stopped["early"])


def distill_teacher(
    model: nn.Module,
    teacher_fn: Callable[[torch.Tensor], torch.Tensor] | None,
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    cfg: Any,
    output_dir: str | Path,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> TeacherResult:
    """Train a wav2vec2 classifier on the labels and `teacher_fn`'s soft targets (Hinton's loss with
    `cfg`, a `edgekd_train.distill.loop.DistillConfig`; `cfg.alpha = 1` and no `teacher_fn`: the labels
    alone, with the students' loop and augmentation), keeping the best validation epoch.

    Checkpoints go to `output_dir/checkpoints` (a killed run resumes); the kept model is saved to
    `output_dir/best` (config + weights, loadable by `build_teacher`)."""
    from dataclasses import replace

    from edgekd_train.distill.loop import distill

    output_dir = Path(output_dir)
    cfg = replace(cfg, ckpt_dir=str(output_dir / "checkpoints")) if cfg.ckpt_dir is None else cfg
    started = time.monotonic()
    history = distill(AudioTeacher(model), train_x, train_y, val_x, val_y, teacher_fn=teacher_fn, cfg=cfg,
                      augment=augment)
    seconds = time.monotonic() - started
    model.save_pretrained(str(output_dir / "best"))
    log.info("teacher: best validation accuracy %.4f (epoch %s) after %.0f s; saved %s", history["best_val_acc"],
             history["best_epoch"], seconds, output_dir / "best")
    return TeacherResult(model, float(history["best_val_acc"]), [history], seconds, False)


# --------------------------------------------------------------------------- inference


@torch.no_grad()
def teacher_logits(
    model: nn.Module,
    windows: np.ndarray | torch.Tensor,
    batch_size: int = 32,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Logits `[n, n_labels]` (float32) of a teacher in eval mode for raw PCM windows."""
    # a wav2vec2 gets the raw-PCM wrapper; anything else (a student ensemble) already takes raw PCM
    teacher = AudioTeacher(model) if hasattr(model, "config") and not isinstance(model, AudioTeacher) else model
    if device is None:
        device = next(teacher.parameters()).device
    was_training = teacher.training
    teacher.eval()
    out = []
    try:
        for i in range(0, len(windows), batch_size):
            x = torch.as_tensor(np.asarray(windows[i : i + batch_size], dtype=np.float32)).to(device)
            out.append(teacher(x).float().cpu())
    finally:
        teacher.train(was_training)
    n_labels = getattr(getattr(model, "config", None), "num_labels", 0)
    return torch.cat(out).numpy() if out else np.zeros((0, n_labels), np.float32)


def config_dict(cfg: ScratchTeacherConfig | TeacherTrainConfig) -> dict[str, Any]:
    return asdict(cfg)

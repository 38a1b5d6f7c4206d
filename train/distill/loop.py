"""The training loop: one for every student and objective.

Reads top to bottom: check the config and inputs, put every window on the device once, get
the teacher's outputs (cached once for un-augmented inputs, or computed on the fly by
`teacher_fn` for augmented batches, or read from shared `TeacherSteps`), then epochs of AdamW
with a linear warm-up and linear decay, a validation pass per epoch, and checkpoints that a
rerun with the same `ckpt_dir` resumes from. The objective is a list of loss terms
(`edgekd_train.distill.terms`: Hinton, the feature penalty; `edgekd_train.temporal.loss.TemporalAttention`)
that the loop adds up; by default Hinton's term with the config's T and alpha. With `ema` set,
an exponential moving average of the weights (torch's `AveragedModel`) is what gets validated
and kept; with `time_limit_s` no new epoch starts once the limit has passed. `soft_weights`, one per
training window, rides along with the batches and tells Hinton's term how much each window's soft
targets count (e.g. teacher on keyword clips, labels alone on stream background).

Every option is a branch of this one loop: the emotion, keyword and cough students, the reduced
wav2vec2 and the scratch teacher are all trained here.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from edgekd_train.distill.terms import Hinton, LossTerm, Outputs, total_loss, training_outputs

log = logging.getLogger(__name__)

TeacherFn = Callable[[torch.Tensor], Any]  # logits, (logits, frame weights) or Outputs
AugmentFn = Callable[[torch.Tensor], torch.Tensor]
CHECKPOINT = "last.pt"
BEST = "best.pt"


@dataclass
class DistillConfig:
    """The loop's settings: optimiser, schedule, clipping, weight average, checkpoints, time limit;
    and T and alpha of the default loss term, `Hinton(T, alpha)` (used when no `terms` are given)."""

    epochs: int = 30
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-2
    warmup_frac: float = 0.1  # of all optimizer steps; then linear decay to zero
    warmup_epochs: float | None = None  # if set, the warm-up in epochs instead of warmup_frac
    # False: weight decay on conv/linear weights only; True: on every parameter (norms and biases too)
    weight_decay_all: bool = False
    T: float = 2.0
    alpha: float = 0.5  # 1: labels only (teacher ignored); 0: teacher only
    seed: int = 0
    device: str = "auto"  # "auto": cuda when available, else cpu
    ckpt_dir: str | None = None  # None: no checkpoints
    ckpt_every: int = 1  # epochs between checkpoints
    resume: bool = True  # continue from ckpt_dir/last.pt when it exists
    grad_clip: float | None = 5.0  # max global gradient norm; None or 0: no clipping
    eval_batch_size: int = 256
    keep_best: bool = True  # end with the weights of the best validation epoch
    max_steps: int | None = None  # stop early after this many optimizer steps (smoke runs, tests)
    progress: bool = True
    # "group": draw each epoch's windows with replacement so that every group (e.g. corpus) is seen
    # equally often; needs `groups` in distill(). "none": every window once per epoch.
    balance: str = "none"
    # Decay of an exponential moving average of the weights and BatchNorm statistics, updated after
    # every step; validation, the best epoch and the final weights use the average. 0: off.
    ema: float = 0.0
    # True: a teacher_fn's outputs on un-augmented windows are computed once and kept on the device;
    # False: it runs on every batch (outputs too large to keep, e.g. CNN feature maps of every window)
    cache_teacher: bool = True
    # wall-clock seconds after which no new epoch starts (the one under way finishes). None: no limit.
    time_limit_s: float | None = None

    def __post_init__(self) -> None:
        problems = []
        if self.epochs < 1:
            problems.append(f"epochs={self.epochs} must be >= 1")
        if self.batch_size < 2:
            problems.append(f"batch_size={self.batch_size} must be >= 2 (BatchNorm needs two windows)")
        if self.lr <= 0 or self.weight_decay < 0:
            problems.append(f"lr={self.lr} must be > 0 and weight_decay={self.weight_decay} >= 0")
        if not 0.0 <= self.warmup_frac < 1.0:
            problems.append(f"warmup_frac={self.warmup_frac} must be in [0, 1)")
        if not 0.0 <= self.alpha <= 1.0 or self.T <= 0:
            problems.append(f"alpha={self.alpha} must be in [0, 1] and T={self.T} > 0")
        if self.max_steps is not None and self.max_steps < 1:
            problems.append(f"max_steps={self.max_steps} must be >= 1 or None")
        if not 0.0 <= self.ema < 1.0:
            problems.append(f"ema={self.ema} must be in [0, 1) (0: no weight average; e.g. 0.995)")
        if self.warmup_epochs is not None and self.warmup_epochs < 0:
            problems.append(f"warmup_epochs={self.warmup_epochs} must be >= 0 or None")
        if self.grad_clip is not None and self.grad_clip < 0:
            problems.append(f"grad_clip={self.grad_clip} must be > 0, or 0/None for no clipping")
        if self.time_limit_s is not None and self.time_limit_s < 0:
            problems.append(f"time_limit_s={self.time_limit_s} must be >= 0 or None")
        if self.balance not in ("none", "group"):
            problems.append(f"balance={self.balance!r} must be 'none' or 'group'")
        if problems:
            raise ValueError("DistillConfig: " + "; ".join(problems))

    def resolved_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        dev = torch.device(self.device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={self.device!r} but torch sees no CUDA device; use device='cpu' or 'auto'")
        return dev


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up over `warmup` steps to 1, then linear decay to 0 at `total`."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def group_weights(groups: Any) -> torch.Tensor:
    """Per-window sampling weights under which every group is drawn equally often."""
    _, inverse, counts = np.unique(np.asarray(groups), return_inverse=True, return_counts=True)
    return torch.as_tensor(1.0 / counts[inverse], dtype=torch.float64)


def epoch_order(n: int, generator: torch.Generator, weights: torch.Tensor | None = None) -> torch.Tensor:
    """The window indices of one epoch: a permutation, or `n` weighted draws with replacement."""
    if weights is None:
        return torch.randperm(n, generator=generator)
    return torch.multinomial(weights, n, replacement=True, generator=generator)


def schedule(n: int, cfg: DistillConfig) -> tuple[int, int, int]:
    """(batch size, optimizer steps per epoch, total steps) of a run over `n` windows."""
    bs = min(cfg.batch_size, n)
    steps_per_epoch = n // bs  # drop the ragged last batch: BatchNorm dislikes a batch of one
    total = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    return bs, steps_per_epoch, total


def warmup_steps(cfg: DistillConfig, steps_per_epoch: int, total: int) -> int:
    """The optimizer steps of the linear warm-up: `warmup_epochs` epochs, else `warmup_frac` of all."""
    if cfg.warmup_epochs is not None:
        return int(round(cfg.warmup_epochs * steps_per_epoch))
    return int(round(cfg.warmup_frac * total))


def _as_tensor(x: Any, dtype: torch.dtype, what: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if not (t.dtype.is_floating_point if dtype.is_floating_point else not t.dtype.is_floating_point):
        raise TypeError(f"{what} has dtype {t.dtype}; expected {'float' if dtype.is_floating_point else 'integer'}")
    return t.to(dtype)


@torch.no_grad()
def cache_teacher_outputs(
    teacher_fn: TeacherFn, x: torch.Tensor, batch_size: int = 64, device: torch.device | None = None
) -> Outputs:
    """The teacher's outputs for every window of `x` (in eval mode, without gradients)."""
    if isinstance(teacher_fn, nn.Module):
        teacher_fn.eval()
    device = device or x.device
    parts = [Outputs.of(teacher_fn(x[i : i + batch_size].to(device))).detached()
             for i in range(0, len(x), batch_size)]  # fmt: skip
    return Outputs.cat(parts).to(device)


@torch.no_grad()
def evaluate_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """The model's logits for every window of `x`, in eval mode."""
    model.eval()
    return torch.cat([model(x[i : i + batch_size]).float() for i in range(0, len(x), batch_size)])


def weight_average(model: nn.Module, decay: float) -> AveragedModel | None:
    """An exponential moving average of `model` (weights and buffers such as BatchNorm statistics),
    or None when `decay` is 0. Call `update_parameters(model)` after each optimiser step; the
    averaged network is `.module`."""
    if decay <= 0:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def _param_groups(model: nn.Module, weight_decay: float, decay_all: bool = False) -> list[dict[str, Any]]:
    if decay_all:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": weight_decay}]
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _save(obj: dict[str, Any], path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _cached_teacher(teacher_logits: Any, teacher_outputs: Outputs | None, device: torch.device) -> Outputs | None:
    if teacher_logits is not None and teacher_outputs is not None:
        raise ValueError("give teacher_logits or teacher_outputs, not both")
    if teacher_logits is not None:
        return Outputs(_as_tensor(teacher_logits, torch.float32, "teacher_logits")).to(device)
    return teacher_outputs.detached().to(device) if teacher_outputs is not None else None


def _soft_weights(soft_weights: Any, n: int, device: torch.device) -> torch.Tensor:
    """`distill`'s soft_weights as a float32 `[n]` tensor on the device, checked."""
    w = torch.as_tensor(np.asarray(soft_weights) if not isinstance(soft_weights, torch.Tensor) else soft_weights)
    if w.shape != (n,):
        raise ValueError(f"soft_weights has shape {tuple(w.shape)}; expected ({n},): one weight per training window")
    w = w.to(torch.float32)
    if not bool(torch.isfinite(w).all()) or float(w.min()) < 0 or float(w.max()) > 1:
        raise ValueError("soft_weights must lie in [0, 1] (1: the window's soft targets count fully, 0: not at all)")
    return w.to(device)


def distill(
    student: nn.Module,
    train_x: Any,
    train_y: Any,
    val_x: Any = None,
    val_y: Any = None,
    teacher_logits: Any = None,
    teacher_fn: TeacherFn | None = None,
    cfg: DistillConfig | None = None,
    augment: AugmentFn | None = None,
    groups: Any = None,
    *,
    terms: Sequence[LossTerm] | None = None,
    teacher_outputs: Outputs | None = None,
    soft_weights: Any = None,
) -> dict[str, Any]:
    """Train `student` in place; return the history (per-epoch losses, accuracies, learning rates).

    `train_x` is `[N, samples]` float32 windows, `train_y` `[N]` label indices.
    `terms` are the loss terms summed at each step (default: `Hinton(cfg.T, cfg.alpha)`); the
    student's outputs come from its `training_outputs(x)` when it has one, else its logits.
    The teacher is needed only when a term reads it. Its outputs on the un-augmented `train_x`
    may be given cached, one row per window: `teacher_logits` (`[N, n_labels]`) or
    `teacher_outputs` (`Outputs`, e.g. logits and frame weights); with `augment` the teacher must
    see the same augmented batch, so pass `teacher_fn` instead (it may return logits, a
    `(logits, frame weights)` pair, or `Outputs`).
    `groups` (`[N]`, any labels, e.g. each window's corpus) is needed by `cfg.balance == "group"`.
    `soft_weights` (`[N]` floats in [0, 1], or booleans): how much each window's soft targets count in
    Hinton's term, carried with the batches as the teacher's `Outputs.soft_weight` (0: that window
    learns from its label alone, as with alpha = 1; `edgekd_train.distill.losses.hinton_loss`). None:
    every window fully, the loop as without it.

    The batches (order, augmentation) depend only on the data, `cfg.seed`, the batch size and
    the augmenter's seed, never on the student or the terms: `TeacherSteps` relies on that.
    """
    cfg = cfg or DistillConfig()
    terms = list(terms) if terms is not None else [Hinton(cfg.T, cfg.alpha)]
    if not terms:
        raise ValueError("terms is empty: give at least one loss term, e.g. Hinton(T, alpha)")
    device = cfg.resolved_device()
    torch.manual_seed(cfg.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    # --- data: every window on the device, once ---------------------------------------
    x = _as_tensor(train_x, torch.float32, "train_x").to(device)
    y = _as_tensor(train_y, torch.int64, "train_y").to(device)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"train_x must be [N, samples] and train_y [N]; got {tuple(x.shape)} and {tuple(y.shape)}")
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"need at least two training windows, got {n}")
    has_val = val_x is not None and val_y is not None
    vx = _as_tensor(val_x, torch.float32, "val_x").to(device) if has_val else None
    vy = _as_tensor(val_y, torch.int64, "val_y").to(device) if has_val else None
    student.to(device)
    n_labels = int(getattr(student, "n_labels", None) or evaluate_logits(student, x[:1]).shape[-1])
    if int(y.max()) >= n_labels or int(y.min()) < 0:
        raise ValueError(f"train_y holds labels outside 0..{n_labels - 1}: the student has {n_labels} outputs")

    # --- teacher ---------------------------------------------------------------------
    need_teacher = any(t.needs_teacher for t in terms)
    cached: Outputs | None = None
    teacher_mode = "none (no term reads it)"
    if need_teacher and (augment is not None or (not cfg.cache_teacher and teacher_fn is not None)):
        if teacher_fn is None:
            raise ValueError(
                "augmented batches need teacher_fn: cached teacher outputs describe the un-augmented windows; "
                "pass teacher_fn, drop augment, or use terms that need no teacher (alpha=1, no temporal term)"
            )
        if isinstance(teacher_fn, nn.Module):
            teacher_fn.eval()
        teacher_mode = "on the fly (augmented inputs)" if augment is not None else "on the fly (cache_teacher=False)"
    elif need_teacher:
        cached = _cached_teacher(teacher_logits, teacher_outputs, device)
        if cached is not None:
            teacher_mode = "cached (given)"
        elif teacher_fn is not None:
            cached = cache_teacher_outputs(teacher_fn, x, cfg.batch_size, device)
            teacher_mode = "cached (computed once)"
        else:
            raise ValueError(f"the terms {terms} read the teacher: give teacher_logits, teacher_outputs or "
                             "teacher_fn; or set alpha=1 and drop the teacher's terms")
        if cached.logits.shape != (n, n_labels):
            raise ValueError(
                f"teacher logits have shape {tuple(cached.logits.shape)}, expected {(n, n_labels)} "
                "(one row per training window, one column per student label, same order)"
            )
        for name, t in (("frame_weights", cached.frame_weights), ("features", cached.features)):
            if t is not None and t.shape[0] != n:
                raise ValueError(f"cached teacher {name} have {t.shape[0]} rows, train_x has {n}: one row per "
                                 "training window, same order")

    soft_w = _soft_weights(soft_weights, n, device) if soft_weights is not None else None

    weights = None
    if cfg.balance == "group":
        if groups is None or len(groups) != n:
            raise ValueError("balance='group' needs groups: one entry per training window (e.g. its corpus)")
        weights = group_weights(groups)

    # --- optimiser and schedule --------------------------------------------------------
    bs, steps_per_epoch, total = schedule(n, cfg)
    warmup = warmup_steps(cfg, steps_per_epoch, total)
    opt = torch.optim.AdamW(_param_groups(student, cfg.weight_decay, cfg.weight_decay_all), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total, warmup))
    shuffle = torch.Generator().manual_seed(cfg.seed)
    ema = weight_average(student, cfg.ema)
    judged = ema.module if ema is not None else student  # the network validated and kept

    history: dict[str, Any] = {
        "epoch": [], "train_loss": [], "train_acc": [], "val_loss": [], "val_acc": [], "lr": [], "seconds": [],
        "best_epoch": None, "best_val_acc": None, "steps": 0, "device": str(device), "teacher": teacher_mode,
        "terms": [repr(t) for t in terms], "stopped_by_time_limit": False,
        "config": asdict(cfg), "n_train": n, "n_val": int(vx.shape[0]) if vx is not None else 0,
    }  # fmt: skip
    if soft_w is not None:
        history["soft_weights"] = {"windows": n, "full": int((soft_w == 1).sum()), "none": int((soft_w == 0).sum()),
                                   "mean": float(soft_w.mean()), "read": need_teacher}  # fmt: skip
    best_state: dict[str, torch.Tensor] | None = None
    best_key: tuple[float, float] = (-1.0, -math.inf)
    start_epoch, step = 0, 0

    ckpt_dir = Path(cfg.ckpt_dir) if cfg.ckpt_dir else None
    if ckpt_dir is not None:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        last = ckpt_dir / CHECKPOINT
        if cfg.resume and last.is_file():
            state = torch.load(last, map_location=device, weights_only=False)
            if state["n_train"] != n or state["total_steps"] != total:
                raise ValueError(
                    f"checkpoint {last} was made for {state['n_train']} windows and {state['total_steps']} steps, "
                    f"this run has {n} and {total}; use another ckpt_dir or resume=False"
                )
            student.load_state_dict(state["model"])
            if ema is not None:
                ema.load_state_dict(state["ema"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            shuffle.set_state(state["shuffle_rng"])
            torch.set_rng_state(state["torch_rng"])
            if device.type == "cuda" and state.get("cuda_rng") is not None:
                torch.cuda.set_rng_state(state["cuda_rng"], device)
            if augment is not None and hasattr(augment, "set_state"):
                augment.set_state(state.get("augment_rng"))
            if need_teacher and cached is None and callable(getattr(teacher_fn, "start_at", None)):
                teacher_fn.start_at(state["step"])  # shared TeacherSteps: serve from the resumed step on
            history = {**state["history"], "stopped_by_time_limit": False}
            best_state, best_key = state["best_state"], tuple(state["best_key"])
            start_epoch, step = state["epoch"] + 1, state["step"]
            log.info("resuming from %s at epoch %d (step %d of %d)", last, start_epoch + 1, step, total)

    def checkpoint(epoch: int) -> None:
        if ckpt_dir is None:
            return
        _save(
            {
                "epoch": epoch, "step": step, "total_steps": total, "n_train": n,
                "model": student.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "ema": ema.state_dict() if ema is not None else None,
                "shuffle_rng": shuffle.get_state(), "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                "augment_rng": augment.get_state() if augment is not None and hasattr(augment, "get_state") else None,
                "history": history, "best_state": best_state, "best_key": list(best_key),
            },
            ckpt_dir / CHECKPOINT,
        )  # fmt: skip

    # --- epochs ------------------------------------------------------------------------
    bar = tqdm(total=total, initial=step, desc=f"distill {getattr(student, 'name', '')}", disable=not cfg.progress)
    started = time.monotonic()
    for epoch in range(start_epoch, cfg.epochs):
        if step >= total:
            break
        if cfg.time_limit_s is not None and time.monotonic() - started > cfg.time_limit_s:
            history["stopped_by_time_limit"] = True
            log.warning("time limit %.0f s reached after %d epochs", cfg.time_limit_s, epoch)
            break
        t0 = time.perf_counter()
        student.train()
        perm = epoch_order(n, shuffle, weights).to(device)
        # summed on the device and read once per epoch: a read per step would wait for the GPU
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        seen = 0
        for b in range(steps_per_epoch):
            if step >= total:
                break
            idx = perm[b * bs : (b + 1) * bs]
            xb, yb = x[idx], y[idx]
            if augment is not None:
                xb = augment(xb)
            teacher = None
            if need_teacher:
                if cached is not None:
                    teacher = cached.rows(idx)
                else:
                    with torch.no_grad():
                        teacher = Outputs.of(teacher_fn(xb)).detached()  # type: ignore[misc]
                if soft_w is not None and teacher is not None:
                    teacher = replace(teacher, soft_weight=soft_w[idx])
            out = training_outputs(student, xb)
            loss = total_loss(terms, out, teacher, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(student.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
            if ema is not None:
                ema.update_parameters(student)
            step += 1
            loss_sum += loss.detach().double() * len(idx)
            correct += (out.logits.detach().argmax(-1) == yb).sum()
            seen += len(idx)
            bar.update(1)
        history["epoch"].append(epoch + 1)
        history["train_loss"].append(float(loss_sum) / max(1, seen))
        history["train_acc"].append(int(correct) / max(1, seen))
        history["lr"].append(opt.param_groups[0]["lr"])
        if vx is not None and vy is not None:
            vlogits = evaluate_logits(judged, vx, cfg.eval_batch_size)
            vloss = float(F.cross_entropy(vlogits, vy))
            vacc = float((vlogits.argmax(-1) == vy).float().mean())
            history["val_loss"].append(vloss)
            history["val_acc"].append(vacc)
            if (vacc, -vloss) > best_key:
                best_key = (vacc, -vloss)
                best_state = _cpu_state(judged)
                history["best_epoch"], history["best_val_acc"] = epoch + 1, vacc
                if ckpt_dir is not None:
                    _save({"model": best_state, "epoch": epoch + 1, "val_acc": vacc}, ckpt_dir / BEST)
        history["seconds"].append(time.perf_counter() - t0)
        history["steps"] = step
        bar.set_postfix(
            epoch=epoch + 1, loss=f"{history['train_loss'][-1]:.3f}",
            val_acc=f"{history['val_acc'][-1]:.3f}" if history["val_acc"] else "-",
        )  # fmt: skip
        log.info(
            "epoch %d/%d: train loss %.4f acc %.3f%s (%.1f s)", epoch + 1, cfg.epochs, history["train_loss"][-1],
            history["train_acc"][-1],
            f", val loss {history['val_loss'][-1]:.4f} acc {history['val_acc'][-1]:.3f}" if history["val_acc"] else "",
            history["seconds"][-1],
        )  # fmt: skip
        if (epoch + 1) % cfg.ckpt_every == 0 or epoch + 1 == cfg.epochs or step >= total:
            checkpoint(epoch)
    bar.close()

    if cfg.keep_best and best_state is not None:
        student.load_state_dict(copy.deepcopy(best_state))
        log.info("kept the weights of epoch %s (val acc %.4f)", history["best_epoch"], history["best_val_acc"])
    elif ema is not None:
        student.load_state_dict(ema.module.state_dict())
    student.eval()
    return history

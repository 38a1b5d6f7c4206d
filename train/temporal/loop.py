"""Distillation with the temporal loss: task (+ Hinton) + lambda x KL(teacher || student weights).

The same schedule as `train.distill.loop.distill` (AdamW, linear warm-up and decay, the best
validation epoch kept), on a `TemporalStudent`. The teacher's logits and per-frame weights are
either cached (`teacher_logits`, `teacher_weights`, for the un-augmented `train_x`) or computed
per batch by `teacher_fn(x) -> (logits, weights)`, which augmented batches need: a time shift
moves the moments the teacher attends to.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import asdict
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from train.distill.loop import (
    DistillConfig,
    _param_groups,
    epoch_order,
    evaluate_logits,
    lr_factor,
    schedule,
    weight_average,
)
from train.temporal.loss import temporal_distill_loss
from train.temporal.query import TemporalStudent

log = logging.getLogger(__name__)

TeacherPair = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def distill_temporal(
    model: TemporalStudent,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    val_x: torch.Tensor | None = None,
    val_y: torch.Tensor | None = None,
    *,
    cfg: DistillConfig,
    lam: float = 0.0,
    teacher_logits: torch.Tensor | None = None,
    teacher_weights: torch.Tensor | None = None,
    teacher_fn: TeacherPair | None = None,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    time_limit_s: float | None = None,
) -> dict[str, Any]:
    """Train `model` in place (best validation epoch kept); return the history."""
    device = cfg.resolved_device()
    torch.manual_seed(cfg.seed)
    x, y = train_x.float().to(device), train_y.long().to(device)
    n = len(x)
    need_teacher = cfg.alpha < 1.0 or lam > 0
    if need_teacher and teacher_fn is None:
        if teacher_logits is None or teacher_weights is None:
            raise ValueError(f"alpha={cfg.alpha}, lambda={lam} need the teacher: pass teacher_fn, or cached "
                             "teacher_logits and teacher_weights (train.temporal.rollout.cache_teacher)")
        if augment is not None:
            raise ValueError("augmented batches need teacher_fn: cached teacher outputs describe the un-augmented "
                             "windows; pass teacher_fn, drop augment, or set alpha=1 and lambda=0")
        if len(teacher_logits) != n or len(teacher_weights) != n:
            raise ValueError(f"cached teacher outputs have {len(teacher_logits)} and {len(teacher_weights)} rows, "
                             f"train_x has {n}: one row per training window, same order")
        teacher_logits, teacher_weights = teacher_logits.float().to(device), teacher_weights.float().to(device)
    model.to(device)
    bs, steps_per_epoch, total = schedule(n, cfg)
    warmup = int(round(cfg.warmup_frac * total))
    opt = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total, warmup))
    shuffle = torch.Generator().manual_seed(cfg.seed)
    ema = weight_average(model, cfg.ema)
    judged = ema.module if ema is not None else model  # the network validated and kept
    history: dict[str, Any] = {"epoch": [], "train_loss": [], "train_acc": [], "val_acc": [], "seconds": [],
                               "best_epoch": None, "best_val_acc": None, "lambda": lam, "config": asdict(cfg),
                               "stopped_by_time_limit": False}
    best_state, best_key, step, started = None, (-1.0, -math.inf), 0, time.monotonic()
    for epoch in range(cfg.epochs):
        if step >= total:
            break
        if time_limit_s is not None and time.monotonic() - started > time_limit_s:
            history["stopped_by_time_limit"] = True
            log.warning("time limit %.0f s reached after %d epochs", time_limit_s, epoch)
            break
        t0 = time.perf_counter()
        model.train()
        perm = epoch_order(n, shuffle).to(device)
        loss_sum, correct, seen = 0.0, 0, 0
        for b in range(steps_per_epoch):
            if step >= total:
                break
            idx = perm[b * bs : (b + 1) * bs]
            xb, yb = x[idx], y[idx]
            if augment is not None:
                xb = augment(xb)
            tl = tw = None
            if need_teacher:
                if teacher_fn is not None:
                    with torch.no_grad():
                        tl, tw = teacher_fn(xb)
                else:
                    tl, tw = teacher_logits[idx], teacher_weights[idx]
            logits, weights = model.forward_train(xb)
            loss = temporal_distill_loss(logits, weights, yb, tl if cfg.alpha < 1 else None, tw, cfg.T, cfg.alpha, lam)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
            if ema is not None:
                ema.update_parameters(model)
            step += 1
            loss_sum += float(loss.detach()) * len(idx)
            correct += int((logits.detach().argmax(-1) == yb).sum())
            seen += len(idx)
        history["epoch"].append(epoch + 1)
        history["train_loss"].append(loss_sum / max(1, seen))
        history["train_acc"].append(correct / max(1, seen))
        if val_x is not None and val_y is not None:
            vl = evaluate_logits(judged, val_x.float().to(device), cfg.eval_batch_size)
            vy = val_y.long().to(device)
            vacc, vloss = float((vl.argmax(-1) == vy).float().mean()), float(F.cross_entropy(vl, vy))
            history["val_acc"].append(vacc)
            if (vacc, -vloss) > best_key:
                best_key, best_state = (vacc, -vloss), copy.deepcopy(judged.state_dict())
                history["best_epoch"], history["best_val_acc"] = epoch + 1, vacc
        history["seconds"].append(time.perf_counter() - t0)
        log.info("epoch %d/%d: loss %.4f train acc %.3f%s (%.0f s)", epoch + 1, cfg.epochs, history["train_loss"][-1],
                 history["train_acc"][-1], f" val acc {history['val_acc'][-1]:.3f}" if history["val_acc"] else "",
                 history["seconds"][-1])
    if cfg.keep_best and best_state is not None:
        model.load_state_dict(best_state)
    elif ema is not None:
        model.load_state_dict(ema.module.state_dict())
    model.eval()
    history["steps"] = step
    return history

"""The teacher's logits for every optimizer step of a run, computed once and shared.

With augmented inputs the teacher must see each augmented batch, so its logits cannot be
cached per window. But the batches of `distill()` (their order and their augmentation)
depend only on the data, the seed, the batch size and the augmenter's settings, never on
the student, T or alpha. So one pass of the teacher over a seed's batch sequence serves
every student and every cell of the ablation for that seed: the grid's teacher cost drops
from one teacher forward per step per run to one per step per seed.

`TeacherSteps.compute` walks the batch sequence the way `distill()` does (through the
same `schedule` and `epoch_order`), and the object is then passed to `distill()` as its
`teacher_fn`. Each call checks a fingerprint of the batch it is given against the one
recorded for that step (a resumed run tells it where it starts, `start_at`); a batch that
differs (a changed setting) is sent to the live teacher instead and counted in `misses`, so a stale cache costs time, never
correctness. The fingerprints vouch for the batches, not for the teacher: a file saved with a
`teacher_id` (`model_id(teacher)`) refuses to load for another teacher.

A teacher may give one tensor per batch (logits) or a tuple of them (logits and per-frame
weights, `edgekd_train.temporal.rollout.teacher_outputs`); the steps give back the same form, so
temporal runs (the same loop with the temporal term) share them too.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any, Callable

import torch

from edgekd_train.distill.loop import DistillConfig, epoch_order, group_weights, schedule

log = logging.getLogger(__name__)

Outputs = torch.Tensor | tuple[torch.Tensor, ...]
TeacherFn = Callable[[torch.Tensor], Outputs]
_PROBE_SEED = 20261123


_PROBES: dict[tuple[int, str], torch.Tensor] = {}


def fingerprint(xb: torch.Tensor) -> torch.Tensor:
    """One float64 per window: its dot product with a fixed random vector."""
    key = (xb.shape[-1], str(xb.device))
    if key not in _PROBES:
        g = torch.Generator().manual_seed(_PROBE_SEED)
        _PROBES[key] = torch.randn(xb.shape[-1], generator=g, dtype=torch.float64).to(xb.device)
    return xb.double() @ _PROBES[key]


def model_id(model: torch.nn.Module) -> str:
    """A short SHA-256 of a model's weights and buffers: the same teacher gives the same id."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class TeacherSteps:
    """`outputs`: one `[steps, batch, ...]` tensor per teacher output (logits first)."""

    def __init__(self, outputs: Outputs, prints: torch.Tensor, fallback: TeacherFn | None = None,
                 teacher_id: str | None = None) -> None:
        self.single = isinstance(outputs, torch.Tensor)
        self.outputs: tuple[torch.Tensor, ...] = (outputs,) if isinstance(outputs, torch.Tensor) else tuple(outputs)
        for out in self.outputs:
            if out.shape[:2] != prints.shape:
                raise ValueError(f"teacher outputs {tuple(out.shape)} and fingerprints {tuple(prints.shape)} disagree")
        self.prints, self.fallback, self.teacher_id = prints, fallback, teacher_id
        self.calls = self.hits = self.misses = 0

    @classmethod
    @torch.no_grad()
    def compute(
        cls,
        teacher_fn: TeacherFn,
        train_x: torch.Tensor,
        cfg: DistillConfig,
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
        groups: Any = None,
        teacher_id: str | None = None,
    ) -> "TeacherSteps":
        """Run the teacher over the batches `distill(..., cfg=cfg, augment=augment)` will draw.

        `augment` must be a fresh augmenter built like the run's (same settings and seed).
        """
        n = train_x.shape[0]
        bs, steps_per_epoch, total = schedule(n, cfg)
        shuffle = torch.Generator().manual_seed(cfg.seed)
        weights = group_weights(groups) if cfg.balance == "group" else None
        # Preallocated once the first step shows the shapes: appending a small tensor per step between the
        # teacher's large short-lived activations fragments glibc's heap (a wav2vec2 teacher's RSS grew
        # ~0.7 MB a step, gigabytes over a run, though the outputs are ~16 KB a step).
        outputs: tuple[torch.Tensor, ...] = ()
        prints = torch.empty(total, bs, dtype=torch.float64)
        single, done = True, 0
        for _ in range(cfg.epochs):
            if done >= total:
                break
            perm = epoch_order(n, shuffle, weights).to(train_x.device)
            for b in range(steps_per_epoch):
                if done >= total:
                    break
                xb = train_x[perm[b * bs : (b + 1) * bs]]
                if augment is not None:
                    xb = augment(xb)
                out = teacher_fn(xb)
                single = isinstance(out, torch.Tensor)
                step = (out,) if single else tuple(out)
                if not outputs:
                    outputs = tuple(torch.empty((total, *o.shape), dtype=torch.float32) for o in step)
                for buf, o in zip(outputs, step):
                    buf[done].copy_(o.detach())
                prints[done].copy_(fingerprint(xb))
                done += 1
        stacked = tuple(buf[:done] for buf in outputs)
        return cls(stacked[0] if single else stacked, prints[:done], teacher_fn, teacher_id)

    def __len__(self) -> int:
        return self.prints.shape[0]

    def start_at(self, step: int) -> None:
        """The next call is optimizer step `step` (0-based): a resumed run continues where it stopped."""
        self.calls = step

    def __call__(self, xb: torch.Tensor) -> Outputs:
        i, self.calls = self.calls, self.calls + 1
        if i < len(self) and xb.shape[0] == self.prints.shape[1]:
            expected = self.prints[i].to(xb.device)
            if torch.allclose(fingerprint(xb), expected, rtol=1e-7, atol=1e-9):
                self.hits += 1
                step = tuple(out[i].to(xb.device) for out in self.outputs)
                return step[0] if self.single else step
        self.misses += 1
        if self.fallback is None:
            raise RuntimeError(f"step {i}: the batch is not the one the teacher's logits were computed for, "
                               "and no live teacher was given to fall back on")
        if self.misses == 1:
            log.warning("step %d: batch differs from the cached teacher step; using the live teacher from here", i)
        return self.fallback(xb)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save({"outputs": [o.cpu() for o in self.outputs], "single": self.single, "prints": self.prints.cpu(),
                    "teacher_id": self.teacher_id}, tmp)
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu", fallback: TeacherFn | None = None,
             teacher_id: str | None = None) -> "TeacherSteps":
        """`teacher_id`: the teacher this run uses; a file saved for another teacher is refused."""
        state = torch.load(path, map_location=device, weights_only=True)
        saved = state.get("teacher_id")
        if teacher_id is not None and saved != teacher_id:
            raise ValueError(f"{path} holds the outputs of teacher {saved or '(not recorded)'}, this run's teacher is "
                             f"{teacher_id}: delete the file (it is recomputed) or give another path")
        outputs = tuple(state["outputs"])
        return cls(outputs[0] if state["single"] else outputs, state["prints"], fallback, saved)

"""A teacher made of trained students: the mean of their logits.

The study distils a wav2vec2 teacher. Here the only wav2vec2 that can be trained (from random
weights, on ~2,200 clips) scores below the students themselves, and a teacher weaker than its
student has little to teach. An ensemble of the larger student is the usual stronger teacher in
that case (a "teacher assistant", Mirzadeh et al. 2020): several Wav2Small runs with different
seeds, averaged, teach Wav2Tiny.

A folder holding `ensemble.json` (`{"members": [{"path": "a.pt"}, ...]}`, paths relative to
the folder, each a `edgekd_train.checkpoints.save_student` file) is a teacher wherever a teacher
folder is accepted (`load_teacher`).

    edgekd train ensemble --out runs/ens runs/x/wav2small-T1-a1-s0.pt runs/x/wav2small-T1-a1-s1.pt
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

ENSEMBLE_FILE = "ensemble.json"


class StudentEnsemble(nn.Module):
    """Raw PCM `[batch, samples]` in, the members' mean logits out."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(audio) for m in self.members]).mean(dim=0)

    def forward_with_attention(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean logits and the mean of the members' per-frame pooling weights `[B, frames]`.

        The students pool over time with learned attention (`PooledClassifier`): their weights say
        which moments of the window the decision rests on, the same question attention rollout asks
        of a transformer teacher. Members of one architecture share their frame count.
        """
        outs = [m.forward_with_attention(audio) for m in self.members]
        weights = [w for _, w in outs]
        if len({w.shape[-1] for w in weights}) != 1:
            raise ValueError("ensemble members pool over different frame counts; use one architecture")
        return torch.stack([lo for lo, _ in outs]).mean(dim=0), torch.stack(weights).mean(dim=0)


def is_ensemble(folder: str | Path) -> bool:
    return (Path(folder) / ENSEMBLE_FILE).is_file()


def write_ensemble(out: str | Path, checkpoints: Sequence[str | Path], student: str | None = None) -> Path:
    """Copy the members' checkpoints into `out` and write `ensemble.json`.

    `student` names the architecture of checkpoints that are bare state dicts."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    members = []
    for i, ckpt in enumerate(checkpoints):
        ckpt = Path(ckpt)
        if not ckpt.is_file():
            raise FileNotFoundError(f"no student checkpoint at {ckpt}")
        name = f"member{i}-{ckpt.name}"
        shutil.copy(ckpt, out / name)
        members.append({"path": name, "from": str(ckpt), **({"student": student} if student else {})})
    (out / ENSEMBLE_FILE).write_text(json.dumps({"members": members}, indent=1) + "\n")
    return out


def load_ensemble(folder: str | Path, n_labels: int, sample_rate: int) -> StudentEnsemble:
    from edgekd_train.checkpoints import load_student

    folder = Path(folder)
    spec = json.loads((folder / ENSEMBLE_FILE).read_text())
    members = [load_student(folder / m["path"], m.get("student"), n_labels, sample_rate)[0] for m in spec["members"]]
    return StudentEnsemble(members).eval()


def load_teacher_model(folder: str | Path, labels: Sequence[str], sample_rate: int) -> nn.Module:
    """The teacher in `folder` as built: a `StudentEnsemble`, or the transformers model of a
    wav2vec2 (`edgekd_train.teacher.build_teacher`), which takes normalised `input_values`."""
    if is_ensemble(folder):
        return load_ensemble(folder, len(labels), sample_rate)
    from edgekd_train.teacher import build_teacher

    return build_teacher(folder, labels)


def describe_teacher(model: nn.Module) -> dict[str, str]:
    """What a run records of a loaded teacher beyond its folder (nothing for a wav2vec2)."""
    if isinstance(model, StudentEnsemble):
        return {"source": f"ensemble of {len(model.members)} students"}
    return {}


def load_teacher(folder: str | Path, labels: Sequence[str], sample_rate: int) -> nn.Module:
    """Raw PCM in, logits out: a student ensemble folder, or a wav2vec2 behind `AudioTeacher`."""
    model = load_teacher_model(folder, labels, sample_rate)
    if isinstance(model, StudentEnsemble):
        return model
    from edgekd_train.teacher import AudioTeacher

    return AudioTeacher(model)

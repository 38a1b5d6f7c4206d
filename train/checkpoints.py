"""Student checkpoints: the `.pt` files that `train distill` and the ablation write, loaded back."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from edgekd_train.models.students import build_student


def save_student(path: str | Path, model: nn.Module, student: str, **info: object) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"student": student, "state_dict": {k: v.cpu() for k, v in model.state_dict().items()}, **info}, path)
    return path


def load_student(path: str | Path, student: str | None, n_labels: int, sample_rate: int) -> tuple[nn.Module, str]:
    """The student in eval mode and its architecture name.

    Reads `{"student": name, "state_dict": ...}` files, or a bare state dict when `student` names
    the architecture.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no student checkpoint at {path}")
    data = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(data, dict) and "state_dict" in data:
        arch, state = student or data.get("student"), data["state_dict"]
    else:
        arch, state = student, data
    if not arch:
        raise FileNotFoundError(f"{path} does not say which student it holds: pass --student wav2small|wav2tiny|cnn")
    model = build_student(str(arch), n_labels, sample_rate)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:  # torch's size-mismatch / missing-key report
        head = [v for k, v in state.items() if k.endswith("classifier.weight")]
        held = f" for {head[0].shape[0]} labels" if head else ""
        raise CheckpointError(
            f"{path} holds a {arch}{held} that does not fit a {arch} for {n_labels} labels at {sample_rate} Hz: "
            f"pass the recipe (and --student) it was trained with ({str(exc).splitlines()[0]})"
        ) from None
    return model.eval(), str(arch)


class CheckpointError(ValueError):
    """A student checkpoint that does not fit the model the recipe describes."""

"""An exported student's weights load back into torch: the same function in eval mode, ready to fine-tune."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "models" / "wav2tiny-keyword.onnx"


def _noise(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.05 * rng.standard_normal((n, 16000))).astype(np.float32)


@pytest.mark.usefixtures("torch_one_thread")
def test_the_shipped_file_loads_back_into_its_student():
    import torch

    from edgekd.model import Model
    from edgekd_train.onnx_init import student_from_onnx
    from edgekd_train.student_run import build_any_student, logits_of

    net = student_from_onnx(build_any_student("wav2tiny", 12), SHIPPED, _noise(64, 0))
    probe = _noise(8, 1)
    probe[4:] *= 10  # louder windows too
    ours = torch.softmax(torch.from_numpy(logits_of(net, probe)), dim=1).numpy()
    theirs = Model(str(SHIPPED)).scores(probe)
    assert np.abs(ours - theirs).max() < 1e-4
    fresh = build_any_student("wav2tiny", 12)
    assert np.abs(torch.softmax(torch.from_numpy(logits_of(fresh, probe)), 1).numpy() - theirs).max() > 1e-2


@pytest.mark.usefixtures("torch_one_thread")
def test_another_architecture_is_refused():
    from edgekd_train.onnx_init import student_from_onnx
    from edgekd_train.student_run import build_any_student

    with pytest.raises(ValueError, match="build the student the file was exported from|a conv weight of shape"):
        student_from_onnx(build_any_student("wav2small", 12), SHIPPED, _noise(4, 0))

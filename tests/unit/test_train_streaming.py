"""The streaming keyword student: Wav2Tiny's size or less, every output frame from its receptive field
alone, and a step module that gives the whole model's logits from a hop of frames at a time."""

from __future__ import annotations

import pytest
import torch

from edgekd_train.models.macs import macs_per_window
from edgekd_train.models.streaming import StreamStep, build_streaming
from edgekd_train.models.students import build_student, count_params
from edgekd_train.student_run import build_any_student

pytestmark = pytest.mark.usefixtures("torch_one_thread")
WINDOW_FRAMES = 66  # 1 s at 16 kHz on 20 ms / 15 ms frames


def trained_looking(seed: int = 0, name: str = "streamtcn"):
    torch.manual_seed(seed)
    model = build_streaming(name, 12)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.uniform_(-1.0, 1.0)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def test_it_is_no_larger_than_wav2tiny():
    stream, tiny = build_any_student("streamtcn", 12), build_student("wav2tiny", 12)
    assert count_params(stream) <= count_params(tiny)
    assert macs_per_window(stream, 16000) <= macs_per_window(tiny, 16000)


def test_an_output_frame_depends_on_its_receptive_field_only():
    model = trained_looking()
    x = torch.randn(1, 40, 100) - 8.0
    ref = model.body(x)
    r = model.receptive_field
    before = x.clone()
    before[:, :, : 100 - r] = 10.0 * torch.randn(1, 40, 100 - r)  # everything before the last frame's field
    assert torch.allclose(model.body(before)[:, :, -1], ref[:, :, -1], atol=1e-5)
    assert ref.shape[-1] == 100 - r + 1  # no padding: one output frame per full field
    assert model.body(x[:, :, -r:]).shape[-1] == 1


@pytest.mark.parametrize("name", ["streamtcn", "streamtcn_rel"])
@pytest.mark.parametrize("hop", [1, 3, 5, 17, 66])
def test_the_step_module_gives_the_whole_model_after_any_number_of_hops(hop, name):
    model = trained_looking(1, name)
    frames = model.frontend(0.1 * torch.randn(1, 16000 * 3)).squeeze(1)  # [1, 40, frames]
    step = StreamStep(model, WINDOW_FRAMES)
    state = [torch.zeros(s) for _, s in model.state_shapes(WINDOW_FRAMES)]
    seen, checked = 0, 0
    with torch.no_grad():
        while seen + hop <= frames.shape[-1]:
            logits, *state = step(frames[:, :, seen : seen + hop], *state)
            seen += hop
            if seen >= WINDOW_FRAMES:
                whole = model.classifier(model.body(frames[:, :, seen - WINDOW_FRAMES : seen]).amax(-1))
                assert torch.allclose(logits, whole, atol=1e-4)  # folded weights round differently
                checked += 1
    assert checked >= 1


def test_the_relative_student_does_not_hear_a_change_of_gain():
    """streamtcn_rel: every frame less its mean over the bands, so a gain (a constant added to the
    log-mel of a signal well above the floor) leaves the logits as they were."""
    model = trained_looking(2, "streamtcn_rel")
    x = torch.randn(1, 40, 66) - 4.0
    with torch.no_grad():
        ref = model.classifier(model.body(x).amax(-1))
        louder = model.classifier(model.body(x + 2.3).amax(-1))  # about +10 dB
        plain = trained_looking(2, "streamtcn")
        assert torch.allclose(louder, ref, atol=1e-5)
        assert not torch.allclose(plain.classifier(plain.body(x + 2.3).amax(-1)), plain.classifier(plain.body(x).amax(-1)), atol=1e-3)

"""Students: shapes, sizes, MAC counting, and a front end that hears what it should."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from edgekd_train.models import build_student, count_macs, count_params, macs_per_second, macs_per_window  # noqa: E402
from edgekd_train.models.frontend import LogMel, LogMelConfig, mel_matrix  # noqa: E402

pytestmark = pytest.mark.train

RATE = 16000
WINDOW = 3 * RATE


@pytest.mark.parametrize(
    ("name", "lo", "hi"),
    [("wav2small", 65_000, 80_000), ("wav2tiny", 12_000, 18_000), ("cnn", 10_000, 120_000)],
)
@pytest.mark.slow
def test_student_shapes_and_sizes(name: str, lo: int, hi: int) -> None:
    torch.manual_seed(0)
    model = build_student(name, n_labels=7)
    n = count_params(model)
    assert lo <= n <= hi, f"{name} has {n} trainable parameters"
    model.eval()
    logits = model(torch.randn(3, WINDOW) * 0.1)
    assert logits.shape == (3, 7)
    assert torch.isfinite(logits).all()
    # a shorter window (keywords: 1 s) runs through the same graph
    assert model(torch.randn(2, RATE) * 0.1).shape == (2, 7)


def test_frozen_front_end_is_not_trained() -> None:
    model = build_student("wav2tiny", 4)
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen and all(n.startswith("frontend.") for n in frozen)
    assert count_params(model) < count_params(model, trainable_only=False)


def test_wav2tiny_is_much_cheaper_than_wav2small() -> None:
    small = macs_per_second(build_student("wav2small", 7), RATE)
    tiny = macs_per_second(build_student("wav2tiny", 7), RATE)
    assert tiny < small / 3
    # A wav2vec2-base teacher costs several GMACs per second of audio; the students stay
    # in the tens of millions, which a Raspberry Pi runs in real time many times over.
    assert small < 50e6 and tiny < 15e6


def test_mac_count_matches_a_hand_count() -> None:
    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv1d(1, 2, kernel_size=4, stride=2)  # [1,1,10] -> [1,2,4]
            self.conv2d = nn.Conv2d(2, 3, kernel_size=(1, 3), padding=(0, 1), groups=1)  # [1,2,1,4] -> [1,3,1,4]
            self.fc = nn.Linear(4, 5)  # [1,3,4] -> [1,3,5]

        def forward(self, wave: torch.Tensor) -> torch.Tensor:
            h = self.conv(wave.unsqueeze(1)).unsqueeze(2)
            h = self.conv2d(h).squeeze(2)
            return self.fc(h)

    # conv: 2 ch * 4 steps outputs, 1*4 MACs each = 32; conv2d: 3*4 outputs, 2*1*3 each = 72;
    # linear: 3*5 outputs, 4 each = 60
    assert count_macs(Tiny(), torch.zeros(1, 10)) == 32 + 72 + 60
    assert macs_per_window(Tiny(), 10) == 164
    assert math.isclose(macs_per_second(Tiny(), rate=10, seconds=1.0), 164.0)


def test_count_macs_wants_one_item() -> None:
    with pytest.raises(ValueError, match="batch of one"):
        count_macs(build_student("cnn", 2), torch.zeros(2, RATE))


def test_mel_filters_are_never_empty() -> None:
    fb = mel_matrix(16000, 256, 64, 40.0, 8000.0)  # short FFT: low mels narrower than a bin
    assert fb.shape == (64, 129)
    assert (fb.sum(dim=1) > 0).all()


def test_front_end_puts_a_tone_in_the_right_mel_band() -> None:
    cfg = LogMelConfig(RATE, n_fft=400, hop=160, n_mels=40, normalize=False)
    fe = LogMel(cfg)
    t = torch.arange(RATE) / RATE
    for freq in (300.0, 1000.0, 4000.0):
        mel = fe(0.5 * torch.sin(2 * math.pi * freq * t)[None]).squeeze()  # [n_mels, frames]
        band = int(mel.mean(dim=1).argmax())
        fb = fe.mel.weight
        peak_hz = float(band_centre_hz(fb, band, RATE, cfg.n_fft))
        assert abs(peak_hz - freq) / freq < 0.15, f"{freq} Hz tone peaks in band {band} at {peak_hz:.0f} Hz"


def band_centre_hz(fb: torch.Tensor, band: int, rate: int, n_fft: int) -> torch.Tensor:
    freqs = torch.linspace(0, rate / 2, n_fft // 2 + 1)
    return (fb[band] * freqs).sum() / fb[band].sum()


def test_gain_of_the_microphone_does_not_change_the_answer() -> None:
    torch.manual_seed(1)
    model = build_student("wav2tiny", 7).eval()
    # speech-like: a harmonic tone with a rising pitch, plus a little noise
    t = torch.arange(WINDOW) / RATE
    f0 = 150 + 50 * t
    wave = sum(torch.sin(2 * math.pi * k * torch.cumsum(f0, 0) / RATE) / k for k in range(1, 6))
    wave = (0.3 * wave + 0.02 * torch.randn(WINDOW))[None]  # noise at -34 dBFS
    with torch.no_grad():
        loud, quiet = model(wave), model(wave * 0.05)  # 26 dB less gain
    assert torch.allclose(loud, quiet, atol=1e-3), (loud - quiet).abs().max()


def test_silence_gives_finite_logits() -> None:
    model = build_student("wav2small", 3).eval()
    with torch.no_grad():
        assert torch.isfinite(model(torch.zeros(1, WINDOW))).all()


def test_unknown_student_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="wav2small, wav2tiny, cnn"):
        build_student("resnet", 3)


def test_students_follow_the_sample_rate() -> None:
    model = build_student("wav2tiny", 2, sample_rate=8000)
    assert model.frontend.cfg.n_fft == 160 and model.sample_rate == 8000
    assert model.eval()(torch.randn(1, 24000)).shape == (1, 2)


def test_attention_weights_sum_to_one_over_time() -> None:
    model = build_student("wav2small", 4).eval()
    logits, weights = model.forward_with_attention(torch.randn(2, WINDOW) * 0.1)
    assert logits.shape == (2, 4)
    assert torch.allclose(weights.sum(dim=-1), torch.ones(2), atol=1e-5)
    assert weights.shape[-1] == model.features(torch.randn(1, WINDOW)).shape[-1]


def test_specaugment_masks_only_while_training() -> None:
    from edgekd_train.models.specaug import SpecAugment, SpecAugmentConfig

    torch.manual_seed(0)
    aug = SpecAugment(SpecAugmentConfig(n_freq_masks=1, max_freq=8, n_time_masks=1, max_time=20))
    spec = torch.randn(16, 1, 40, 100)
    masked = aug.train()(spec)
    assert masked.shape == spec.shape
    zero = masked == 0
    assert zero.any()
    # masks are whole bands: a zeroed mel bin is zero in every frame, a zeroed frame in every bin
    bins, frames = zero.all(dim=3).squeeze(1), zero.all(dim=2).squeeze(1)
    explained = bins[:, None, :, None] | frames[:, None, None, :]
    assert torch.equal(zero, explained)
    assert int(bins.sum(dim=1).max()) <= 8 and int(frames.sum(dim=1).max()) <= 20
    assert torch.equal(aug.eval()(spec), spec)


def test_wav2small_is_deterministic_in_eval_mode_despite_specaugment() -> None:
    model = build_student("wav2small", 3)
    assert model.cfg.specaug is not None
    x = torch.randn(2, RATE) * 0.1
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


@pytest.mark.slow
def test_the_table_of_students_prints_params_and_macs() -> None:
    from typer.testing import CliRunner

    from edgekd_train.cli import app

    result = CliRunner().invoke(app, ["students", "--labels", "7", "--seconds", "3"])
    assert result.exit_code == 0, result.output
    out = result.output
    small = build_student("wav2small", 7)
    line = next(row for row in out.splitlines() if row.startswith("wav2small"))
    assert f"{count_params(small):,}" in line
    assert f"{macs_per_window(small, WINDOW) / 1e6:.1f}" in line

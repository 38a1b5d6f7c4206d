"""The distillation loop on real recordings: it learns, the teacher stays frozen, it resumes after a crash."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from edgekd_train.distill.loop import DistillConfig, distill, evaluate_logits, lr_factor  # noqa: E402
from edgekd_train.distill.tensor_augment import TensorAugment, TensorAugmentConfig  # noqa: E402
from edgekd_train.models import build_student  # noqa: E402

pytestmark = pytest.mark.train

ALSA = Path("/usr/share/sounds/alsa")
RATE = 16000
WINDOW = 8000  # 0.5 s keeps every test in seconds


@pytest.fixture(scope="module")
def real_windows() -> tuple[np.ndarray, np.ndarray]:
    """Half-second windows of a real person saying 'Front ...' (label 0) or 'Rear ...' (label 1)."""
    from edgekd_train.data.audio import load_audio

    files = sorted(p for p in ALSA.glob("*.wav") if p.name.startswith(("Front", "Rear")))
    if len(files) < 4:
        pytest.skip("needs /usr/share/sounds/alsa/*.wav (Debian package alsa-utils)")
    xs, ys = [], []
    for f in files:
        audio = load_audio(f, RATE)
        for start in (0, 4000, 8000):
            xs.append(np.pad(audio[start : start + WINDOW], (0, max(0, start + WINDOW - len(audio)))))
            ys.append(0 if f.name.startswith("Front") else 1)
    return np.stack(xs).astype(np.float32), np.array(ys, dtype=np.int64)


def _cfg(**kw: object) -> DistillConfig:
    base = dict(epochs=6, batch_size=6, lr=1e-2, progress=False, device="cpu", warmup_frac=0.2)
    base.update(kw)
    return DistillConfig(**base)  # type: ignore[arg-type]


def _ce(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    logits = evaluate_logits(model, torch.from_numpy(x))
    return float(nn.functional.cross_entropy(logits, torch.from_numpy(y)))


@pytest.mark.slow
def test_student_learns_the_labels_without_a_teacher(real_windows) -> None:
    x, y = real_windows
    torch.manual_seed(0)
    student = build_student("wav2tiny", 2)
    before = _ce(student, x, y)
    history = distill(student, x, y, x, y, cfg=_cfg(alpha=1.0, epochs=6))
    assert history["teacher"].startswith("none")
    assert len(history["train_loss"]) == 6 and history["steps"] == 6 * (len(x) // 6)
    assert history["train_loss"][-1] < history["train_loss"][0]
    assert _ce(student, x, y) < before
    assert history["best_val_acc"] == max(history["val_acc"])
    assert not student.training  # handed back ready for evaluation


class CountingTeacher(nn.Module):
    """A small frozen classifier that counts what it is asked."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.net = build_student("wav2tiny", 2)
        self.calls: list[tuple[int, ...]] = []
        self.modes: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(x.shape))
        self.modes.append(self.training)
        return self.net(x) * 3.0


def test_teacher_is_frozen_in_eval_mode_and_cached_once(real_windows) -> None:
    x, y = real_windows
    teacher = CountingTeacher()
    teacher.train()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    torch.manual_seed(0)
    student = build_student("wav2tiny", 2)
    history = distill(student, x, y, teacher_fn=teacher, cfg=_cfg(alpha=0.0, T=2.0, epochs=3))
    assert history["teacher"] == "cached (computed once)"
    assert sum(c[0] for c in teacher.calls) == len(x)  # once over the data, not once per epoch
    assert not any(teacher.modes)  # always eval mode (BatchNorm and dropout frozen)
    assert all(p.grad is None for p in teacher.parameters())
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before[k]), f"teacher {k} changed"


@pytest.mark.slow
def test_with_alpha_zero_the_student_moves_towards_the_teacher(real_windows) -> None:
    x, y = real_windows
    teacher = CountingTeacher().eval()
    t_logits = evaluate_logits(teacher, torch.from_numpy(x))
    flipped = 1 - y  # labels that contradict nothing: alpha=0 must ignore them
    torch.manual_seed(0)
    student = build_student("wav2tiny", 2)

    def kl_to_teacher() -> float:
        s = evaluate_logits(student, torch.from_numpy(x))
        return float(nn.functional.kl_div(s.log_softmax(-1), t_logits.log_softmax(-1), log_target=True,
                                          reduction="batchmean"))  # fmt: skip

    before = kl_to_teacher()
    distill(student, x, flipped, teacher_logits=t_logits, cfg=_cfg(alpha=0.0, T=1.0, epochs=8))
    assert kl_to_teacher() < before


def test_augmented_batches_need_a_teacher_fn(real_windows) -> None:
    x, y = real_windows
    aug = TensorAugment(TensorAugmentConfig(sample_rate=RATE))
    t_logits = torch.zeros(len(x), 2)
    with pytest.raises(ValueError, match="augmented batches need teacher_fn"):
        distill(build_student("wav2tiny", 2), x, y, teacher_logits=t_logits, cfg=_cfg(alpha=0.5), augment=aug)
    with pytest.raises(ValueError, match="give teacher_logits, teacher_outputs or teacher_fn"):
        distill(build_student("wav2tiny", 2), x, y, cfg=_cfg(alpha=0.5))
    with pytest.raises(ValueError, match="expected"):
        distill(build_student("wav2tiny", 2), x, y, teacher_logits=t_logits[:3], cfg=_cfg(alpha=0.5))


@pytest.mark.slow
def test_teacher_sees_the_same_augmented_batch_as_the_student(real_windows) -> None:
    x, y = real_windows
    teacher = CountingTeacher()
    crop = WINDOW - 1600
    aug = TensorAugment(TensorAugmentConfig(crop_samples=crop, sample_rate=RATE, seed=3))
    torch.manual_seed(0)
    history = distill(build_student("wav2tiny", 2), x, y, teacher_fn=teacher, cfg=_cfg(alpha=0.5, epochs=2),
                      augment=aug)  # fmt: skip
    assert history["teacher"].startswith("on the fly")
    assert teacher.calls == [(6, crop)] * history["steps"]


class Crash(RuntimeError):
    pass


class CrashingAugment(TensorAugment):
    def __init__(self, cfg: TensorAugmentConfig, crash_at: int | None) -> None:
        super().__init__(cfg)
        self.crash_at, self.calls = crash_at, 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.crash_at is not None and self.calls == self.crash_at:
            raise Crash("power cut")
        return super().__call__(x)


@pytest.mark.slow
@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_a_crashed_run_resumes_from_its_checkpoint_to_the_same_weights(real_windows, tmp_path, ema) -> None:
    x, y = real_windows
    aug_cfg = TensorAugmentConfig(sample_rate=RATE, seed=1)
    cfg = _cfg(alpha=1.0, epochs=4, ckpt_dir=str(tmp_path / "ckpt"), ema=ema)
    steps_per_epoch = len(x) // cfg.batch_size

    def fresh() -> nn.Module:
        torch.manual_seed(0)
        return build_student("wav2tiny", 2)

    whole = fresh()
    ref = distill(whole, x, y, x, y, cfg=_cfg(alpha=1.0, epochs=4, ema=ema), augment=CrashingAugment(aug_cfg, None))

    with pytest.raises(Crash):  # dies in the middle of epoch 3
        distill(fresh(), x, y, x, y, cfg=cfg, augment=CrashingAugment(aug_cfg, 2 * steps_per_epoch + 2))
    assert (tmp_path / "ckpt" / "last.pt").is_file()
    resumed = fresh()
    hist = distill(resumed, x, y, x, y, cfg=cfg, augment=CrashingAugment(aug_cfg, None))
    assert hist["epoch"] == [1, 2, 3, 4]
    assert hist["train_loss"] == pytest.approx(ref["train_loss"], rel=1e-5)
    for (k, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-5), k


class WeightRecorder:
    """An augmenter that records the live student's weights each time a batch is drawn."""

    def __init__(self, student: nn.Module) -> None:
        self.student, self.seen = student, []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append({k: v.detach().clone() for k, v in self.student.state_dict().items()})
        return x


@pytest.mark.slow
def test_weight_average_is_what_gets_validated_and_kept(real_windows) -> None:
    """With `ema`, the kept network is the exponential moving average of the weights (and BatchNorm
    statistics) after each step, e_1 = w_1, e_k = ema * e_(k-1) + (1 - ema) * w_k, while the live
    training is unchanged."""
    x, y = real_windows
    ema = 0.8

    def run(**kw: object) -> tuple[nn.Module, dict, WeightRecorder]:
        torch.manual_seed(0)
        student = build_student("wav2tiny", 2)
        rec = WeightRecorder(student)
        return student, distill(student, x, y, x, y, cfg=_cfg(alpha=1.0, epochs=2, keep_best=False, **kw),
                                augment=rec), rec

    live, plain, rec = run()
    kept, hist, _ = run(ema=ema)
    assert hist["train_loss"] == pytest.approx(plain["train_loss"], rel=1e-6)  # the average does not steer
    after_step = rec.seen[1:] + [live.state_dict()]  # w_1 .. w_S
    assert len(after_step) == hist["steps"]
    for k, v in kept.state_dict().items():
        if not v.is_floating_point():
            continue
        e = after_step[0][k]
        for w in after_step[1:]:
            e = ema * e + (1 - ema) * w[k]
        assert torch.allclose(v, e, atol=1e-5), k
    trained = [n for n, p in kept.named_parameters() if p.requires_grad]
    assert all(not torch.allclose(kept.state_dict()[n], live.state_dict()[n]) for n in trained)
    acc = float((evaluate_logits(kept, torch.from_numpy(x)).argmax(-1) == torch.from_numpy(y)).float().mean())
    assert hist["val_acc"][-1] == pytest.approx(acc)  # validation judged the average


def test_learning_rate_warms_up_then_decays_to_zero() -> None:
    total, warm = 100, 10
    f = [lr_factor(s, total, warm) for s in range(total + 1)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[9:], f[10:]))
    assert f[total] == 0.0
    assert lr_factor(0, 10, 0) == 1.0


def test_bad_configs_are_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        DistillConfig(batch_size=1)
    with pytest.raises(ValueError, match="alpha"):
        DistillConfig(alpha=2.0)


# --- the GPU batch augmentation -------------------------------------------------------------


def test_augment_crops_shifts_with_zero_fill_and_is_reproducible() -> None:
    x = torch.arange(1, 1001, dtype=torch.float32)[None].repeat(8, 1) / 1000
    cfg = TensorAugmentConfig(crop_samples=800, shift_s=0.01, gain_db=(0.0, 0.0), sample_rate=10000, seed=7)
    a, b = TensorAugment(cfg)(x), TensorAugment(cfg)(x)
    assert a.shape == (8, 800) and torch.equal(a, b)
    for row in a:  # each row is a contiguous run of the input, zero-padded where shifted past an edge
        nz = row[row != 0]
        assert torch.allclose(torch.diff(nz), torch.full_like(nz[1:], 1e-3), atol=1e-6)
        assert len(nz) >= 800 - 100


def test_augment_mixes_noise_at_the_requested_snr() -> None:
    torch.manual_seed(0)
    t = torch.arange(16000) / 16000
    x = (0.2 * torch.sin(2 * torch.pi * 440 * t))[None].repeat(4, 1)
    noise = torch.randn(50000) * 0.3
    cfg = TensorAugmentConfig(shift_s=0.0, gain_db=(0.0, 0.0), snr_db=(10.0, 10.0), p_noise=1.0)
    y = TensorAugment(cfg, noise=noise)(x)
    snr = 10 * torch.log10(x.pow(2).mean(1) / (y - x).pow(2).mean(1))
    assert torch.allclose(snr, torch.full_like(snr, 10.0), atol=0.1)


def test_augment_gain_stays_in_range() -> None:
    x = torch.full((64, 100), 0.1)
    y = TensorAugment(TensorAugmentConfig(shift_s=0.0, gain_db=(-6.0, 6.0)))(x)
    gain_db = 20 * torch.log10(y[:, 50] / 0.1)
    assert gain_db.min() >= -6.001 and gain_db.max() <= 6.001 and gain_db.std() > 1.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_distill_on_cuda_keeps_windows_on_the_device() -> None:
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (32,), generator=g)
    t = torch.arange(WINDOW) / RATE
    x = 0.3 * torch.sin(2 * torch.pi * (200.0 + 400.0 * y[:, None]) * t) + 0.01 * torch.randn(32, WINDOW, generator=g)
    torch.manual_seed(0)
    aug = TensorAugment(TensorAugmentConfig(sample_rate=RATE, p_noise=1.0, snr_db=(20.0, 30.0)),
                        noise=torch.randn(20000) * 0.1)  # fmt: skip
    teacher = CountingTeacher().cuda()
    student = build_student("wav2tiny", 2)
    history = distill(student, x, y, x, y, teacher_fn=teacher, augment=aug,
                      cfg=_cfg(alpha=0.5, epochs=8, batch_size=8, device="cuda"))  # fmt: skip
    assert history["device"].startswith("cuda") and next(student.parameters()).is_cuda
    assert aug.noise is not None and aug.noise.is_cuda
    assert history["train_loss"][-1] < history["train_loss"][0]


def _linear_teacher(n_labels: int = 2) -> nn.Module:
    torch.manual_seed(7)
    return nn.Sequential(nn.Linear(WINDOW - 1600, n_labels)).eval()


@pytest.mark.slow
@pytest.mark.parametrize("balance", ["none", "group"])
def test_teacher_steps_serve_every_student_of_a_seed_with_the_live_teachers_logits(real_windows, balance) -> None:
    """One pass of the teacher per seed stands in for it in any student's run: same losses, no misses."""
    from edgekd_train.distill.teacher_steps import TeacherSteps

    x, y = real_windows
    groups = np.array(["a"] * (len(x) - 4) + ["b"] * 4)
    teacher = _linear_teacher()
    aug_cfg = TensorAugmentConfig(crop_samples=WINDOW - 1600, sample_rate=RATE, seed=5)
    cfg = _cfg(alpha=0.5, T=2.0, epochs=3, balance=balance, seed=2)
    steps = TeacherSteps.compute(teacher, torch.from_numpy(x), cfg, TensorAugment(aug_cfg), groups)
    for name, T in (("wav2tiny", 2.0), ("wav2small", 3.0)):
        run_cfg = _cfg(alpha=0.5, T=T, epochs=3, balance=balance, seed=2)
        torch.manual_seed(0)
        live = distill(build_student(name, 2), x, y, teacher_fn=teacher, cfg=run_cfg, augment=TensorAugment(aug_cfg),
                       groups=groups)  # fmt: skip
        steps.calls = steps.hits = steps.misses = 0
        torch.manual_seed(0)
        cached = distill(build_student(name, 2), x, y, teacher_fn=steps, cfg=run_cfg, augment=TensorAugment(aug_cfg),
                         groups=groups)  # fmt: skip
        assert (steps.hits, steps.misses) == (len(steps), 0)
        assert cached["train_loss"] == pytest.approx(live["train_loss"], rel=1e-5)


def test_teacher_steps_fall_back_to_the_live_teacher_for_a_batch_they_do_not_hold(real_windows, tmp_path) -> None:
    from edgekd_train.distill.teacher_steps import TeacherSteps

    x, _ = real_windows
    teacher = _linear_teacher()
    aug_cfg = TensorAugmentConfig(crop_samples=WINDOW - 1600, sample_rate=RATE, seed=5)
    TeacherSteps.compute(teacher, torch.from_numpy(x), _cfg(epochs=1), TensorAugment(aug_cfg)).save(tmp_path / "s.pt")
    steps = TeacherSteps.load(tmp_path / "s.pt", fallback=teacher)
    other = TensorAugment(TensorAugmentConfig(crop_samples=WINDOW - 1600, sample_rate=RATE, seed=6))(torch.from_numpy(x[:6]))
    with torch.no_grad():
        assert torch.equal(steps(other), teacher(other))
    assert (steps.hits, steps.misses) == (0, 1)
    with pytest.raises(RuntimeError, match="no live teacher"):
        TeacherSteps.load(tmp_path / "s.pt")(other)


def test_group_balance_draws_each_group_about_equally_often(real_windows) -> None:
    from edgekd_train.distill.loop import epoch_order, group_weights

    groups = np.array(["big"] * 90 + ["small"] * 10)
    g = torch.Generator().manual_seed(0)
    drawn = torch.cat([epoch_order(100, g, group_weights(groups)) for _ in range(50)]).numpy()
    share = float(np.mean(drawn >= 90))
    assert 0.45 < share < 0.55
    with pytest.raises(ValueError, match="needs groups"):
        distill(build_student("wav2tiny", 2), *real_windows, cfg=_cfg(alpha=1.0, balance="group"))

"""The one training loop and its loss terms: each term, their sum, resume, time limit, weight average."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from edgekd_train.distill import loop  # noqa: E402
from edgekd_train.distill.loop import DistillConfig, distill, schedule, warmup_steps  # noqa: E402
from edgekd_train.distill.tensor_augment import TensorAugment, TensorAugmentConfig  # noqa: E402
from edgekd_train.distill.terms import FeaturePenalty, Hinton, Outputs, total_loss  # noqa: E402
from edgekd_train.temporal.loss import TemporalAttention, temporal_kl  # noqa: E402

pytestmark = [pytest.mark.train, pytest.mark.usefixtures("torch_one_thread")]

RATE = 8000
SAMPLES = 800
LABELS = 3


class Tiny(nn.Module):
    """A conv feature map, attention pooling over its frames and a linear head."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv1d(1, 8, 16, stride=8)
        self.bn = nn.BatchNorm1d(8)
        self.score = nn.Conv1d(8, 1, 1)
        self.head = nn.Linear(8, LABELS)
        self.n_labels = LABELS

    def training_outputs(self, x: torch.Tensor) -> Outputs:
        h = torch.relu(self.bn(self.conv(x[:, None])))
        w = torch.softmax(self.score(h)[:, 0], dim=-1)
        return Outputs(self.head((h * w[:, None]).sum(-1)), frame_weights=w, features=h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.training_outputs(x).logits


def teacher_of(net: nn.Module):
    net.eval()

    def fn(x: torch.Tensor) -> Outputs:
        return net.training_outputs(x)

    return fn


@pytest.fixture(scope="module")
def windows() -> tuple[torch.Tensor, torch.Tensor]:
    """Three tones in noise, eight windows each."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(24) % LABELS
    t = torch.arange(SAMPLES) / RATE
    x = 0.5 * torch.sin(2 * torch.pi * (300.0 + 600.0 * y[:, None]) * t) + 0.1 * torch.randn(24, SAMPLES, generator=g)
    return x, y


def _cfg(**kw: object) -> DistillConfig:
    base = dict(epochs=4, batch_size=6, lr=1e-2, warmup_frac=0.2, device="cpu", progress=False, seed=3, alpha=1.0)
    return DistillConfig(**{**base, **kw})  # type: ignore[arg-type]


# --- the terms ------------------------------------------------------------------------------


def test_hinton_term_is_cross_entropy_plus_the_scaled_soft_term():
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(5, LABELS, generator=g), torch.randn(5, LABELS, generator=g)
    labels = torch.tensor([0, 1, 2, 0, 1])
    ce = nn.functional.cross_entropy(s, labels)
    kl = (torch.softmax(t / 3, -1) * (torch.log_softmax(t / 3, -1) - torch.log_softmax(s / 3, -1))).sum(-1).mean()
    assert torch.allclose(Hinton(T=3.0, alpha=0.25)(Outputs(s), Outputs(t), labels), 0.25 * ce + 0.75 * 9 * kl)
    assert torch.allclose(Hinton(alpha=1.0)(Outputs(s), None, labels), ce)  # the labels alone, no teacher
    assert not Hinton(alpha=1.0).needs_teacher and Hinton(alpha=0.5).needs_teacher
    with pytest.raises(ValueError, match="alpha"):
        Hinton(alpha=1.5)


def test_feature_penalty_is_beta_times_the_mean_squared_distance_and_spares_the_teacher():
    f = torch.randn(2, 8, 10, requires_grad=True)
    tf = torch.randn(2, 8, 10, requires_grad=True)
    logits = torch.zeros(2, LABELS)
    loss = FeaturePenalty(0.5)(Outputs(logits, features=f), Outputs(logits, features=tf), torch.tensor([0, 1]))
    assert torch.allclose(loss, 0.5 * ((f - tf) ** 2).mean())
    loss.backward()
    assert f.grad is not None and tf.grad is None
    with pytest.raises(ValueError, match="CNN features"):
        FeaturePenalty(1.0)(Outputs(logits), Outputs(logits, features=tf), torch.tensor([0, 1]))


def test_temporal_term_is_lambda_times_the_kl_between_frame_weights():
    g = torch.Generator().manual_seed(2)
    s, t = torch.softmax(torch.randn(4, 12, generator=g), -1), torch.softmax(torch.randn(4, 24, generator=g), -1)
    logits = torch.zeros(4, LABELS)
    got = TemporalAttention(0.3)(Outputs(logits, frame_weights=s), Outputs(logits, frame_weights=t), torch.zeros(4))
    assert torch.allclose(got, 0.3 * temporal_kl(t, s))
    with pytest.raises(ValueError, match="TemporalStudent"):
        TemporalAttention(0.3)(Outputs(logits), Outputs(logits, frame_weights=t), torch.zeros(4))


@pytest.mark.parametrize("term", [lambda: TemporalAttention(0.0), lambda: FeaturePenalty(0.0)])
def test_a_term_with_no_weight_is_refused_rather_than_computed(term):
    with pytest.raises(ValueError, match="leave the term out"):
        term()


def test_terms_add_up_in_order_and_their_gradients_too():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(4, LABELS, generator=g, requires_grad=True)
    w = torch.softmax(torch.randn(4, 9, generator=g), -1).requires_grad_(True)
    f = torch.randn(4, 8, 9, generator=g, requires_grad=True)
    student = Outputs(logits, frame_weights=w, features=f)
    teacher = Outputs(torch.randn(4, LABELS, generator=g), torch.softmax(torch.randn(4, 9, generator=g), -1),
                      torch.randn(4, 8, 9, generator=g))  # fmt: skip
    labels = torch.tensor([0, 1, 2, 1])
    terms = [Hinton(2.0, 0.5), TemporalAttention(0.7), FeaturePenalty(0.2)]
    grads = []
    for term in terms:
        term(student, teacher, labels).backward()
        grads.append([torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in (logits, w, f)])
        for p in (logits, w, f):
            p.grad = None
    total = total_loss(terms, student, teacher, labels)
    assert float(total) == pytest.approx(sum(float(t(student, teacher, labels)) for t in terms), rel=1e-6)
    total.backward()
    for i, p in enumerate((logits, w, f)):
        assert torch.allclose(p.grad, sum(gr[i] for gr in grads), atol=1e-6)
    with pytest.raises(ValueError, match="at least one"):
        total_loss([], student, teacher, labels)


# --- the loop ---------------------------------------------------------------------------------


def test_the_loop_minimises_the_terms_it_is_given(windows):
    """A feature penalty added to Hinton's term pulls the student's features towards the teacher's."""
    x, y = windows
    teacher = Tiny(seed=9)
    fn = teacher_of(teacher)

    def feature_gap(student: nn.Module) -> float:
        student.eval()
        with torch.no_grad():
            return float(((student.training_outputs(x).features - fn(x).features) ** 2).mean())

    gaps = {}
    for name, terms in (("hinton", [Hinton(alpha=1.0)]), ("hinton+features", [Hinton(alpha=1.0), FeaturePenalty(5.0)])):
        student = Tiny(seed=0)
        hist = distill(student, x, y, cfg=_cfg(epochs=8), teacher_fn=fn, terms=terms)
        gaps[name] = feature_gap(student)
        assert hist["terms"] == [repr(t) for t in terms]
    assert gaps["hinton+features"] < 0.5 * gaps["hinton"]


def test_the_teacher_runs_only_when_a_term_reads_it(windows):
    x, y = windows
    calls = []

    def teacher(xb: torch.Tensor) -> torch.Tensor:
        calls.append(len(xb))
        return torch.zeros(len(xb), LABELS)

    hist = distill(Tiny(0), x, y, cfg=_cfg(epochs=1), teacher_fn=teacher, terms=[Hinton(alpha=1.0)])
    assert calls == [] and hist["teacher"].startswith("none")
    distill(Tiny(0), x, y, cfg=_cfg(epochs=2), teacher_fn=teacher, terms=[Hinton(alpha=0.5)])
    assert sum(calls) == len(x)  # un-augmented windows: once over the data, cached
    calls.clear()
    distill(Tiny(0), x, y, cfg=_cfg(epochs=2, cache_teacher=False), teacher_fn=teacher, terms=[Hinton(alpha=0.5)])
    assert calls == [6] * 8  # every batch of every epoch


class Crash(RuntimeError):
    pass


class CrashingAugment(TensorAugment):
    def __init__(self, crash_at: int | None) -> None:
        super().__init__(TensorAugmentConfig(sample_rate=RATE, shift_s=0.01, seed=4))
        self.crash_at, self.calls = crash_at, 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.crash_at is not None and self.calls == self.crash_at:
            raise Crash("power cut")
        return super().__call__(x)


@pytest.mark.parametrize("ema", [0.0, 0.8])
def test_a_crashed_run_with_every_term_resumes_to_the_same_weights_bit_for_bit(windows, tmp_path, ema):
    x, y = windows
    fn = teacher_of(Tiny(seed=9))
    terms = [Hinton(2.0, 0.5), TemporalAttention(0.5), FeaturePenalty(0.1)]
    whole = Tiny(0)
    ref = distill(whole, x, y, x, y, cfg=_cfg(ema=ema), teacher_fn=fn, augment=CrashingAugment(None), terms=terms)
    cfg = _cfg(ema=ema, ckpt_dir=str(tmp_path / "ckpt"))
    steps_per_epoch = schedule(len(x), cfg)[1]
    with pytest.raises(Crash):  # dies in the middle of epoch 3
        distill(Tiny(0), x, y, x, y, cfg=cfg, teacher_fn=fn, augment=CrashingAugment(2 * steps_per_epoch + 2),
                terms=terms)  # fmt: skip
    resumed = Tiny(0)
    hist = distill(resumed, x, y, x, y, cfg=cfg, teacher_fn=fn, augment=CrashingAugment(None), terms=terms)
    assert hist["epoch"] == [1, 2, 3, 4]
    assert hist["train_loss"] == ref["train_loss"] and hist["val_acc"] == ref["val_acc"]
    for (k, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k


class FakeClock:
    """Time that moves only when a batch is drawn: 10 s a batch."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def perf_counter(self) -> float:
        return self.now


def test_time_limit_stops_between_epochs_and_a_rerun_finishes_the_run(windows, tmp_path, monkeypatch):
    x, y = windows
    clock = FakeClock()
    monkeypatch.setattr(loop, "time", clock)

    def ticking(xb: torch.Tensor) -> torch.Tensor:
        clock.now += 10.0
        return xb

    whole = Tiny(0)
    ref = distill(whole, x, y, x, y, cfg=_cfg(), augment=ticking)
    cfg = _cfg(time_limit_s=55.0, ckpt_dir=str(tmp_path / "ckpt"))  # 4 batches an epoch: 40 s
    clock.now = 0.0
    first = distill(Tiny(0), x, y, x, y, cfg=cfg, augment=ticking)
    assert first["epoch"] == [1, 2] and first["stopped_by_time_limit"]  # epoch 2 started at 40 s < 55 s
    clock.now = 0.0
    resumed = Tiny(0)
    rest = distill(resumed, x, y, x, y, cfg=cfg, augment=ticking)
    assert rest["epoch"] == [1, 2, 3, 4] and not rest["stopped_by_time_limit"]
    assert rest["train_loss"] == ref["train_loss"]
    for (k, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k


def test_weight_average_is_validated_and_kept_without_steering_training(windows):
    x, y = windows
    live = Tiny(0)
    plain = distill(live, x, y, x, y, cfg=_cfg(keep_best=False))
    kept = Tiny(0)
    hist = distill(kept, x, y, x, y, cfg=_cfg(keep_best=False, ema=0.8))
    assert hist["train_loss"] == plain["train_loss"]
    assert not torch.equal(kept.head.weight, live.head.weight)
    with torch.no_grad():
        acc = float((kept.eval()(x).argmax(-1) == y).float().mean())
    assert hist["val_acc"][-1] == pytest.approx(acc)


def test_warmup_in_epochs_and_weight_decay_on_every_parameter():
    cfg = _cfg(epochs=10, warmup_epochs=2.0)
    assert warmup_steps(cfg, steps_per_epoch=4, total=40) == 8
    assert warmup_steps(_cfg(epochs=10, warmup_frac=0.25), steps_per_epoch=4, total=40) == 10
    net = Tiny(0)
    only_weights = loop._param_groups(net, 0.01)
    every = loop._param_groups(net, 0.01, decay_all=True)
    assert len(every) == 1 and len(every[0]["params"]) == len(list(net.parameters()))
    assert {id(p) for p in only_weights[1]["params"]} == {id(p) for p in net.parameters() if p.ndim == 1}
    with pytest.raises(ValueError, match="time_limit_s"):
        _cfg(time_limit_s=-1.0)


def test_a_resumed_run_is_served_by_shared_teacher_steps_from_where_it_stopped(windows, tmp_path):
    from edgekd_train.distill.teacher_steps import TeacherSteps

    x, y = windows
    net = Tiny(seed=9).eval()

    def teacher(xb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = net.training_outputs(xb)
        return out.logits, out.frame_weights

    terms = [Hinton(2.0, 0.5), TemporalAttention(0.5)]
    cfg = _cfg(ckpt_dir=str(tmp_path / "ckpt"))
    steps = TeacherSteps.compute(teacher, x, cfg, CrashingAugment(None))
    whole = Tiny(0)
    distill(whole, x, y, cfg=_cfg(), teacher_fn=teacher, augment=CrashingAugment(None), terms=terms)
    with pytest.raises(Crash):
        distill(Tiny(0), x, y, cfg=cfg, teacher_fn=steps, augment=CrashingAugment(7), terms=terms)
    resumed = Tiny(0)
    distill(resumed, x, y, cfg=cfg, teacher_fn=steps, augment=CrashingAugment(None), terms=terms)
    assert steps.misses == 0 and steps.hits == len(steps) + 2  # the two steps of the crashed epoch ran twice
    for (k, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), k


def test_soft_weights_ride_with_the_batches_and_none_keeps_the_loop_as_it_was(windows):
    """All ones trains as no soft_weights (the same loss per step); a window weighted 0 never feels its
    soft targets, so the teacher's answers on it change nothing; out-of-range weights are refused."""
    x, y = windows
    base = Tiny(0)
    hist = distill(base, x, y, cfg=_cfg(alpha=0.5), teacher_fn=teacher_of(Tiny(9)))
    ones = Tiny(0)
    hist_ones = distill(ones, x, y, cfg=_cfg(alpha=0.5), teacher_fn=teacher_of(Tiny(9)), soft_weights=torch.ones(len(x)))
    assert hist_ones["train_loss"] == pytest.approx(hist["train_loss"], rel=1e-5)
    assert hist_ones["soft_weights"] == {"windows": 24, "full": 24, "none": 0, "mean": 1.0, "read": True}
    assert "soft_weights" not in hist

    clips = (torch.arange(len(x)) < 12).float()  # soft targets on the first half only
    teacher = Tiny(9).eval()
    with torch.no_grad():
        tl = teacher(x)
    other = tl.clone()
    other[12:] = -3 * tl[12:] + 1.0  # a different teacher on the unweighted windows
    states = []
    for logits in (tl, other):
        student = Tiny(0)
        distill(student, x, y, cfg=_cfg(alpha=0.5), teacher_logits=logits, soft_weights=clips)
        states.append(student.state_dict())
    for k in states[0]:
        assert torch.allclose(states[0][k].float(), states[1][k].float(), atol=1e-6), k
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        distill(Tiny(0), x, y, cfg=_cfg(alpha=0.5), teacher_logits=tl, soft_weights=torch.full((len(x),), 2.0))
    with pytest.raises(ValueError, match="one weight per training window"):
        distill(Tiny(0), x, y, cfg=_cfg(alpha=0.5), teacher_logits=tl, soft_weights=torch.ones(5))

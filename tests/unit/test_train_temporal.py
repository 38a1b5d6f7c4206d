"""Temporal distillation: rollout, mass-keeping interpolation, the loss, the training-only query."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")

from edgekd_train.distill.loop import DistillConfig, distill  # noqa: E402
from edgekd_train.distill.terms import Hinton, Outputs, total_loss  # noqa: E402
from edgekd_train.temporal.interpolate import resample_weights  # noqa: E402
from edgekd_train.temporal.loss import TemporalAttention, temporal_kl  # noqa: E402
from edgekd_train.temporal.query import TemporalStudent  # noqa: E402
from edgekd_train.temporal.rollout import attention_rollout, cache_teacher, frame_weights, teacher_outputs  # noqa: E402

pytestmark = [pytest.mark.train, pytest.mark.usefixtures("torch_one_thread")]


def test_rollout_of_a_hand_made_stack_gives_the_expected_frame_weights():
    # layer 1: every frame attends to frame 0 (both heads); layer 2: head 0 attends to itself, head 1 to frame 2
    t = 3
    l1 = torch.zeros(1, 2, t, t)
    l1[..., 0] = 1.0
    l2 = torch.zeros(1, 2, t, t)
    l2[0, 0] = torch.eye(t)
    l2[0, 1, :, 2] = 1.0
    a1 = 0.5 * l1[0].mean(0) + 0.5 * torch.eye(t)  # rows already sum to one
    a2 = 0.5 * l2[0].mean(0) + 0.5 * torch.eye(t)
    expected_rollout = a2 @ a1
    # by hand: a2 = 0.75 I + 0.25 (every row to frame 2), so a2 @ a1 has rows
    # [.875, 0, .125], [.5, .375, .125], [.5, 0, .5]
    assert torch.allclose(a1, torch.tensor([[1.0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5]]))
    by_hand = torch.tensor([[0.875, 0, 0.125], [0.5, 0.375, 0.125], [0.5, 0, 0.5]])
    assert torch.allclose(expected_rollout, by_hand)
    rollout = attention_rollout([l1, l2])
    assert torch.allclose(rollout[0], by_hand)
    w = frame_weights(rollout)[0]
    # the column means: frame 0 gets 1.875 / 3, frame 1 0.375 / 3, frame 2 0.75 / 3
    assert torch.allclose(w, torch.tensor([0.625, 0.125, 0.25]), atol=1e-6)
    assert torch.isclose(w.sum(), torch.tensor(1.0))


def test_rollout_of_uniform_attention_is_uniform_and_identity_stays_identity():
    t = 5
    uniform = torch.full((2, 4, t, t), 1.0 / t)
    assert torch.allclose(frame_weights(attention_rollout([uniform] * 3)), torch.full((2, t), 1.0 / t))
    eye = torch.eye(t).expand(1, 2, t, t)
    assert torch.allclose(attention_rollout([eye, eye])[0], torch.eye(t))
    with pytest.raises(ValueError, match="at least one layer"):
        attention_rollout([])


@pytest.mark.parametrize("t_in,t_out", [(49, 13), (49, 98), (7, 7), (10, 3), (3, 10), (1, 4)])
def test_interpolation_keeps_mass(t_in, t_out):
    g = torch.Generator().manual_seed(t_in * 100 + t_out)
    w = torch.rand(4, t_in, generator=g)
    out = resample_weights(w, t_out)
    assert out.shape == (4, t_out)
    assert torch.allclose(out.sum(-1), w.sum(-1), atol=1e-5)
    assert (out >= 0).all()


def test_interpolation_keeps_where_the_mass_is():
    w = torch.zeros(10)
    w[8] = 1.0  # a spike at 80-90% of the clip
    out = resample_weights(w, 5)
    assert torch.allclose(out, torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0]))
    up = resample_weights(torch.tensor([0.25, 0.75]), 4)  # a frame's weight spreads evenly
    assert torch.allclose(up, torch.tensor([0.125, 0.125, 0.375, 0.375]))


def test_temporal_loss_is_zero_for_equal_maps_and_positive_otherwise():
    g = torch.Generator().manual_seed(0)
    s = torch.softmax(torch.randn(3, 13, generator=g), -1)
    assert float(temporal_kl(s, s)) == pytest.approx(0.0, abs=1e-6)
    other = torch.softmax(torch.randn(3, 13, generator=g), -1)
    assert float(temporal_kl(other, s)) > 1e-3
    # a teacher at another frame rate that is the same map, once resampled, also costs nothing
    teacher = resample_weights(s.repeat_interleave(3, dim=-1) / 3, 39)
    assert float(temporal_kl(teacher, s)) == pytest.approx(0.0, abs=1e-5)
    logits, labels = torch.randn(3, 4, generator=g), torch.tensor([0, 1, 2])
    student = Outputs(logits, frame_weights=s)
    terms = [Hinton(alpha=1.0), TemporalAttention(0.5)]
    base = total_loss([Hinton(alpha=1.0)], student, None, labels)
    assert torch.allclose(total_loss(terms, student, Outputs(logits, frame_weights=s), labels), base, atol=1e-6)
    assert float(total_loss(terms, student, Outputs(logits, frame_weights=other), labels)) > float(base)
    with pytest.raises(ValueError, match="temporal weights"):
        total_loss([Hinton(alpha=1.0), TemporalAttention(0.1)], student, Outputs(logits), labels)


def test_teacher_gets_no_gradient_and_student_does():
    t = torch.softmax(torch.randn(2, 8), -1).requires_grad_(True)
    s_logits = torch.randn(2, 8, requires_grad=True)
    temporal_kl(t, torch.softmax(s_logits, -1)).backward()
    assert t.grad is None and s_logits.grad is not None and float(s_logits.grad.abs().sum()) > 0


@pytest.fixture(scope="module")
def tiny_teacher():
    from transformers import Wav2Vec2Config, Wav2Vec2ForSequenceClassification

    torch.manual_seed(0)
    cfg = Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                         conv_dim=(16,) * 7, num_labels=3, num_conv_pos_embeddings=16)  # fmt: skip
    return Wav2Vec2ForSequenceClassification(cfg).eval()  # default (sdpa) attention: switched to eager


def test_teacher_weights_from_a_real_wav2vec2(tiny_teacher):
    audio = torch.randn(2, 16000)
    logits, w = teacher_outputs(tiny_teacher, audio)
    assert logits.shape == (2, 3) and w.shape == (2, 49)
    assert torch.allclose(w.sum(-1), torch.ones(2), atol=1e-5) and (w > 0).all()
    assert tiny_teacher.config._attn_implementation == "eager"
    cl, cw = cache_teacher(tiny_teacher, torch.randn(5, 16000), batch_size=2)
    assert cl.shape == (5, 3) and cw.shape == (5, 49)


def test_temporal_distillation_pulls_the_student_towards_the_teacher_map(tiny_teacher):
    from edgekd_train.models import build_student

    g = torch.Generator().manual_seed(1)
    x = torch.randn(16, 8000, generator=g) * 0.1
    x[:, 2000:3000] += torch.sin(torch.arange(1000) * 0.3)  # something happens at 0.125-0.1875 s
    y = torch.arange(16) % 3
    tl, tw = cache_teacher(tiny_teacher, x)
    torch.manual_seed(0)
    model = TemporalStudent(build_student("wav2tiny", 3))
    assert model.query is not None

    def gap() -> float:
        with torch.no_grad():
            model.eval()
            return float(temporal_kl(tw, model.forward_train(x)[1]))

    before = gap()
    cfg = DistillConfig(epochs=8, batch_size=8, lr=1e-2, alpha=1.0, device="cpu", progress=False, keep_best=False)
    terms = [Hinton(cfg.T, cfg.alpha), TemporalAttention(1.0)]
    hist = distill(model, x, y, cfg=cfg, terms=terms, teacher_outputs=Outputs(tl, frame_weights=tw))
    assert gap() < before * 0.8
    assert hist["steps"] == 16
    with pytest.raises(ValueError, match="teacher"):
        distill(model, x, y, cfg=cfg, terms=terms)


def test_temporal_loop_validates_and_keeps_the_weight_average():
    """`ema` with a temporal student: training is unchanged, the average of the weights (the
    training-only query included) is what validation judges and what is kept."""
    from edgekd_train.models import build_student

    g = torch.Generator().manual_seed(2)
    x = torch.randn(16, 8000, generator=g) * 0.1
    y = torch.arange(16) % 3

    def run(ema: float):
        torch.manual_seed(0)
        model = TemporalStudent(build_student("wav2tiny", 3))
        cfg = DistillConfig(epochs=3, batch_size=8, lr=1e-2, alpha=1.0, device="cpu", progress=False,
                            keep_best=False, ema=ema)
        return model, distill(model, x, y, x, y, cfg=cfg)

    live, plain = run(0.0)
    kept, hist = run(0.8)
    assert hist["train_loss"] == pytest.approx(plain["train_loss"], rel=1e-6)
    assert not torch.allclose(kept.state_dict()["student.classifier.weight"], live.state_dict()["student.classifier.weight"])
    with torch.no_grad():
        acc = float((kept.eval()(x).argmax(-1) == y).float().mean())
    assert hist["val_acc"][-1] == pytest.approx(acc)


def test_teacher_steps_serve_the_temporal_loop_with_logits_and_frame_weights(tiny_teacher, tmp_path):
    """A wav2vec2 teacher's (logits, rollout weights) on a seed's augmented batches, computed once,
    stand in for the live teacher in any student's temporal run: same losses, no misses, after a
    save and load."""
    from edgekd_train.distill.teacher_steps import TeacherSteps, model_id
    from edgekd_train.distill.tensor_augment import TensorAugment, TensorAugmentConfig
    from edgekd_train.models import build_student

    g = torch.Generator().manual_seed(3)
    x = torch.randn(12, 8000, generator=g) * 0.1
    y = torch.arange(12) % 3
    aug_cfg = TensorAugmentConfig(shift_s=0.05, sample_rate=16000, seed=4)

    def teacher(xb):
        return teacher_outputs(tiny_teacher, xb)

    cfg = DistillConfig(epochs=2, batch_size=6, lr=1e-2, alpha=0.5, T=2.0, device="cpu", progress=False, seed=1)
    ident = model_id(tiny_teacher)
    TeacherSteps.compute(teacher, x, cfg, TensorAugment(aug_cfg), teacher_id=ident).save(tmp_path / "steps.pt")
    steps = TeacherSteps.load(tmp_path / "steps.pt", fallback=teacher, teacher_id=ident)
    assert len(steps) == 4 and steps.outputs[1].shape == (4, 6, 24)  # 0.5 s: 24 wav2vec2 frames
    for name, lam in (("wav2tiny", 0.5), ("wav2small", 0.25)):
        losses = []
        steps.calls = 0
        for fn in (teacher, steps):
            torch.manual_seed(0)
            model = TemporalStudent(build_student(name, 3))
            hist = distill(model, x, y, cfg=cfg, teacher_fn=fn, augment=TensorAugment(aug_cfg),
                           terms=[Hinton(cfg.T, cfg.alpha), TemporalAttention(lam)])
            losses.append(hist["train_loss"])
        assert losses[1] == pytest.approx(losses[0], rel=1e-6)
    assert (steps.hits, steps.misses) == (8, 0)
    other = copy.deepcopy(tiny_teacher)
    with torch.no_grad():
        next(other.parameters()).add_(1e-3)
    with pytest.raises(ValueError, match="holds the outputs of teacher"):
        TeacherSteps.load(tmp_path / "steps.pt", teacher_id=model_id(other))


def test_mass_between_counts_the_share_of_weight_inside_a_span():
    from edgekd_train.temporal.interpolate import mass_between

    w = torch.tensor([[0.0, 1.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]])
    # row 0: everything in frame 1 (0.25-0.5 of the clip); row 1 uniform
    share = mass_between(w, torch.tensor([0.25, 0.25]), torch.tensor([0.5, 0.5]))
    assert torch.allclose(share, torch.tensor([1.0, 0.25]))
    half = mass_between(w, torch.tensor([0.375, 0.0]), torch.tensor([1.0, 0.1]))  # edges cut frames
    assert torch.allclose(half, torch.tensor([0.5, 0.1]))


def test_paired_teacher_takes_logits_from_one_and_the_rollout_from_the_other(tiny_teacher):
    from edgekd_train.ensemble import StudentEnsemble
    from edgekd_train.models import build_student
    from edgekd_train.temporal.rollout import PairedTeacher

    torch.manual_seed(0)
    ensemble = StudentEnsemble([build_student("wav2tiny", 3), build_student("wav2tiny", 3)]).eval()
    audio = torch.randn(2, 16000) * 0.1
    paired = PairedTeacher(ensemble, tiny_teacher).eval()
    logits, weights = teacher_outputs(paired, audio)
    with torch.no_grad():
        assert torch.allclose(logits, ensemble(audio)) and torch.allclose(paired(audio), logits)
    assert torch.allclose(weights, teacher_outputs(tiny_teacher, audio)[1])
    assert weights.shape == (2, 49)  # the wav2vec2's frames, not the students'

"""Hinton's loss: alpha = 1 is cross-entropy, the T^2 factor, no gradient into the teacher."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402

from edgekd_train.distill.losses import hinton_loss, soft_kl  # noqa: E402

pytestmark = pytest.mark.train


def _batch(seed: int = 0, b: int = 8, c: int = 5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(b, c, generator=g) * 2
    t = torch.randn(b, c, generator=g) * 3
    y = torch.randint(0, c, (b,), generator=g)
    return s, t, y


def test_alpha_one_is_plain_cross_entropy_and_ignores_the_teacher() -> None:
    s, t, y = _batch()
    ce = F.cross_entropy(s, y)
    assert torch.allclose(hinton_loss(s, t, y, T=2.0, alpha=1.0), ce)
    assert torch.allclose(hinton_loss(s, None, y, T=3.0, alpha=1.0), ce)
    assert torch.allclose(hinton_loss(s, -t * 7, y, T=1.0, alpha=1.0), ce)


def test_alpha_mixes_the_two_terms() -> None:
    s, t, y = _batch(1)
    T, a = 2.0, 0.3
    expected = a * F.cross_entropy(s, y) + (1 - a) * T * T * soft_kl(s, t, T)
    assert torch.allclose(hinton_loss(s, t, y, T=T, alpha=a), expected)
    assert hinton_loss(t, t, y, T=T, alpha=0.0).abs() < 1e-6  # matching the teacher costs nothing


def test_soft_gradient_is_T_times_the_difference_of_softened_probabilities() -> None:
    s, t, y = _batch(2)
    for T in (1.0, 2.0, 3.0):
        s_ = s.clone().requires_grad_(True)
        hinton_loss(s_, t, y, T=T, alpha=0.0).backward()
        expected = T * (torch.softmax(s / T, -1) - torch.softmax(t / T, -1)) / s.shape[0]
        assert torch.allclose(s_.grad, expected, atol=1e-6)


def test_T_squared_keeps_the_soft_gradient_scale_as_T_grows() -> None:
    s, t, y = _batch(3)
    s, t = s - s.mean(-1, keepdim=True), t - t.mean(-1, keepdim=True)

    def grad_norm(fn, T: float) -> float:
        s_ = s.clone().requires_grad_(True)
        fn(s_, T).backward()
        return float(s_.grad.norm())

    scaled = [grad_norm(lambda x, T: hinton_loss(x, t, y, T=T, alpha=0.0), T) for T in (20.0, 40.0)]
    raw = [grad_norm(lambda x, T: soft_kl(x, t, T), T) for T in (20.0, 40.0)]
    assert scaled[1] / scaled[0] == pytest.approx(1.0, rel=0.05)  # T^2 * KL: scale kept
    assert raw[0] / raw[1] == pytest.approx(4.0, rel=0.05)  # bare KL: falls as 1/T^2


def test_no_gradient_reaches_the_teacher() -> None:
    torch.manual_seed(0)
    teacher = torch.nn.Linear(6, 4)
    student = torch.nn.Linear(6, 4)
    x = torch.randn(5, 6)
    y = torch.randint(0, 4, (5,))
    loss = hinton_loss(student(x), teacher(x), y, T=2.0, alpha=0.5)
    loss.backward()
    assert student.weight.grad is not None
    assert teacher.weight.grad is None and teacher.bias.grad is None


def test_missing_teacher_and_mismatched_labels_are_refused() -> None:
    s, t, y = _batch()
    with pytest.raises(ValueError, match="needs teacher logits"):
        hinton_loss(s, None, y, T=2.0, alpha=0.5)
    with pytest.raises(ValueError, match="share the label list"):
        hinton_loss(s, t[:, :3], y, T=2.0, alpha=0.5)
    with pytest.raises(ValueError, match="alpha"):
        hinton_loss(s, t, y, T=2.0, alpha=1.5)
    with pytest.raises(ValueError, match="T must be > 0"):
        hinton_loss(s, t, y, T=0.0, alpha=0.5)


def test_per_window_weights_one_is_the_plain_loss_and_zero_the_labels_alone() -> None:
    s, t, y = _batch(3)
    T, a = 2.0, 0.5
    plain = hinton_loss(s, t, y, T=T, alpha=a)
    assert torch.allclose(hinton_loss(s, t, y, T=T, alpha=a, weights=torch.ones(len(s))), plain, atol=1e-6)
    assert torch.allclose(hinton_loss(s, t, y, T=T, alpha=a, weights=torch.zeros(len(s))), F.cross_entropy(s, y))
    # a mix is the batch mean of each window's own loss: alpha_i = 1 - w_i (1 - alpha)
    w = torch.tensor([1.0, 0.0, 0.5, 1.0, 0.0, 0.25, 1.0, 0.0])
    per = [hinton_loss(s[i : i + 1], t[i : i + 1], y[i : i + 1], T=T, alpha=1 - float(w[i]) * (1 - a)) for i in range(len(s))]
    assert torch.allclose(hinton_loss(s, t, y, T=T, alpha=a, weights=w), torch.stack(per).mean(), atol=1e-6)
    with pytest.raises(ValueError, match="one entry per window"):
        hinton_loss(s, t, y, T=T, alpha=a, weights=torch.ones(3))


def test_a_zero_weight_removes_that_windows_soft_target_gradient() -> None:
    """Window 0 weighted 0: its logits' gradient is the cross-entropy's alone, whatever the teacher says;
    the other windows' gradients keep their soft part."""
    s, t, y = _batch(4)
    w = torch.ones(len(s))
    w[0] = 0.0
    grads = []
    for teacher in (t, -5 * t, t.flip(0)):
        logits = s.clone().requires_grad_(True)
        hinton_loss(logits, teacher, y, T=2.0, alpha=0.5, weights=w).backward()
        grads.append(logits.grad)
    ce_only = s.clone().requires_grad_(True)
    (F.cross_entropy(ce_only, y, reduction="none")[0] / len(s)).backward()
    for g in grads:
        assert torch.allclose(g[0], ce_only.grad[0], atol=1e-6)  # the hard-label gradient, no soft part
    assert not torch.allclose(grads[0][1:], grads[1][1:])  # the weighted windows still hear the teacher

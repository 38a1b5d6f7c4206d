"""A folder of trained students is a teacher: their mean logits, loadable wherever a teacher folder is."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from edgekd_train.checkpoints import save_student  # noqa: E402
from edgekd_train.ensemble import StudentEnsemble, is_ensemble, load_teacher, write_ensemble  # noqa: E402
from edgekd_train.models import build_student  # noqa: E402

pytestmark = pytest.mark.train

LABELS = ("a", "b", "c")


def test_an_ensemble_folder_round_trips_and_averages_its_members_logits(tmp_path) -> None:
    members = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        m = build_student("wav2tiny", len(LABELS)).eval()
        save_student(tmp_path / f"s{seed}.pt", m, "wav2tiny")
        members.append(m)
    folder = write_ensemble(tmp_path / "ens", [tmp_path / "s0.pt", tmp_path / "s1.pt"])
    assert is_ensemble(folder) and not is_ensemble(tmp_path)
    teacher = load_teacher(folder, LABELS, 16000)
    assert isinstance(teacher, StudentEnsemble) and not teacher.training
    x = torch.randn(2, 8000) * 0.1
    with torch.no_grad():
        expected = (members[0](x) + members[1](x)) / 2
        assert torch.allclose(teacher(x), expected, atol=1e-5)


def test_a_missing_member_is_named(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        write_ensemble(tmp_path / "ens", [tmp_path / "nope.pt"])


def test_the_ensemble_gives_a_temporal_map_from_its_members_attention_pooling(tmp_path) -> None:
    for seed in (0, 1):
        torch.manual_seed(seed)
        save_student(tmp_path / f"s{seed}.pt", build_student("wav2tiny", len(LABELS)).eval(), "wav2tiny")
    teacher = load_teacher(write_ensemble(tmp_path / "ens", [tmp_path / "s0.pt", tmp_path / "s1.pt"]), LABELS, 16000)
    x = torch.randn(3, 16000) * 0.1
    with torch.no_grad():
        logits, weights = teacher.forward_with_attention(x)
        member_weights = [m.forward_with_attention(x)[1] for m in teacher.members]
    assert torch.allclose(logits, teacher(x))
    assert weights.shape == member_weights[0].shape and weights.shape[0] == 3
    assert torch.allclose(weights.sum(-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(weights, (member_weights[0] + member_weights[1]) / 2)


def test_the_temporal_loop_reads_an_ensemble_like_a_transformer_teacher(tmp_path) -> None:
    """`teacher_outputs` (what the keyword runner's temporal distillation calls) takes an ensemble too."""
    from edgekd_train.temporal.rollout import cache_teacher, teacher_outputs

    torch.manual_seed(0)
    save_student(tmp_path / "s0.pt", build_student("wav2tiny", len(LABELS)).eval(), "wav2tiny")
    teacher = load_teacher(write_ensemble(tmp_path / "ens", [tmp_path / "s0.pt"]), LABELS, 16000)
    x = torch.randn(3, 16000) * 0.1
    with torch.no_grad():
        logits, weights = teacher_outputs(teacher, x)
        expected = teacher.forward_with_attention(x)
    assert torch.equal(logits, expected[0]) and torch.equal(weights, expected[1])
    cached_logits, cached_weights = cache_teacher(teacher, x, batch_size=2)
    assert torch.allclose(cached_logits, logits, atol=1e-6) and cached_weights.shape == weights.shape

"""The teacher: a tiny random wav2vec2 saved to a folder, loaded by path, fine-tuned with Trainer."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from edgekd_train.teacher import (  # noqa: E402
    AudioTeacher,
    ScratchTeacherConfig,
    TeacherError,
    TeacherTrainConfig,
    build_teacher,
    finetune_teacher,
    normalize_windows,
    teacher_logits,
)

pytestmark = pytest.mark.train

LABELS = ("low", "high")
RATE = 16000
N = 3200  # 0.2 s windows keep the test in seconds

TINY = ScratchTeacherConfig(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    conv_dim=16,
    num_conv_pos_embeddings=8,
    num_conv_pos_embedding_groups=4,
    classifier_proj_size=16,
    mask_time_prob=0.0,
)


def tones(n_per_class: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Low (200 Hz) and high (3 kHz) tones with random phase and level: an easy, learnable task."""
    rng = np.random.default_rng(seed)
    t = np.arange(N) / RATE
    xs, ys = [], []
    for label, freq in enumerate((200.0, 3000.0)):
        for _ in range(n_per_class):
            amp = rng.uniform(0.05, 0.5)
            xs.append(amp * np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi)) + 0.01 * rng.standard_normal(N))
            ys.append(label)
    return np.asarray(xs, np.float32), np.asarray(ys, np.int64)


@pytest.fixture(scope="module")
def saved_teacher(tmp_path_factory):
    torch.manual_seed(0)
    model = build_teacher(TINY, LABELS)
    path = tmp_path_factory.mktemp("teacher")
    model.save_pretrained(path)
    return path


def test_loads_from_a_saved_directory_with_our_labels(saved_teacher):
    model = build_teacher(saved_teacher, ["a", "b", "c"])
    assert model.config.num_labels == 3
    assert model.config.id2label == {0: "a", 1: "b", 2: "c"}
    logits = teacher_logits(model, np.zeros((2, N), np.float32))
    assert logits.shape == (2, 3) and logits.dtype == np.float32


def test_unreachable_hub_name_and_bad_folder_say_how_to_fix(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # no network wait
    with pytest.raises(TeacherError, match="save_pretrained"):
        build_teacher(tmp_path, LABELS)  # exists, but no config.json
    with pytest.raises(TeacherError, match="not a local directory"):
        build_teacher("no-such-org/no-such-wav2vec2-model-xyz", LABELS)


def test_bad_scratch_config_is_refused_early():
    with pytest.raises(TeacherError, match="divisible"):
        ScratchTeacherConfig(hidden_size=30, num_attention_heads=4)
    with pytest.raises(TeacherError, match="unknown teacher option"):
        ScratchTeacherConfig.from_mapping({"hidden": 10})


def test_recipe_builds_the_scratch_teacher(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text("[teacher.scratch]\nhidden_size = 32\nnum_hidden_layers = 1\nnum_attention_heads = 2\n"
                      "intermediate_size = 64\nconv_dim = 8\nnum_conv_pos_embeddings = 8\n"
                      "num_conv_pos_embedding_groups = 4\n")
    model = build_teacher(recipe, LABELS)
    assert model.config.hidden_size == 32 and model.config.conv_dim == (8,) * 7


def test_normalisation_makes_logits_gain_invariant(saved_teacher):
    model = build_teacher(saved_teacher, LABELS).eval()
    x, _ = tones(2)
    np.testing.assert_allclose(teacher_logits(model, x), teacher_logits(model, 7.0 * x), atol=1e-4)
    z = normalize_windows(torch.from_numpy(x))
    assert torch.allclose(z.mean(-1), torch.zeros(len(x)), atol=1e-5)
    assert torch.allclose(z.std(-1, unbiased=False), torch.ones(len(x)), atol=1e-3)


@pytest.mark.slow
def test_finetune_with_trainer_learns_and_saves_best(saved_teacher, tmp_path):
    torch.manual_seed(0)
    model = build_teacher(saved_teacher, LABELS)
    x, y = tones(16, seed=1)
    vx, vy = tones(8, seed=2)
    before = float((teacher_logits(model, vx).argmax(-1) == vy).mean())
    cfg = TeacherTrainConfig(epochs=6, batch_size=8, learning_rate=3e-3, warmup_ratio=0.0, seed=0, shift_s=0.01)
    result = finetune_teacher(model, x, y, vx, vy, cfg, tmp_path / "run")
    assert result.best_val_accuracy >= 0.9, (before, result.history)
    assert any("eval_accuracy" in h for h in result.history)
    reloaded = build_teacher(tmp_path / "run" / "best", LABELS)
    after = float((teacher_logits(reloaded, vx).argmax(-1) == vy).mean())
    assert after == pytest.approx(result.best_val_accuracy)


@pytest.mark.slow
def test_freeze_feature_encoder_keeps_cnn_weights(saved_teacher, tmp_path):
    model = build_teacher(saved_teacher, LABELS)
    cnn_before = {k: v.clone() for k, v in model.wav2vec2.feature_extractor.state_dict().items()}
    head_before = model.classifier.weight.detach().clone()
    x, y = tones(4)
    cfg = TeacherTrainConfig(epochs=1, batch_size=4, learning_rate=1e-2, freeze_feature_encoder=True)
    finetune_teacher(model, x, y, x, y, cfg, tmp_path / "frozen")
    for k, v in model.wav2vec2.feature_extractor.state_dict().items():
        assert torch.equal(v, cnn_before[k]), k
    assert not torch.equal(model.classifier.weight, head_before)


def test_audio_teacher_takes_raw_pcm(saved_teacher):
    model = build_teacher(saved_teacher, LABELS).eval()
    x, _ = tones(1)
    wrapped = AudioTeacher(model).eval()
    with torch.no_grad():
        direct = model(input_values=normalize_windows(torch.from_numpy(x))).logits
        assert torch.allclose(wrapped(torch.from_numpy(x)), direct)


@pytest.mark.slow
def test_distill_teacher_learns_from_a_stronger_models_soft_targets_alone(saved_teacher, tmp_path):
    """alpha = 0: no label reaches the wav2vec2, only the soft targets of a model that already knows
    (here: the share of energy above 1 kHz); it learns the task, keeps its best epoch, and the saved
    folder is a teacher."""
    from edgekd_train.distill.loop import DistillConfig
    from edgekd_train.teacher import distill_teacher

    def knows(audio: torch.Tensor) -> torch.Tensor:
        power = torch.fft.rfft(audio).abs() ** 2
        high = power[:, int(1000 * N / RATE) :].sum(-1) / power.sum(-1)
        return torch.stack([4 * (0.5 - high), 4 * (high - 0.5)], dim=-1)

    torch.manual_seed(0)
    model = build_teacher(saved_teacher, LABELS)
    x, y = tones(16, seed=1)
    vx, vy = tones(8, seed=2)
    wrong = 1 - y  # labels that would teach the opposite: alpha = 0 must ignore them
    cfg = DistillConfig(epochs=6, batch_size=8, lr=3e-3, alpha=0.0, T=2.0, warmup_frac=0.0, device="cpu",
                        progress=False)
    result = distill_teacher(model, knows, x, wrong, vx, vy, cfg, tmp_path / "run")
    assert result.best_val_accuracy >= 0.9, result.history
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()
    reloaded = build_teacher(tmp_path / "run" / "best", LABELS)
    assert float((teacher_logits(reloaded, vx).argmax(-1) == vy).mean()) == pytest.approx(result.best_val_accuracy)

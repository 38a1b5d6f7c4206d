"""Model cards rendered from the model file and its run record by train/cards/TASK.md.tmpl."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from edgekd_train.cards import CARDS_DIR, CardError, record_path_for, render_card
from tests.cli_in_process import run_subprocess

MODELS = Path(__file__).resolve().parents[2] / "models"
EMOTIONS = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")


SHIPPED = sorted(p.stem for p in MODELS.glob("*.onnx") if not p.stem.endswith("-int8"))


def test_every_shipped_model_has_a_record_and_a_card():
    assert SHIPPED == ["wav2small-covid", "wav2small-emotion", "wav2small-keyword", "wav2tiny-cough",
                       "wav2tiny-emotion", "wav2tiny-keyword"]


@pytest.mark.parametrize("name", SHIPPED)
def test_the_shipped_cards_render_from_their_records_to_the_same_text(name):
    assert record_path_for(MODELS / f"{name}.onnx").is_file()
    assert render_card(MODELS / f"{name}.onnx") == (MODELS / f"{name}.md").read_text(encoding="utf-8")


def _emotion_model(tmp_path: Path, ravdess: float) -> Path:
    pytest.importorskip("onnx")
    from onnx_models import energy_model

    training = {"student": "wav2tiny", "T": 2.0, "alpha": 0.5, "seed": 1, "params": 15440, "macs_per_second": 9e6,
                "teacher_kind": "ensemble", "figures": {
                    "test_tess": {"accuracy": 0.9978, "macro_f1": 0.9978, "n": 462},
                    "test_ravdess": {"accuracy": ravdess, "macro_f1": 0.5, "n": 208},
                    "test": {"accuracy": 0.8, "macro_f1": 0.8, "n": 670}}}
    return energy_model(tmp_path / "wav2tiny-emotion.onnx", task="emotion", labels=EMOTIONS, window_samples=48000,
                        name="wav2tiny-emotion", props_override={"edgekd.training": json.dumps(training)})


def test_without_a_record_the_card_holds_what_the_file_says_and_its_targets(tmp_path):
    card = render_card(_emotion_model(tmp_path, ravdess=0.5433))
    assert card.startswith("# wav2tiny-emotion\n\nSpeech emotion classifier for edgekd: raw 16 kHz PCM in (3 s windows), "
                           "7 labels out (angry, disgust, fear, happy, neutral, sad, surprise).")
    assert "| RAVDESS, held-out actors 15-18 | 208 | 54.3% | 0.500 |" in card
    assert "**Targets of issue 3: NOT met.** Unseen TESS words ≥ 99.5%: 99.8% (met); held-out RAVDESS actors ≥ 55.0%: " \
           "54.3% (missed)." in card
    assert "distilled from the Wav2Small ensemble (below) with Hinton's loss, T = 2, alpha = 0.5" in card
    # sections that need a run record (or a figure the file lacks) are left out, not filled with "?"
    for absent in ("- recipe:", "## Teachers", "## Did distillation help?", "## INT8", "## Export check", "Test words"):
        assert absent not in card
    assert "\n\n\n" not in card and card.endswith(")\n") and not card.endswith("\n\n")


def test_targets_are_read_from_the_card_spec_not_the_code(tmp_path):
    cards = tmp_path / "cards"
    shutil.copytree(CARDS_DIR, cards)
    spec = cards / "emotion.toml"
    spec.write_text(spec.read_text().replace("[targets.wav2tiny]\ntest_tess = 0.995\ntest_ravdess = 0.55",
                                             "[targets.wav2tiny]\ntest_tess = 0.995\ntest_ravdess = 0.50"))
    card = render_card(_emotion_model(tmp_path, ravdess=0.5433), cards_dir=cards)
    assert "held-out RAVDESS actors ≥ 50.0%: 54.3% (met)" in card and ": met.**" in card


def test_a_record_replaces_blocks_it_names_and_only_blocks_the_template_has(tmp_path):
    model = _emotion_model(tmp_path, ravdess=0.6)
    record = record_path_for(model)
    record.write_text(json.dumps({"blocks": {"int8": "## INT8\n\nNot made for $name."}}))
    assert "## INT8\n\nNot made for wav2tiny-emotion.\n" in render_card(model)
    record.write_text(json.dumps({"blocks": {"int9": "x"}}))
    with pytest.raises(CardError, match=r"block\(s\) \['int9'\]"):
        render_card(model)


def test_a_record_written_for_another_file_is_refused(tmp_path):
    model = _emotion_model(tmp_path, ravdess=0.6)
    record_path_for(model).write_text(json.dumps({"sha256": "0" * 64}))
    with pytest.raises(CardError, match="not this one.*--record"):
        render_card(model)


@pytest.mark.slow
def test_card_command_prints_and_writes_without_torch(tmp_path):
    def edgekd_train_card(*args: str) -> subprocess.CompletedProcess:
        return run_subprocess("train", "card", *args,
                              prelude="import sys; sys.modules.update(dict.fromkeys(('torch', 'transformers', 'accelerate')))\n")

    out = tmp_path / "card.md"
    done = edgekd_train_card(str(MODELS / "wav2small-emotion.onnx"), "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert out.read_text(encoding="utf-8") == (MODELS / "wav2small-emotion.md").read_text(encoding="utf-8")
    cards = tmp_path / "cards"
    cards.mkdir()
    no_template = edgekd_train_card(str(MODELS / "wav2tiny-keyword.onnx"), "--cards", str(cards))
    assert no_template.returncode == 2
    assert no_template.stderr.strip().startswith("edgekd train: no card template for task 'keyword'")


def test_the_ablation_tables_the_ship_step_writes_render_with_their_short_cells(tmp_path):
    from edgekd_train.ablate import summarize, teacher_effect

    def run(T, alpha, seed, val):
        return {"student": "wav2tiny", "T": T, "alpha": alpha, "seed": seed, "val_acc": val,
                "tests": {"tess": {"accuracy": 0.99}, "ravdess": {"accuracy": val - 0.3}}}

    results = [run(2.0, a, s, 0.85 + 0.01 * s + (0.02 if a < 1 else 0)) for a in (0.5, 1.0) for s in (0, 1, 2)]
    results = [r for r in results if (r["alpha"], r["seed"]) != (0.5, 2)]  # a run that did not start
    metrics = ["val_acc", "tess", "ravdess"]
    rows = summarize(results, metrics, [2.0])
    abl = {"rows": rows, "teacher_effect": {"wav2tiny": teacher_effect(rows, "wav2tiny", "val_acc", metrics)}}
    model = _emotion_model(tmp_path, ravdess=0.6)
    record_path_for(model).write_text(json.dumps({"ablations": {"ensemble": abl}}, default=float))
    card = render_card(model)
    assert "### Wav2Small ensemble as teacher (T = 2)" in card and "### wav2vec2" not in card
    assert "| 2 | 0.5 | 2 | 87.5% ± 0.7% | 99.0% ± 0.0% | 57.5% ± 0.7% |" in card
    assert "| 2 | 1 | 3 | 86.0% ± 1.0% | 99.0% ± 0.0% | 56.0% ± 1.0% |" in card
    assert "Cells with fewer than 3 runs: T = 2, alpha = 0.5 (seeds 0, 1)." in card


def _keyword_card(tmp_path: Path, template: str, spec: str = "", record: dict | None = None) -> str:
    """The card of the shipped wav2tiny-keyword file with a template and spec of the test's own."""
    import shutil

    cards = tmp_path / "cards"
    cards.mkdir(exist_ok=True)
    (cards / "keyword.md.tmpl").write_text(template, encoding="utf-8")
    (cards / "keyword.toml").write_text(spec, encoding="utf-8")
    model = tmp_path / "wav2tiny-keyword.onnx"
    shutil.copy(MODELS / "wav2tiny-keyword.onnx", model)
    if record is not None:
        record_path_for(model).write_text(json.dumps(record))
    return render_card(model, cards_dir=cards)


def test_a_figures_card_reads_paths_formats_rows_and_picks(tmp_path):
    template = """@@ card
${file.name}: ${training.figures.val.accuracy|pct} of ${training.figures.val.n|n}; ${op.threshold|f3} at ${op.hop_s|g} s
${each:record.rows:row}
${join:record.rows:short}.
${pick:targets.clip.verdict:says}${if:record.absent:says_met}${if:record.rows:says_met}
@@ row
| ${row.label} | ${row.p|pct0} |
@@ short
${row.label}
@@ says_met
MET
@@ says_missed
MISSED"""
    spec = """[targets.clip]
[[targets.clip.require]]
figure = "training.figures.test_unseen_speakers.accuracy"
at_least = 0.95
"""
    card = _keyword_card(tmp_path, template, spec, {"rows": [{"label": "yes", "p": 0.5}, {"label": "no", "p": 1}]})
    assert card == ("wav2tiny-keyword: 91.4% of 522; 0.997 at 0.255 s\n| yes | 50% |\n| no | 100% |\nyes, no.\n"
                    "MISSEDMET\n")


@pytest.mark.parametrize("template, message", [
    ("@@ card\n${record.nope|pct}", r"uses \$\{record.nope\}, which neither"),
    ("@@ card\n${file.name|pct}", r"'wav2tiny-keyword', which format 'pct' cannot show"),
    ("@@ card\n${file.name|percent}", r"format 'percent'; formats: \["),
    ("@@ card\n${block:absent}", r"no block 'absent': add `@@ absent`"),
    ("@@ card\n${each:file.labels}", r"needs a block name"),
])
def test_a_figures_card_names_what_it_cannot_fill(tmp_path, template, message):
    with pytest.raises(CardError, match=message):
        _keyword_card(tmp_path, template)


def test_a_target_naming_a_figure_nobody_has_is_refused(tmp_path):
    spec = '[targets.x]\n[[targets.x.require]]\nfigure = "record.recall"\nat_least = 0.9\n'
    with pytest.raises(CardError, match=r"target 'x': no figure 'record.recall'"):
        _keyword_card(tmp_path, "@@ card\nx", spec)

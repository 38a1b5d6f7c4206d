"""The `edgekd train` command line, the recipe loader and the ablation table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgekd.cli import TRAIN_MISSING
from edgekd_train.ablate import grid, summarize, teacher_effect, write_ablation
from edgekd_train.recipe import RecipeError, available_recipes, distill_settings, load_recipe
from tests.cli_in_process import run_subprocess

pytestmark = pytest.mark.train

COMMANDS = ("teacher", "distill", "evaluate", "ablate", "export", "quantize", "card", "record", "synth", "pack", "ensemble",
            "students", "ship emotion", "run keyword", "reduced", "study")


def test_cli_module_does_not_import_torch():
    code = ("import sys, edgekd_train.cli\n"
            "print(sorted(m for m in ('torch', 'transformers') if sys.modules.get(m) is not None))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    from typer.testing import CliRunner

    from edgekd_train.cli import app

    result = CliRunner().invoke(app, [*command.split(), "--help"])
    assert result.exit_code == 0, result.output
    assert "--" in result.output and "Usage" in result.output


def _with_recipe(command: str, recipe: str, tmp_path: Path) -> list[str]:
    if command == "export":
        return [command, "--checkpoint", str(tmp_path / "s.pt"), "--split", str(tmp_path / "split.json"),
                "--out", str(tmp_path / "m.onnx"), "--recipe", recipe]
    return [command, "--recipe", recipe, "--out", str(tmp_path)]


@pytest.mark.parametrize("command", ["teacher", "distill", "ablate", "export"])
def test_a_bad_recipe_is_one_line_not_a_traceback(tmp_path, command):
    from typer.testing import CliRunner

    from edgekd_train.cli import app

    result = CliRunner().invoke(app, _with_recipe(command, str(tmp_path / "nope.toml"), tmp_path))
    assert result.exit_code == 2
    assert "no such file" in result.output and "Traceback" not in result.output


NO_TRAIN_EXTRA = "import sys; sys.modules.update(dict.fromkeys(('torch', 'transformers', 'accelerate')))\n"


@pytest.mark.slow
@pytest.mark.parametrize("command", ["teacher", "distill", "ablate", "export"])
def test_without_torch_a_missing_recipe_is_named_and_a_good_one_asks_for_the_extra(tmp_path, command):
    """On a machine without the train extra the recipe is still checked first, and then the extra is asked for."""
    def edgekd_train(recipe: str) -> subprocess.CompletedProcess:
        return run_subprocess("train", *_with_recipe(command, recipe, tmp_path), prelude=NO_TRAIN_EXTRA)

    missing = edgekd_train(str(tmp_path / "nope.toml"))
    assert missing.returncode == 2, missing.stderr
    assert missing.stderr.strip().splitlines() == [
        f"edgekd train: recipe {tmp_path / 'nope.toml'}: no such file (recipes here: {', '.join(available_recipes())})"]
    good = edgekd_train("emotion")
    assert good.returncode == 2, good.stderr
    assert good.stderr.strip().splitlines()[-1] == TRAIN_MISSING
    assert "Traceback" not in good.stderr


def test_shipped_recipe_loads_with_the_protocol():
    assert "emotion" in available_recipes()
    r = load_recipe("emotion")
    assert r.task.labels == ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
    assert r.task.window_samples == 48000
    assert r.split.holdout == {"ravdess": {"actor": (15, 16, 17, 18)}}
    assert {c.name: c.options for c in r.corpora}["ravdess"] == {"calm": "drop"}
    student, fields, aug = distill_settings(r, T=3.0, epochs=None)
    assert student == "wav2small" and fields["T"] == 3.0 and fields["epochs"] == r.distill.epochs
    assert aug["gain_db"] == (-6.0, 6.0) and aug["sample_rate"] == 16000
    # 4 s training windows: the augmentation crops the task's 3 s window from them
    assert "train_window_seconds" not in fields and aug["crop_samples"] == 48000


def test_set_overrides_reach_distill_and_its_augment_table():
    from edgekd_train.prepare import train_window_samples
    from edgekd_train.recipe import with_overrides

    r = with_overrides(load_recipe("emotion"), ["epochs=5", "balance=group", "augment.p_noise=0.9",
                                                "train_window_seconds=5.0"])
    _, fields, aug = distill_settings(r)
    assert fields["epochs"] == 5 and fields["balance"] == "group" and aug["p_noise"] == 0.9
    assert train_window_samples(r) == 80000 and load_recipe("emotion").distill.epochs != 5
    with pytest.raises(RecipeError, match="KEY=VALUE"):
        with_overrides(r, ["epochs"])
    with pytest.raises(ValueError, match="shorter than the task's window"):
        train_window_samples(with_overrides(r, ["train_window_seconds=1.0"]))


def test_recipe_errors_name_the_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[task]\nname = "x"\nlabels = ["a", "b"]\nwindw = 3\n[[data.corpora]]\nname = "tess"\n')
    with pytest.raises(RecipeError, match=r"\[task\] windw: unknown key"):
        load_recipe(bad)
    bad.write_text('[task]\nname = "x"\nlabels = ["a"]\n[[data.corpora]]\nname = "tess"\n'
                   '[split.holdout.ravdess]\nactor = [1]\n')
    with pytest.raises(RecipeError, match="does not list"):
        load_recipe(bad)


def test_grid_runs_alpha_one_once_per_seed():
    jobs = grid(["a", "b"], [1, 2, 3], [0.0, 0.5, 1.0], [0, 1, 2])
    assert len(jobs) == 2 * 3 * (3 + 3 + 1)
    assert len({j.key for j in jobs}) == len(jobs)
    assert sum(j.alpha == 1.0 for j in jobs) == 2 * 3


def _result(student, T, alpha, seed, val, test):
    return {"student": student, "T": T, "alpha": alpha, "seed": seed, "val_acc": val,
            "tests": {"tess": {"accuracy": test, "macro_f1": test}}}


def test_table_means_spreads_and_verdict(tmp_path):
    pytest.importorskip("matplotlib")
    results = []
    for seed, noise in enumerate((-0.01, 0.0, 0.01)):
        results.append(_result("s", 1.0, 1.0, seed, 0.60 + noise, 0.50 + noise))  # labels only
        for T in (1.0, 2.0):
            results.append(_result("s", T, 0.5, seed, 0.70 + noise + 0.01 * T, 0.65 + noise))
    rows = summarize(results, ["val_acc", "tess"], [1.0, 2.0])
    by = {(r["T"], r["alpha"]): r for r in rows}
    assert by[(2.0, 0.5)]["val_acc"][0] == pytest.approx(0.72)
    assert by[(2.0, 0.5)]["val_acc"][1] == pytest.approx(0.01)
    assert by[(1.0, 1.0)]["n"] == by[(2.0, 1.0)]["n"] == 3  # alpha = 1 repeated per T row
    effect = teacher_effect(rows, "s", "val_acc", ["val_acc", "tess"])
    assert effect["best_cell"] == {"T": 2.0, "alpha": 0.5}
    assert effect["metrics"]["tess"]["verdict"] == "helped"
    assert effect["metrics"]["tess"]["difference"] == pytest.approx(0.15)

    summary = write_ablation(tmp_path, results, [1.0, 2.0], ["val_acc", "tess"])
    assert (tmp_path / "ablation.png").read_bytes()[:4] == b"\x89PNG"
    md = (tmp_path / "ablation.md").read_text()
    assert "72.00% ± 1.00%" in md and "helped" in md
    assert json.loads((tmp_path / "ablation.json").read_text())["runs"] == len(results) == summary["runs"]


def test_no_clear_difference_inside_the_spread():
    results = [_result("s", 1.0, a, seed, 0.6 + 0.05 * (seed - 1), 0.6 + 0.05 * (seed - 1) + (0.01 if a < 1 else 0))
               for seed in range(3) for a in (0.5, 1.0)]
    rows = summarize(results, ["tess"], [1.0])
    assert teacher_effect(rows, "s", "tess", ["tess"])["metrics"]["tess"]["verdict"] == "no clear difference"


def _tones_recipe(tmp_path):
    sf = pytest.importorskip("soundfile")
    import numpy as np

    rate, n = 16000, 4000
    rng = np.random.default_rng(0)
    for label, freq in (("low", 200.0), ("high", 3000.0)):
        (tmp_path / "data" / "tones" / label).mkdir(parents=True)
        for i in range(20):
            t = np.arange(n) / rate
            x = rng.uniform(0.1, 0.5) * np.sin(2 * np.pi * freq * rng.uniform(0.9, 1.1) * t)
            sf.write(tmp_path / "data" / "tones" / label / f"{i}.wav", x.astype(np.float32), rate)
    recipe = tmp_path / "tones.toml"
    recipe.write_text(
        '[task]\nname = "tones"\nlabels = ["low", "high"]\nsample_rate = 16000\nwindow_seconds = 0.25\n'
        '[[data.corpora]]\nname = "folder"\nroot = "tones"\n'
        "[split]\nseed = 0\nval = 0.2\ntest = 0.2\n"
        '[distill]\nstudent = "wav2tiny"\nT = 2.0\nalpha = 1.0\nepochs = 3\nbatch_size = 8\nlr = 3e-3\n'
        '[export]\nversion = "0.0.1"\n'
        '[teacher.scratch]\nhidden_size = 32\nnum_hidden_layers = 1\nnum_attention_heads = 2\nintermediate_size = 64\n'
        "conv_dim = 16\nnum_conv_pos_embeddings = 8\nnum_conv_pos_embedding_groups = 4\nmask_time_prob = 0.0\n"
        "[teacher.train]\nepochs = 2\nbatch_size = 8\nlearning_rate = 3e-3\n"
    )
    return recipe


@pytest.mark.slow
def test_teacher_through_the_cli(tmp_path):
    pytest.importorskip("transformers")
    from typer.testing import CliRunner

    from edgekd.model import Model
    from edgekd_train.cli import app

    recipe = _tones_recipe(tmp_path)
    out = tmp_path / "teacher"
    r = CliRunner().invoke(app, ["teacher", "-r", str(recipe), "--data", str(tmp_path / "data"), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert (out / "best" / "config.json").is_file() and (out / "report" / "confusion-val.png").is_file()
    assert Model(out / "teacher.onnx").meta.name == "teacher-tones"


@pytest.mark.slow
def test_distill_export_evaluate_through_the_cli(tmp_path):
    """The commands glue together: a folder corpus of tones, a student on labels alone, its ONNX file scored."""
    pytest.importorskip("torch")
    from typer.testing import CliRunner

    from edgekd.model import Model
    from edgekd_train.cli import app

    recipe = _tones_recipe(tmp_path)
    runner = CliRunner()
    out = tmp_path / "run"
    r = runner.invoke(app, ["distill", "-r", str(recipe), "--data", str(tmp_path / "data"), "--out", str(out),
                            "--no-augment"])
    assert r.exit_code == 0, r.output
    assert (out / "student.pt").is_file() and (out / "split.json").is_file() and (out / "report" / "report.json").is_file()
    onnx_path = tmp_path / "tones.onnx"
    r = runner.invoke(app, ["export", "--checkpoint", str(out / "student.pt"), "--split", str(out / "split.json"),
                            "-o", str(onnx_path), "-r", str(recipe)])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output.strip().splitlines()[-1])["max_abs_diff"] <= 1e-4
    # Re-export the same checkpoint with the first file's metadata (after an exporter fix, say)
    again = tmp_path / "again.onnx"
    _set_training_key(onnx_path, "onnx_vs_torch_max_abs", 0.5)
    r = runner.invoke(app, ["export", "--checkpoint", str(out / "student.pt"), "--split", str(out / "split.json"),
                            "-o", str(again), "-r", str(recipe), "--like", str(onnx_path)])
    assert r.exit_code == 0, r.output
    report = json.loads(r.output.strip().splitlines()[-1])
    assert report["like"]["argmax_agreement"] == 1.0 and report["like"]["max_abs_diff"] <= 1e-4
    old_meta, new_meta = Model(onnx_path).meta, Model(again).meta
    assert (new_meta.name, new_meta.version, new_meta.labels) == (old_meta.name, old_meta.version, old_meta.labels)
    assert new_meta.training["onnx_vs_torch_max_abs"] == report["max_abs_diff"] != 0.5  # this export's figure
    assert {k: v for k, v in new_meta.training.items() if k != "onnx_vs_torch_max_abs"} == {
        k: v for k, v in old_meta.training.items() if k != "onnx_vs_torch_max_abs"}
    assert report["sha256"] == Model(again).sha256
    r = runner.invoke(app, ["export", "--checkpoint", str(out / "student.pt"), "--split", str(out / "split.json"),
                            "-o", str(onnx_path), "-r", str(recipe), "--like", str(onnx_path)])
    assert r.exit_code != 0 and "is the --like file" in r.output
    r = runner.invoke(app, ["export", "--checkpoint", str(out / "student.pt"), "--split", str(out / "split.json"),
                            "-o", str(again), "-r", "emotion", "--like", str(onnx_path)])
    assert r.exit_code != 0 and "pass the recipe the checkpoint was trained with" in r.output
    r = runner.invoke(app, ["export", "--checkpoint", str(out / "student.pt"), "--split", str(out / "split.json"),
                            "-o", str(again), "-r", "emotion"])
    assert r.exit_code != 0 and "for 2 labels" in r.output and "pass the recipe" in r.output
    r = runner.invoke(app, ["evaluate", "-m", str(onnx_path), "--split", str(out / "split.json"),
                            "--out", str(tmp_path / "eval")])
    assert r.exit_code == 0, r.output
    figures = json.loads(r.output.strip().splitlines()[-1])
    assert set(figures) == {"test", "test_folder"}
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["evaluations"]["test"]["n"] == 8  # 20% of 40 files, whole files as groups


def _set_training_key(path: Path, key: str, value: object) -> None:
    import onnx

    from edgekd.contract import KEY_TRAINING

    proto = onnx.load(str(path))
    for prop in proto.metadata_props:
        if prop.key == KEY_TRAINING:
            prop.value = json.dumps({**json.loads(prop.value), key: value})
    onnx.save(proto, str(path))


@pytest.mark.slow
def test_ablate_through_the_cli(tmp_path):
    pytest.importorskip("torch")
    from typer.testing import CliRunner

    from edgekd_train.cli import app

    recipe = _tones_recipe(tmp_path)
    with open(recipe, "a") as fh:
        fh.write('[ablation]\nstudents = ["wav2tiny"]\ntemperatures = [1.0]\nalphas = [1.0]\nseeds = [0, 1]\n')
    out = tmp_path / "abl"
    r = CliRunner().invoke(app, ["ablate", "-r", str(recipe), "--data", str(tmp_path / "data"), "--out", str(out)])
    assert r.exit_code == 0, r.output
    table = json.loads((out / "ablation.json").read_text())
    assert table["runs"] == 2 and table["rows"][0]["n"] == 2 and table["rows"][0]["seeds"] == [0, 1]
    assert (out / "ablation.png").is_file() and (out / "runs" / "wav2tiny-T1-a1-s1.pt").is_file()

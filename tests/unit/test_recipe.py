"""Recipes are typed: every shipped one loads, and a mistake fails at load with the file, table and key."""

from __future__ import annotations

import pytest

from edgekd_train.recipe import RecipeError, available_recipes, distill_settings, load_recipe, with_overrides

MINIMAL = '[task]\nname = "x"\nlabels = ["a", "b"]\n\n[[data.corpora]]\nname = "tess"\n'


def _load(tmp_path, text: str):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    return load_recipe(path)


@pytest.mark.parametrize("name", ["emotion", "keyword", "cough", "covid"])
def test_every_shipped_recipe_loads(name):
    assert name in available_recipes()
    r = load_recipe(name)
    assert r.name == name and r.task.name == name
    assert r.corpora and r.task.window_samples == round(r.task.window_seconds * r.task.sample_rate)


@pytest.mark.parametrize(
    "extra, message",
    [
        ('[distill]\nepoch = 3\n', r"\[distill\] epoch: unknown key \(known: .*epochs"),
        ('[distill]\nepochs = 0\n', r"\[distill\] epochs: .*greater than or equal to 1 \(got 0\)"),
        ('[distill]\nalpha = "half"\n', r"\[distill\] alpha: .*number.* \(got 'half'\)"),
        ('[distill]\nbalance = "grouped"\n', r"\[distill\] balance: .*'none' or 'group'"),
        ('[distill.augment]\np_nose = 0.5\n', r"\[distill.augment\] p_nose: unknown key \(known: .*p_noise"),
        ('[distill.augment]\ngain_db = [6.0, -6.0]\n', r"\[distill\] augment: gain_db=\[6.0, -6.0\] must be \[low, high\]"),
        ('[teacher.train]\nlearning_rte = 1e-4\n', r"\[teacher.train\] learning_rte: unknown key"),
        ('[teacher.scratch]\nhidden = 8\n', r"\[teacher.scratch\] hidden: unknown key"),
        ('[split]\nval = 0.6\ntest = 0.5\n', r"\[split\].*must sum below 1"),
        ('[ablation]\nalphas = [0.5, 2.0]\n', r"\[ablation\].*alphas \[0.5, 2.0\] must be in \[0, 1\]"),
        ('[export]\nopset = "17a"\n', r"\[export\] opset: .*integer"),
        ('[exprot]\nopset = 17\n', r"exprot: unknown key \(known: ablation, data, distill"),
    ],
)
def test_a_mistake_names_the_file_table_and_key(tmp_path, extra, message):
    with pytest.raises(RecipeError, match=message) as info:
        _load(tmp_path, MINIMAL + extra)
    assert str(info.value).startswith(f"recipe {tmp_path / 'bad.toml'}: ")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "text, message",
    [
        (MINIMAL.replace("[task]\n", "[task]\nwindw = 3\n"), r"\[task\] windw: unknown key \(known: .*window_seconds"),
        ('[task]\nname = "x"\nlabels = ["a", "a"]\n[[data.corpora]]\nname = "tess"\n', r"labels must be unique.*\['a'\]"),
        ('[task]\nname = "x"\nlabels = ["a"]\n', r"\[data\]: missing"),
        ('[task]\nname = "x"\nlabels = ["a"]\n[[data.corpora]]\nname = "tes"\n', r"\[\[data.corpora\]\] entry 0.*unknown corpus 'tes'"),
        ('[task]\nname = "x"\nlabels = ["a"]\n[[data.corpora]]\nname = "ravdess"\noptions = { clam = "drop" }\n',
         r"corpus ravdess has no option\(s\) \['clam'\]; its options: \['calm', 'channel'\]$"),
        ('[task]\nname = "x"\nlabels = ["a"]\n[[data.corpora]]\nname = "tess"\nlabel = "speech"\n',
         r"corpus tess: label 'speech' is not one of the task's labels"),
        ('[task]\nname = "x"\nlabels = ["a"]\n[[data.corpora]]\nname = "tess"\n[split.holdout.ravdess]\nactor = [1]\n',
         r"split.holdout names corpora \['ravdess'\] that \[\[data.corpora\]\] does not list"),
        (MINIMAL + '[distill]\ntrain_window_seconds = 4.0\n', r"train_window_seconds needs a \[distill.augment\] table"),
        (MINIMAL + '[distill]\ntrain_window_seconds = 1.0\n[distill.augment]\np_noise = 0.5\n',
         r"train_window_seconds=1.0 is shorter than the task's window \(3.0 s\)"),
        ('path = "x"\n' + MINIMAL, r"path: unknown key"),
        ('[task\nname = "x"\n', r"not valid TOML"),
    ],
)
def test_checks_across_keys_say_what_to_fix(tmp_path, text, message):
    with pytest.raises(RecipeError, match=message):
        _load(tmp_path, text)


def test_a_missing_recipe_lists_the_ones_there(tmp_path):
    with pytest.raises(RecipeError, match=r"no such file \(recipes here: cough, covid, emotion, keyword"):
        load_recipe(tmp_path / "nope.toml")


def test_distill_fields_hold_only_what_the_recipe_sets(tmp_path):
    r = _load(tmp_path, MINIMAL + '[distill]\nepochs = 3\n')
    student, fields, augment = distill_settings(r)
    assert (student, fields, augment) == ("wav2small", {"epochs": 3}, None)  # DistillConfig's defaults stand
    assert distill_settings(r, alpha=None, T=2.5)[1] == {"epochs": 3, "T": 2.5}


def test_set_overrides_are_checked_like_the_file():
    r = load_recipe("keyword")
    assert with_overrides(r, ["epochs=2", "augment.p_noise=0.1"]).distill.augment.p_noise == 0.1
    assert r.distill.epochs == 40  # the loaded recipe is not changed
    with pytest.raises(RecipeError, match=r"--set epochs=0: \[distill\] epochs: .*greater than or equal to 1"):
        with_overrides(r, ["epochs=0"])
    with pytest.raises(RecipeError, match=r"--set augment.p_nose=1: \[distill.augment\] p_nose: unknown key"):
        with_overrides(r, ["augment.p_nose=1"])
    with pytest.raises(RecipeError, match=r"\[distill\] alpha: .*less than or equal to 1 \(got 1.5\)"):
        distill_settings(r, alpha=1.5)


def test_a_packed_copy_keeps_each_corpus_and_its_settings(tmp_path):
    r = load_recipe("cough").reading_packed(tmp_path)
    assert {c.name for c in r.corpora} == {"packed"}
    assert [c.options["corpus"] for c in r.corpora] == ["covid19_cough", "ravdess", "tess"]
    assert all(c.root == str(tmp_path.resolve()) for c in r.corpora)

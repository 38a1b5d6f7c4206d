"""The recipe's [streams] table: checked at load, and its windows come from training audio only."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edgekd_train.recipe import RecipeError, load_recipe

KEYWORD = '[task]\nname = "keyword"\nlabels = ["yes", "no", "_unknown_", "_silence_"]\nwindow_seconds = 1.0\n' \
          '[[data.corpora]]\nname = "speech_commands"\n'
LABELS = '{ speech = "_unknown_", distractor = "_unknown_", noise = "_silence_" }'


def _load(tmp_path, text: str):
    path = tmp_path / "k.toml"
    path.write_text(text)
    return load_recipe(path)


def test_without_the_table_no_windows_are_added(tmp_path):
    s = _load(tmp_path, KEYWORD).streams
    assert s.background == 0 and s.partial == 0
    assert load_recipe("keyword").streams.background == 0 and load_recipe("keyword").streams.partial == 0


def test_a_full_table_loads(tmp_path):
    s = _load(tmp_path, KEYWORD + f'[streams]\nbackground = 10\npartial = 1\npartial_label = "_unknown_"\n'
                                  f'labels = {LABELS}\n').streams
    assert (s.background, s.partial, s.partial_label, s.labels["noise"]) == (10, 1, "_unknown_", "_silence_")


@pytest.mark.parametrize(
    "table, message",
    [
        ('background = -1\n', r"\[streams\] background: .*greater than or equal to 0 \(got -1\)"),
        ('backgrund = 10\n', r"\[streams\] backgrund: unknown key \(known: background, labels, partial"),
        ('background = 10\nlabels = { speech = "_unknown_" }\n',
         r"\[streams\]: labels: no label for \['distractor', 'noise'\]"),
        (f'background = 10\nweights = {{ music = 1.0 }}\nlabels = {LABELS}\n',
         r"weights: unknown kind\(s\) \['music'\]; kinds: speech, distractor, noise"),
        (f'background = 10\nweights = {{ speech = -1.0, noise = 1.0 }}\nlabels = {LABELS}\n',
         r"weights of \['speech'\] are negative"),
        (f'background = 10\nweights = {{ speech = 0.0 }}\nlabels = {LABELS}\n', r"needs a positive weight"),
        ('background = 10\nweights = { speech = 1.0 }\nlabels = { speech = "talk" }\n',
         r"\[streams\] labels.speech = 'talk' is not one of the task's labels"),
        ('partial = 1\n', r"partial = 1 needs partial_label"),
        ('partial = 1\npartial_label = "edge"\n', r"\[streams\] partial_label = 'edge' is not one of the task's labels"),
    ],
)
def test_a_mistake_in_the_table_says_what_to_fix(tmp_path, table, message):
    with pytest.raises(RecipeError, match=message) as info:
        _load(tmp_path, KEYWORD + "[streams]\n" + table)
    assert str(info.value).startswith(f"recipe {tmp_path / 'k.toml'}: ")


def _windows(value: float, n: int, label: int) -> tuple[np.ndarray, np.ndarray]:
    x = np.zeros((n, 16000), np.float32)
    x[:, 4000:12000] = value  # an audible word in the middle of each window
    return x, np.full(n, label)


def test_partial_windows_come_only_from_the_real_training_keywords(tmp_path):
    from edgekd_train.tasks.keyword import KeywordOptions, stream_windows

    recipe = _load(tmp_path, KEYWORD + '[streams]\npartial = 2\npartial_label = "_unknown_"\nseed = 3\n')
    parts = {"train_real": _windows(0.5, 5, 0), "train_synth": _windows(0.25, 5, 1), "val": _windows(0.125, 5, 0),
             "test": _windows(0.0625, 5, 0)}
    parts["train_real"][1][3:] = 2  # two training windows of _unknown_: not events
    parts["train_real"][0][3:, 4000:12000] = 0.75
    w = SimpleNamespace(x={k: v[0] for k, v in parts.items()}, y={k: v[1] for k, v in parts.items()})
    opts = KeywordOptions(out=tmp_path / "run", data=tmp_path, mix="real")
    x, y, info = stream_windows(opts, recipe, w)
    assert info == {"seed": 3, "background": 0, "partial": 6}  # 3 keyword windows, 2 each
    assert set(np.unique(x)) == {0.0, 0.5} and set(y) == {2}
    again, _, _ = stream_windows(opts, recipe, w)
    assert np.array_equal(x, again)


def test_partial_windows_need_real_training_clips(tmp_path):
    from edgekd_train.tasks import TaskOptionsError
    from edgekd_train.tasks.keyword import KeywordOptions, stream_windows

    recipe = _load(tmp_path, KEYWORD + '[streams]\npartial = 1\npartial_label = "_unknown_"\n')
    w = SimpleNamespace(x={"train_synth": _windows(0.5, 2, 0)[0]}, y={"train_synth": np.zeros(2, int)})
    opts = KeywordOptions(out=tmp_path / "run", data=tmp_path, mix="synth", synth=tmp_path)
    with pytest.raises(TaskOptionsError, match=r"\[streams\] partial windows .*--mix real"):
        stream_windows(opts, recipe, w)


def test_background_comes_from_the_training_half_only(data_dir: Path):
    from edgekd.contract import WELL_KNOWN_BACKGROUND
    from edgekd_train.streams.sources import keyword_sources, keyword_training_background, stable_part

    clips, noise = keyword_training_background(data_dir)
    keywords = [label for label in load_recipe("keyword").task.labels if label not in WELL_KNOWN_BACKGROUND]
    assert clips["speech"] and clips["distractor"] and len(noise) >= 1
    every = clips["speech"] + clips["distractor"]
    assert all(stable_part(c.group) == "train" for c in every)
    assert not any(c.meta.get("word") in keywords for c in every)
    held = {c.path for part in ("val", "test") for kind in keyword_sources(data_dir, part).background.values()
            for c in kind}
    assert held and not held & {c.path for c in every}
    rate = load_recipe("keyword").task.sample_rate
    assert all(len(x) == 40 * rate for x in noise)  # the stretch the keyword augmentation draws from


def test_the_keyword_streams_recipe_is_the_keyword_recipe_plus_the_table():
    plain, streams = load_recipe("keyword"), load_recipe("keyword-streams")
    assert streams.task == plain.task and streams.split == plain.split and streams.distill == plain.distill
    assert streams.data == plain.data and streams.export == plain.export
    assert streams.streams.background == 8000 and streams.streams.partial == 1


def test_background_never_reaches_the_streams_noise(tmp_path):
    from edgekd_train.tasks import TaskOptionsError
    from edgekd_train.tasks.keyword import KeywordOptions, stream_windows

    recipe = _load(tmp_path, KEYWORD + f'[streams]\nbackground = 5\nlabels = {LABELS}\n')
    w = SimpleNamespace(x={"train_real": _windows(0.5, 2, 0)[0]}, y={"train_real": np.zeros(2, int)})
    opts = KeywordOptions(out=tmp_path / "run", data=tmp_path, mix="real", noise_train_s=60.0)
    with pytest.raises(TaskOptionsError, match=r"--noise-train-s 60: the val and test streams' noise starts at 40 s"):
        stream_windows(opts, recipe, w)


def test_soft_targets_false_keeps_the_teachers_soft_targets_off_the_stream_windows(tmp_path):
    from edgekd_train.tasks.keyword import stream_soft_weights

    table = f'[streams]\nbackground = 3\npartial = 1\npartial_label = "_unknown_"\nlabels = {LABELS}\n'
    on = _load(tmp_path, KEYWORD + table)
    off = _load(tmp_path, KEYWORD + table + "soft_targets = false\n")
    assert on.streams.soft_targets is True and off.streams.soft_targets is False
    d = SimpleNamespace(train_x=np.zeros((9, 4), np.float32), info={"stream_windows": {"background": 3, "partial": 2}})
    assert stream_soft_weights(on, d) is None  # every window hears the teacher, as before
    assert stream_soft_weights(off, d).tolist() == [1, 1, 1, 1, 0, 0, 0, 0, 0]  # 4 clips, then 5 stream windows
    assert stream_soft_weights(off, SimpleNamespace(train_x=d.train_x, info={})) is None  # no [streams] windows
    with pytest.raises(RecipeError, match="soft_targets"):
        _load(tmp_path, KEYWORD + table + 'soft_targets = "clips"\n')

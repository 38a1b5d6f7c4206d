"""A task's data comes from its recipe alone: the keyword mapping, each corpus's label and thinning,
and the split are the same whichever command reads the recipe."""

from __future__ import annotations

import pytest

from edgekd_train.prepare import load_clips, protocol_split
from edgekd_train.recipe import load_recipe


def _speech_commands(root, words: dict[str, int]):
    for word, speakers in words.items():
        for s in range(speakers):
            (root / "speech_commands" / word).mkdir(parents=True, exist_ok=True)
            (root / "speech_commands" / word / f"spk{s:02d}{word}_nohash_0.wav").write_bytes(b"")


def test_keyword_recipe_maps_every_other_word_to_unknown(tmp_path):
    _speech_commands(tmp_path, {"yes": 4, "no": 4, "bed": 3, "_silence_": 2})
    recipe = load_recipe("keyword")
    clips = load_clips(recipe.corpora, tmp_path)["speech_commands"]
    labels = {c.path.parent.name: c.label for c in clips}
    assert labels == {"yes": "yes", "no": "no", "bed": "_unknown_", "_silence_": "_silence_"}
    assert {c.label for c in clips} <= set(recipe.task.labels)  # every clip decodes under the task's labels


@pytest.mark.data
def test_keyword_split_is_by_speaker_from_the_recipe(data_dir):
    recipe = load_recipe("keyword")
    split, tests = protocol_split(load_clips(recipe.corpora, data_dir), recipe.split)
    assert not split.leaks()
    sizes = {k: len(v) for k, v in split.parts().items()}
    assert sizes == {"train": 2066, "val": 522, "test": 875}  # ../shared/data as of 2026-12
    assert tests["speech_commands"] == split.test


@pytest.mark.data
def test_cough_recipe_labels_and_thins_each_corpus(data_dir):
    recipe = load_recipe("cough")
    by_corpus = load_clips(recipe.corpora, data_dir)
    assert {k: {c.label for c in v} for k, v in by_corpus.items()} == {
        "covid19_cough": {"cough"}, "ravdess": {"speech"}, "tess": {"speech"}}
    thin = {c.name: c.thin for c in recipe.corpora}
    assert thin == {"covid19_cough": 1, "ravdess": 2, "tess": 2}
    assert len(by_corpus["ravdess"]) == 1080 // 2  # every other RAVDESS clip, calm kept as speech
    split, _ = protocol_split(by_corpus, recipe.split)
    assert not split.leaks()
    assert {k: len(v) for k, v in split.parts().items()} == {"train": 1620, "val": 419, "test": 703}

"""Group-disjoint splits, holdouts, and the split file written next to results."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgekd_train.data.clips import Clip
from edgekd_train.data.split import Split, SplitError, group_split, holdout

pytestmark = pytest.mark.train


def clips_of(groups: int, per_group: int = 5) -> list[Clip]:
    return [
        Clip(Path(f"/d/g{g}_{i}.wav"), ["a", "b"][i % 2], f"g{g}", "fake", {"speaker": f"s{g % 3}"})
        for g in range(groups)
        for i in range(per_group)
    ]


def test_no_group_in_two_parts_and_fractions_roughly_kept():
    clips = clips_of(40)
    split = group_split(clips, val=0.1, test=0.2, seed=3)
    assert not split.leaks()
    sizes = {k: len(v) for k, v in split.parts().items()}
    assert sizes == {"train": 140, "val": 20, "test": 40}
    assert sorted(map(str, (c.path for part in split.parts().values() for c in part))) == sorted(str(c.path) for c in clips)


def test_seed_fixes_the_split_and_another_seed_changes_it():
    clips = clips_of(30)
    a, b, c = (group_split(clips, seed=s) for s in (1, 1, 2))
    assert [x.path for x in a.test] == [x.path for x in b.test]
    assert {x.group for x in a.test} != {x.group for x in c.test}


def test_split_by_meta_key_and_by_file():
    by_speaker = group_split(clips_of(30), val=0.2, test=0.3, by="speaker")
    assert not by_speaker.leaks()
    assert len({c.meta["speaker"] for c in by_speaker.test}) == 1
    by_file = group_split(clips_of(2, 20), val=0.1, test=0.2, by="path")
    assert len(by_file.test) == 8 and len(by_file.val) == 4


def test_too_few_groups_is_an_error_that_says_why():
    with pytest.raises(SplitError, match="only 2 distinct group"):
        group_split(clips_of(2))
    with pytest.raises(SplitError, match="fractions"):
        group_split(clips_of(10), val=0.5, test=0.5)


def test_write_and_read_back(tmp_path):
    split = group_split(clips_of(20), seed=7)
    path = split.write(tmp_path / "run" / "split.json")
    back = Split.read(path)
    assert back.seed == 7
    assert [(c.path, c.label, c.group) for c in back.test] == [(c.path, c.label, c.group) for c in split.test]
    assert Split.read(path).summary()["train"]["clips"] == len(split.train)


def test_holdout_refuses_to_cut_a_group():
    clips = clips_of(6)
    rest, held = holdout(clips, lambda c: c.group in ("g4", "g5"))
    assert len(held) == 10 and {c.group for c in rest}.isdisjoint({c.group for c in held})
    with pytest.raises(SplitError, match="g1"):
        holdout(clips, lambda c: c.path.name == "g1_0.wav")

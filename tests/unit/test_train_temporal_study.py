"""The temporal study's driver: what it runs, in which order, and the table it gathers."""

from __future__ import annotations

import json
import sys

import pytest

from edgekd_train.temporal import study

FAKE_RUN = """
import json, sys, time
from pathlib import Path
out, steps, taught = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "1"
if taught and not steps.exists():
    with open(steps.parent / "made-steps.log", "a") as fh:
        fh.write(steps.name + "\\n")
    time.sleep(0.5)  # others of the seed must wait for this file
    steps.write_text("steps")
if taught:
    assert steps.exists()
time.sleep(0.1)
(out / "summary.json").write_text(json.dumps({"ok": True}))
"""


def test_plan_has_a_labels_only_cell_then_each_lambda_for_every_student_and_seed():
    runs = study.plan(["wav2tiny", "tcresnet"], [0.0, 0.25], [0, 1], labels_only=True)
    assert len(runs) == 2 * 3 * 2
    assert [r.name for r in runs[:3]] == ["wav2tiny-labels-s0", "wav2tiny-lam0-s0", "wav2tiny-lam0.25-s0"]
    assert not runs[0].taught and runs[1].taught
    assert study.plan(["wav2tiny"], [0.5], [0], labels_only=False)[0].name == "wav2tiny-lam0.5-s0"


@pytest.mark.slow
def test_each_seeds_teacher_steps_are_made_once_while_its_other_taught_runs_wait(tmp_path, monkeypatch):
    script = tmp_path / "fake_run.py"
    script.write_text(FAKE_RUN)

    def fake_command(run, a):
        return [sys.executable, str(script), str(a.out / run.name), str(study.steps_path(a.out, run.seed)),
                "1" if run.taught else "0"]

    monkeypatch.setattr(study, "command", fake_command)
    a = study.StudyOptions(out=tmp_path / "study", synth=tmp_path, teacher_dir=tmp_path, jobs=3)
    runs = study.plan(["a", "b"], [0.0, 0.5], [0, 1], labels_only=True)
    (a.out / runs[0].name).mkdir(parents=True)
    (a.out / runs[0].name / "summary.json").write_text("{}")  # done before: not run again
    assert study.execute(runs, a) == []
    assert sorted((a.out / "made-steps.log").read_text().split()) == ["teacher-steps-s0.pt", "teacher-steps-s1.pt"]
    assert all(study.done(a.out, r) for r in runs)
    assert json.loads((a.out / runs[0].name / "summary.json").read_text()) == {}


def _summary(val: float, test: float, long8: float, share8: float) -> dict:
    return {"params": 15545, "macs_per_window": 8_900_000,
            "figures": {"val": {"accuracy": val}, "test": {"accuracy": test}},
            "long_clip_accuracy": {"snr_db": 10.0, "2s": 0.9, "4s": 0.85, "6s": 0.8, "8s": long8},
            "long_clip_weight_on_keyword": {"2s": 0.6, "4s": 0.4, "6s": 0.3, "8s": share8}}  # fmt: skip


def test_gather_averages_the_seeds_of_each_cell_and_the_table_shows_the_spread(tmp_path):
    runs = study.plan(["wav2tiny"], [0.25], [0, 1], labels_only=False)
    for run, (val, test) in zip(runs, ((0.90, 0.91), (0.92, 0.93))):
        (tmp_path / run.name).mkdir()
        (tmp_path / run.name / "summary.json").write_text(json.dumps(_summary(val, test, 0.8, 0.3)))
    results = study.gather(tmp_path, runs + study.plan(["tcresnet"], [0.25], [0], False))  # an unfinished run
    assert list(results) == ["wav2tiny|0.25"]
    r = results["wav2tiny|0.25"]
    assert r["seeds"] == [0, 1] and r["val"]["mean"] == pytest.approx(0.91) and r["val"]["sd"] == pytest.approx(0.01414, abs=1e-4)
    text = study.table(results, alpha=0.5, T=2.0)
    assert "| wav2tiny | 15,545 | 8.9 | T=2, alpha=0.5, lambda=0.25 | 2 | 91.0 ± 1.4 | 92.0 ± 1.4 | 90.0 ± 0.0 |" in text
    assert text.splitlines()[2].endswith("| 30.0 ± 0.0 |")


def test_the_study_runs_the_keyword_recipes_students_unless_named_and_refuses_unknown_ones():
    pytest.importorskip("torch")
    from edgekd_train.recipe import load_recipe
    from edgekd_train.tasks import TaskOptionsError

    listed = load_recipe("keyword").study.students
    assert "lstmp" in listed and "mhattrnn" in listed
    assert study.study_students() == listed
    assert study.study_students(["crnn"]) == ("crnn",)
    with pytest.raises(TaskOptionsError, match="resnet50.*lstmp"):
        study.study_students(["resnet50"])

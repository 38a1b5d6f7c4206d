"""`edgekd train run TASK`: one command per task, typed options checked before any work, one-line errors."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from edgekd_train.cli import app
from edgekd_train.tasks import TASKS


@pytest.mark.parametrize("task", TASKS)
def test_every_task_has_a_run_command_with_help(task):
    result = CliRunner().invoke(app, ["run", task, "--help"])
    assert result.exit_code == 0, result.output
    assert "--out" in result.output and "--recipe" in result.output


@pytest.mark.parametrize("command", [["reduced"], ["study"]])
def test_the_studies_have_help(command):
    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "--out" in result.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "keyword", "--mix", "synth"], "--mix synth needs --synth DIR"),
        (["run", "keyword", "--mix", "real", "--map-teacher", "x"], "--map-teacher needs --teacher-dir"),
        (["run", "keyword", "--mix", "real", "--teacher-only"], "--teacher-only needs --train-teacher or --distill-teacher"),
        (["run", "cough", "--data", "/no/such/folder"], "no /no/such/folder: pass --data"),
        (["run", "covid", "--target", "age"], "--target 'age': use covid or source"),
        (["run", "emotion", "--ship-from", "best"], "--ship-from 'best': use all or teacher"),
        (["reduced", "keyword"], "the reduced wav2vec2 runs on emotion, cough, covid"),
        (["reduced", "emotion"], "emotion needs --teacher"),
        (["study", "--synth", ".", "--teacher-dir", ".", "--lambda", "-1"], "must be >= 0"),
    ],
)
def test_options_that_cannot_work_end_in_one_line(tmp_path, args, message):
    data = [] if "--data" in args else ["--data", str(tmp_path)]  # passes without ../shared/data too
    result = CliRunner().invoke(app, [*args, *data, "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()  # checked before any work


def test_a_bad_recipe_key_is_named_before_any_work(tmp_path):
    result = CliRunner().invoke(app, ["run", "cough", "--out", str(tmp_path / "out"), "--data", str(tmp_path),
                                      "--set", "epochs=0"])
    assert result.exit_code == 2, result.output
    assert "[distill] epochs" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()

"""`edgekd train run TASK` (train one task's model from its recipe, top to bottom), and the studies
across tasks: `edgekd train reduced TASK`, `edgekd train study`.

One command per task (emotion, keyword, cough, covid); each turns its options into the task
module's typed options object and calls its `run`. The recipe is the single source of settings:
`--set KEY=VALUE` overrides a key of its [distill] table, checked like the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from edgekd_train.cli_common import command_group, setup_logging, user_errors
from edgekd_train.tasks import DEFAULT_DATA

run_app = command_group("run", "Train one task's model from its recipe: emotion, keyword, cough, covid.")

OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Folder for results (created).")]
DataOpt = Annotated[Path, typer.Option("--data", help="Folder holding the recipe's corpora ($EDGEKD_DATA).")]
SetOpt = Annotated[Optional[list[str]], typer.Option(
    "--set", help="Override a \\[distill] key of the recipe: KEY=VALUE (repeat), e.g. epochs=5 or augment.p_noise=0.8.")]
StudentOpt = Annotated[Optional[str], typer.Option(help="Student architecture (else the recipe's).")]
EpochsOpt = Annotated[Optional[int], typer.Option(help="Override the recipe's epochs.")]
MinutesOpt = Annotated[float, typer.Option(help="No new epoch starts after this many minutes.")]
ExportOpt = Annotated[Optional[Path], typer.Option(help="Write the trained student here as a contract ONNX file.")]
ScoreOpt = Annotated[Optional[list[Path]], typer.Option(
    help="Train nothing: measure this ONNX file on the task's windows (repeat).")]


RecipeOpt = Annotated[str, typer.Option("--recipe", "-r", help="Recipe name under train/recipes/ or a .toml path.")]


def _run(build, module: str) -> None:
    """Build the options (their checks raise TaskOptionsError) and run `module.run`, with one-line errors."""
    import importlib

    setup_logging()
    with user_errors():
        importlib.import_module(module if "." in module else f"edgekd_train.tasks.{module}").run(build())


@run_app.command("keyword")
def keyword_cmd(
    out: OutOpt,
    recipe: RecipeOpt = "keyword",
    data: DataOpt = DEFAULT_DATA,
    set_: SetOpt = None,
    synth: Annotated[Optional[Path], typer.Option(help="A folder written by `edgekd train synth`.")] = None,
    mix: Annotated[str, typer.Option(help="Training clips: real | synth | real+synth.")] = "real+synth",
    student: StudentOpt = None,
    epochs: EpochsOpt = None,
    seed: Annotated[Optional[int], typer.Option(help="Override the recipe's seed.")] = None,
    minutes: MinutesOpt = 12.0,
    noise_train_s: Annotated[float, typer.Option(
        help="The first seconds of each noise recording augment; the rest makes the long clips.")] = 40.0,
    export: ExportOpt = None,
    teacher_dir: Annotated[Optional[Path], typer.Option(
        help="A keyword wav2vec2 teacher (save_pretrained folder) or a student ensemble (`edgekd train ensemble`).")] = None,
    train_teacher: Annotated[Optional[float], typer.Option(
        metavar="MINUTES", help="Train the recipe's scratch wav2vec2 teacher for at most MINUTES first.")] = None,
    distill_teacher: Annotated[Optional[Path], typer.Option(
        metavar="DIR", help="Train the scratch teacher on the labels and the soft targets of DIR, for "
                            "[teacher.train] epochs (saved to OUT/teacher/best; a killed run resumes).")] = None,
    teacher_set: Annotated[Optional[list[str]], typer.Option(
        help="With --distill-teacher: override a setting of the teacher's distillation, KEY=VALUE (repeat).")] = None,
    map_teacher: Annotated[Optional[Path], typer.Option(
        help="With --teacher-dir: take the temporal maps from this wav2vec2 instead.")] = None,
    teacher_only: Annotated[bool, typer.Option(help="Stop after the teacher: measure it, train no student.")] = False,
    teacher_steps: Annotated[Optional[Path], typer.Option(
        help="The teacher's outputs on this seed's augmented batches: read from FILE, or computed once and saved.")] = None,
    alpha: Annotated[Optional[float], typer.Option(help="Hinton's alpha (1: labels only); else the recipe's.")] = None,
    temperature: Annotated[Optional[float], typer.Option("--T", help="Distillation temperature.")] = None,
    lam: Annotated[float, typer.Option(help="Weight of the temporal (attention) loss.")] = 0.0,
    no_augment: Annotated[bool, typer.Option(
        "--no-augment", help="No shift/gain/noise: the teacher's outputs are then computed once.")] = False,
) -> None:
    """Keyword spotting: speaker-disjoint split, one CPU student, the noisy long-clip protocol, export."""

    def build():
        from edgekd_train.tasks.keyword import KeywordOptions

        return KeywordOptions(
            out=out, data=data, recipe=recipe, assignments=tuple(set_ or ()), synth=synth, mix=mix, student=student,
            epochs=epochs, seed=seed, minutes=minutes, noise_train_s=noise_train_s, export=export,
            teacher_dir=teacher_dir, train_teacher=train_teacher, distill_teacher=distill_teacher,
            teacher_set=tuple(teacher_set or ()), map_teacher=map_teacher, teacher_only=teacher_only,
            teacher_steps=teacher_steps, alpha=alpha, T=temperature, lam=lam, no_augment=no_augment,
        )  # fmt: skip

    _run(build, "keyword")


@run_app.command("cough")
def cough_cmd(
    out: OutOpt,
    recipe: RecipeOpt = "cough",
    data: DataOpt = DEFAULT_DATA,
    set_: SetOpt = None,
    student: StudentOpt = None,
    epochs: EpochsOpt = None,
    minutes: MinutesOpt = 10.0,
    export: ExportOpt = None,
    score: ScoreOpt = None,
) -> None:
    """Cough detection (cough, speech, other): figures per recording source, band-limited speech, export."""

    def build():
        from edgekd_train.tasks.cough import CoughOptions

        return CoughOptions(out=out, data=data, recipe=recipe, assignments=tuple(set_ or ()), student=student,
                            epochs=epochs, minutes=minutes, export=export, score=tuple(score or ()))

    _run(build, "cough")


@run_app.command("covid")
def covid_cmd(
    out: OutOpt,
    recipe: RecipeOpt = "covid",
    data: DataOpt = DEFAULT_DATA,
    set_: SetOpt = None,
    student: StudentOpt = None,
    epochs: EpochsOpt = None,
    minutes: MinutesOpt = 10.0,
    target: Annotated[str, typer.Option(help="covid, or source (the shortcut probe: which recording source).")] = "covid",
    export: ExportOpt = None,
    score: ScoreOpt = None,
) -> None:
    """COVID-19 from a cough at 8 kHz: threshold from validation, ROC-AUC overall and per source, export."""

    def build():
        from edgekd_train.tasks.covid import CovidOptions

        return CovidOptions(out=out, data=data, recipe=recipe, assignments=tuple(set_ or ()), student=student,
                            epochs=epochs, minutes=minutes, target=target, export=export, score=tuple(score or ()))

    _run(build, "covid")


@run_app.command("emotion")
def emotion_cmd(
    out: OutOpt,
    recipe: RecipeOpt = "emotion",
    data: DataOpt = DEFAULT_DATA,
    set_: SetOpt = None,
    packed: Annotated[Optional[Path], typer.Option(help="A packed copy (edgekd_train.data.pack) to read instead of --data.")] = None,
    noise: Annotated[Optional[Path], typer.Option(help=".npy of background noise for the students' augmentation.")] = None,
    teacher_dir: Annotated[Optional[Path], typer.Option(help="Reuse a trained teacher instead of training one.")] = None,
    teacher_minutes: Annotated[float, typer.Option(help="Time budget of the teacher.")] = 3.0,
    teacher_epochs: Annotated[Optional[float], typer.Option(help="Override [teacher.train] epochs.")] = None,
    teacher_lr: Annotated[Optional[float], typer.Option(help="Override [teacher.train] learning_rate.")] = None,
    student_epochs: Annotated[Optional[int], typer.Option(help="Override the recipe's [distill] epochs.")] = None,
    study_seconds: Annotated[float, typer.Option(help="No new ablation run starts after this.")] = 240.0,
    workers: Annotated[int, typer.Option(help="Worker processes sharing the device.")] = 8,
    seeds: Annotated[Optional[list[int]], typer.Option("--seed", help="Seeds of the grid (repeat; else the recipe's).")] = None,
    students: Annotated[Optional[list[str]], typer.Option("--student", help="Students (repeat; else the recipe's).")] = None,
    alphas: Annotated[Optional[list[float]], typer.Option("--alpha", help="Part of the grid only (repeat).")] = None,
    temperatures: Annotated[Optional[list[float]], typer.Option("--T", help="Part of the grid only (repeat).")] = None,
    smoke: Annotated[bool, typer.Option(help="A minute-long pass over every stage, to catch errors.")] = False,
    ship_from: Annotated[str, typer.Option(help="Ship from all cells, or only teacher cells (alpha < 1).")] = "all",
    thin: Annotated[int, typer.Option(help="Keep every thin-th clip (a quick check on few clips).")] = 1,
    stop_after_teacher: Annotated[bool, typer.Option(help="Save the teacher, time two short student runs, stop.")] = False,
) -> None:
    """The emotion study: teacher, T x alpha x student x seed grid, selection on validation, export."""

    def build():
        from edgekd_train.tasks.emotion import EmotionOptions

        return EmotionOptions(
            out=out, recipe=recipe, data=data, packed=packed, noise=noise, teacher_dir=teacher_dir,
            teacher_minutes=teacher_minutes, teacher_epochs=teacher_epochs, teacher_lr=teacher_lr,
            student_epochs=student_epochs, study_seconds=study_seconds, workers=workers,
            seeds=tuple(seeds) if seeds else None, students=tuple(students) if students else None, smoke=smoke,
            ship_from=ship_from, thin=thin, alphas=tuple(alphas) if alphas else None,
            temperatures=tuple(temperatures) if temperatures else None, stop_after_teacher=stop_after_teacher,
            assignments=tuple(set_ or ()),
        )  # fmt: skip

    _run(build, "emotion")


def reduced_cmd(
    task: Annotated[str, typer.Argument(help="emotion | cough | covid")],
    out: OutOpt,
    teacher: Annotated[Optional[Path], typer.Option(
        help="The task's wav2vec2 teacher (save_pretrained folder); cough and covid train the recipe's without it.")] = None,
    compare: Annotated[Optional[list[Path]], typer.Option(
        help="cough, covid: a shipped ONNX student to measure on the same test windows (repeat).")] = None,
    data: DataOpt = DEFAULT_DATA,
    packed: Annotated[Optional[Path], typer.Option(help="A packed copy of the emotion corpora (edgekd_train.data.pack).")] = None,
    layers: Annotated[int, typer.Option(help="Transformer layers the student keeps.")] = 2,
    epochs: Annotated[int, typer.Option(help="Distillation epochs.")] = 6,
    minutes: MinutesOpt = 12.0,
    thin: Annotated[int, typer.Option(help="emotion: keep every thin-th clip (smoke runs).")] = 1,
    max_train: Annotated[Optional[int], typer.Option(
        help="emotion: distil on this many training windows (seeded sample); validation and test stay whole.")] = None,
    teacher_epochs: Annotated[Optional[int], typer.Option(help="cough, covid: epochs of the scratch teacher.")] = None,
) -> None:
    """The reduced wav2vec2 student (a teacher's CNN and first layers), distilled and measured beside the CNN students."""

    def build():
        from edgekd_train.run_reduced import ReducedOptions

        return ReducedOptions(task=task, out=out, teacher=teacher, compare=tuple(compare or ()), data=data,
                              packed=packed, layers=layers, epochs=epochs, minutes=minutes, thin=thin,
                              max_train=max_train, teacher_epochs=teacher_epochs)

    _run(build, "edgekd_train.run_reduced")


def study_cmd(
    out: OutOpt,
    synth: Annotated[Path, typer.Option(help="The synthetic keyword corpus (`edgekd train synth`).")],
    teacher_dir: Annotated[Optional[Path], typer.Option(
        help="The keyword teacher: a wav2vec2 (save_pretrained) or a student ensemble (`edgekd train ensemble`); "
             "not needed with --no-lambdas.")] = None,
    map_teacher: Annotated[Optional[Path], typer.Option(
        help="A keyword wav2vec2 whose attention rollout gives the temporal maps (soft targets: --teacher-dir's).")] = None,
    data: DataOpt = DEFAULT_DATA,
    students: Annotated[Optional[list[str]], typer.Option(
        "--student", help="Students (repeat; default: the keyword recipe's [study] students).")] = None,
    lambdas: Annotated[Optional[list[float]], typer.Option(
        "--lambda", help="Temporal loss weight of a taught cell (repeat; default 0, 0.1, 0.25, 0.5).")] = None,
    no_lambdas: Annotated[bool, typer.Option("--no-lambdas", help="No taught cell: only the labels-only one.")] = False,
    seeds: Annotated[Optional[list[int]], typer.Option("--seed", help="Seeds (repeat; default 0).")] = None,
    labels_only: Annotated[bool, typer.Option(
        "--labels-only/--no-labels-only", help="The labels-only cell (alpha = 1, no teacher).")] = True,
    alpha: Annotated[float, typer.Option(help="Hinton's alpha of the taught cells.")] = 0.5,
    temperature: Annotated[float, typer.Option("--T", help="Distillation temperature of the taught cells.")] = 2.0,
    minutes: Annotated[float, typer.Option(help="Each run: no new epoch starts after this many minutes.")] = 40.0,
    jobs: Annotated[int, typer.Option(help="Runs at once.")] = 2,
    threads: Annotated[int, typer.Option(help="torch threads of each run (jobs x threads <= cores).")] = 1,
    set_: SetOpt = None,
    table_only: Annotated[bool, typer.Option(help="Gather what has finished; run nothing.")] = False,
) -> None:
    """The temporal-distillation study on keywords: students x lambda x seeds, each run a `train run keyword`."""
    setup_logging()
    with user_errors():
        from edgekd_train.temporal.study import DEFAULT_LAMBDAS, StudyOptions, run

        opts = StudyOptions(
            out=out, synth=synth, teacher_dir=teacher_dir, map_teacher=map_teacher, data=data,
            students=tuple(students or ()), seeds=tuple(seeds or (0,)), labels_only=labels_only,
            lambdas=() if no_lambdas else tuple(lambdas or DEFAULT_LAMBDAS), alpha=alpha, T=temperature,
            minutes=minutes, jobs=jobs, threads=threads, assignments=tuple(set_ or ()), table_only=table_only,
        )  # fmt: skip
        _, failed = run(opts)
    if failed:
        raise typer.Exit(1)

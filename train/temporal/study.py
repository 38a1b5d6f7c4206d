"""The temporal-distillation study on keywords: students x lambda x seeds, one table.

    nice -n 10 edgekd train study --synth .devdata/keyword-synth/synth \
        --teacher-dir runs/keyword/w2v2/teacher/best --out runs/temporal --seed 0 --seed 1 --seed 2

Every run is `edgekd train run keyword` (started as `python -m edgekd_train.cli run keyword`: its own
process, one thread) with the same data, split, augmentation and schedule; only the student, the seed and the cell change. The cells:
`labels` (alpha = 1: no teacher), then Hinton's soft targets (`--alpha`, `--T`) with the temporal
loss at each `--lambdas` weight (maps from `--map-teacher`'s attention rollout when given, else from
the teacher itself). The teacher's outputs (logits and attention-rollout weights) on a
seed's augmented batches are computed once, by the first taught run of that seed, and shared by
every other (`--teacher-steps`): the batches do not depend on the student or the cell.

A run whose folder holds a `summary.json` is not run again, so a stopped study picks up where it
was. `--jobs` runs at once (2 on a 2-core machine). At the end (or with `--table-only`) the figures
of every finished run are gathered into `OUT/table.md` and `OUT/results.json`: mean and spread
over seeds of validation, unseen speakers, the noisy long clips (2-8 s), and the share of the
student's own weights over time on the keyword's second in an 8 s clip.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from edgekd_train.tasks import DEFAULT_DATA, TaskOptionsError, start_run

log = logging.getLogger(__name__)

DEFAULT_LAMBDAS = (0.0, 0.1, 0.25, 0.5)
LABELS_ONLY = "labels"


@dataclass(frozen=True)
class StudyOptions:
    """What `edgekd train study` takes."""

    out: Path
    synth: Path  # the synthetic keyword corpus (edgekd_train.data.synth)
    teacher_dir: Path | None = None  # a keyword wav2vec2 (save_pretrained) or a student ensemble (edgekd_train.ensemble)
    map_teacher: Path | None = None  # a wav2vec2 whose attention rollout gives the maps (soft targets: teacher_dir's)
    data: Path = DEFAULT_DATA
    students: tuple[str, ...] = ()  # none given: the keyword recipe's [study] students
    lambdas: tuple[float, ...] = DEFAULT_LAMBDAS  # the temporal loss weights of the taught cells
    seeds: tuple[int, ...] = (0,)
    labels_only: bool = True  # the labels-only cell (alpha = 1, no teacher)
    alpha: float = 0.5
    T: float = 2.0
    minutes: float = 40.0  # each run: no new epoch starts after this
    jobs: int = 2
    threads: int = 1  # torch threads of each run (jobs x threads should not exceed the cores)
    assignments: tuple[str, ...] = ()  # --set KEY=VALUE passed to every run ([distill] of the keyword recipe)
    table_only: bool = False  # gather what has finished; run nothing

    def __post_init__(self) -> None:
        if any(lam < 0 for lam in self.lambdas):
            raise TaskOptionsError(f"--lambda {min(self.lambdas)}: the temporal loss weights must be >= 0")
        if self.jobs < 1 or self.threads < 1:
            raise TaskOptionsError("--jobs and --threads must be >= 1")
        if self.lambdas and self.teacher_dir is None and not self.table_only:
            raise TaskOptionsError("the taught cells (--lambda) need --teacher-dir; for the labels-only cell alone "
                                   "give --no-lambdas")


@dataclass(frozen=True)
class Run:
    student: str
    cell: str  # "labels" or the lambda, e.g. "0.25"
    seed: int

    @property
    def taught(self) -> bool:
        return self.cell != LABELS_ONLY

    @property
    def name(self) -> str:
        return f"{self.student}-{'labels' if not self.taught else 'lam' + self.cell}-s{self.seed}"


def plan(students: Sequence[str], lambdas: Sequence[float], seeds: Sequence[int], labels_only: bool) -> list[Run]:
    cells = ([LABELS_ONLY] if labels_only else []) + [f"{lam:g}" for lam in lambdas]
    return [Run(st, c, seed) for seed in seeds for st in students for c in cells]


def command(run: Run, a: StudyOptions) -> list[str]:
    cmd = [sys.executable, "-m", "edgekd_train.cli", "run", "keyword", "--out", str(a.out / run.name), "--data", str(a.data),
           "--synth", str(a.synth), "--student", run.student, "--seed", str(run.seed), "--minutes", str(a.minutes)]
    if run.taught:
        cmd += ["--teacher-dir", str(a.teacher_dir), "--alpha", str(a.alpha), "--T", str(a.T), "--lam", run.cell,
                "--teacher-steps", str(steps_path(a.out, run.seed))]
        if a.map_teacher is not None:
            cmd += ["--map-teacher", str(a.map_teacher)]
    else:
        cmd += ["--alpha", "1"]
    for item in a.assignments:
        cmd += ["--set", item]
    return cmd


def steps_path(out: Path, seed: int) -> Path:
    return out / f"teacher-steps-s{seed}.pt"


def done(out: Path, run: Run) -> bool:
    return (out / run.name / "summary.json").is_file()


def execute(runs: list[Run], a: StudyOptions) -> list[Run]:
    """Run what is not done yet, `a.jobs` at a time; a seed's first taught run makes its teacher steps
    while the others of that seed wait. Returns the runs that failed."""
    todo = [r for r in runs if not done(a.out, r)]
    running: dict[Run, subprocess.Popen] = {}
    making_steps: set[int] = set()
    failed: list[Run] = []
    env = {**os.environ, "EDGEKD_THREADS": str(a.threads)}
    log.info("study: %d runs, %d already done", len(runs), len(runs) - len(todo))
    while todo or running:
        for run, proc in list(running.items()):
            if proc.poll() is None:
                continue
            del running[run]
            if run.taught:
                making_steps.discard(run.seed)
            if proc.returncode != 0 or not done(a.out, run):
                failed.append(run)
                log.error("study: %s failed (exit %s); see %s", run.name, proc.returncode, a.out / run.name / "run.log")
            else:
                log.info("study: %s done", run.name)
        while todo and len(running) < a.jobs:
            ready = next((r for r in todo if not r.taught or steps_path(a.out, r.seed).is_file()
                          or r.seed not in making_steps), None)  # fmt: skip
            if ready is None:
                break
            todo.remove(ready)
            if ready.taught and not steps_path(a.out, ready.seed).is_file():
                making_steps.add(ready.seed)
            (a.out / ready.name).mkdir(parents=True, exist_ok=True)
            with open(a.out / ready.name / "stdout.log", "w") as fh:
                running[ready] = subprocess.Popen(command(ready, a), stdout=fh, stderr=subprocess.STDOUT, env=env)
            log.info("study: started %s", ready.name)
        time.sleep(0.5)
    return failed


def _stat(values: list[float]) -> dict[str, float]:
    out = {"mean": statistics.fmean(values), "n": len(values)}
    if len(values) > 1:
        out["sd"] = statistics.stdev(values)
    return out


def gather(out: Path, runs: list[Run]) -> dict[str, Any]:
    """Per (student, cell): mean and spread over the finished seeds of every figure."""
    cells: dict[tuple[str, str], dict[str, list[float]]] = {}
    for run in runs:
        path = out / run.name / "summary.json"
        if not path.is_file():
            continue
        s = json.loads(path.read_text())
        fig = {"val": s["figures"]["val"]["accuracy"], "test": s["figures"]["test"]["accuracy"]}
        fig.update({f"long {k}": v for k, v in s["long_clip_accuracy"].items() if k != "snr_db"})
        fig.update({f"on keyword {k}": v for k, v in s.get("long_clip_weight_on_keyword", {}).items()})
        row = cells.setdefault((run.student, run.cell), {"seeds": []})
        row["seeds"].append(run.seed)
        for k, v in fig.items():
            row.setdefault(k, []).append(float(v))
        row.setdefault("params", [s["params"]])
        row.setdefault("macs", [s["macs_per_window"]])
    return {f"{st}|{cell}": {"student": st, "cell": cell, "seeds": v.pop("seeds"), "params": v.pop("params")[0],
                              "macs_per_window": v.pop("macs")[0], **{k: _stat(x) for k, x in v.items()}}
            for (st, cell), v in cells.items()}  # fmt: skip


def _pct(stat: dict[str, float] | None) -> str:
    if stat is None:
        return ""
    text = f"{100 * stat['mean']:.1f}"
    return text + (f" ± {100 * stat['sd']:.1f}" if "sd" in stat else "")


def table(results: dict[str, Any], alpha: float, T: float) -> str:
    lines = ["| student | parameters | M MAC / 1 s | cell | seeds | val | test (unseen speakers) "
             "| long 2 s | 4 s | 6 s | 8 s | weight on keyword, 8 s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results.values():
        cell = "labels only" if r["cell"] == LABELS_ONLY else f"T={T:g}, alpha={alpha:g}, lambda={r['cell']}"
        size = f"{r['params']:,} | {r['macs_per_window'] / 1e6:.1f}"
        lines.append(f"| {r['student']} | {size} | {cell} | {len(r['seeds'])} | {_pct(r.get('val'))} | {_pct(r.get('test'))} | "
                     + " | ".join(_pct(r.get(f"long {s}s")) for s in (2, 4, 6, 8))
                     + f" | {_pct(r.get('on keyword 8s'))} |")
    return "\n".join(lines) + "\n\nPercent, mean ± standard deviation over seeds.\n"


def study_students(named: Sequence[str] = ()) -> tuple[str, ...]:
    """The students to run: those named, else the keyword recipe's [study] students; each must be buildable."""
    from edgekd_train.recipe import load_recipe
    from edgekd_train.student_run import student_names

    students = tuple(named) or load_recipe("keyword").study.students
    if not students:
        raise TaskOptionsError("no students: name them with --student or list them in the keyword recipe's [study]")
    unknown = [s for s in students if s not in student_names()]
    if unknown:
        raise TaskOptionsError(f"unknown student(s) {', '.join(unknown)}; choose from {', '.join(student_names())}")
    return students


def run(a: StudyOptions) -> tuple[dict[str, Any], list[Run]]:
    """Run what is not done, gather the table (OUT/table.md, OUT/results.json); returns the results and
    the runs that failed."""
    start_run(a.out, cpu_threads=False)
    runs = plan(study_students(a.students), a.lambdas, a.seeds, a.labels_only)
    failed = [] if a.table_only else execute(runs, a)
    results = gather(a.out, runs)
    (a.out / "results.json").write_text(json.dumps({"teacher": a.teacher_dir and str(a.teacher_dir), "map_teacher": str(a.map_teacher),
                                                    "alpha": a.alpha, "T": a.T, "results": results}, indent=1))  # fmt: skip
    (a.out / "table.md").write_text(table(results, a.alpha, a.T))
    print(table(results, a.alpha, a.T))
    if failed:
        log.error("study: %d run(s) failed: %s", len(failed), ", ".join(r.name for r in failed))
    return results, failed

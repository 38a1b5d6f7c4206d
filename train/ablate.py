"""The ablation of the study: temperature T x weight alpha x student x seed.

`run_grid` trains every cell (several worker processes share one GPU: the students are tiny, so
one process alone leaves it idle), `summarize` turns the runs into means and spreads per cell,
`write_ablation` writes `ablation.json`, `ablation.md` and `ablation.png` (heatmaps), and
`teacher_effect` says, per student, whether learning from the teacher beat learning from the
labels alone (alpha = 1).

With alpha = 1 the loss ignores the teacher, and so T: one run per student and seed stands for
every T of that column (the table says so) instead of three identical runs.

The data travel to the workers as `.npy` files in `AblationData.work_dir`, written once by
`AblationData.save`.
"""

from __future__ import annotations

import json
import logging
import math
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AblationJob:
    student: str
    T: float
    alpha: float
    seed: int

    @property
    def key(self) -> str:
        return f"{self.student}-T{self.T:g}-a{self.alpha:g}-s{self.seed}"


def grid(
    students: Sequence[str], temperatures: Sequence[float], alphas: Sequence[float], seeds: Sequence[int]
) -> list[AblationJob]:
    """Every cell, with one alpha = 1 run per student and seed (T does not matter there)."""
    jobs = []
    for student in students:
        for seed in seeds:
            for alpha in alphas:
                for T in temperatures if alpha < 1 else temperatures[:1]:
                    jobs.append(AblationJob(student, float(T), float(alpha), int(seed)))
    return jobs


@dataclass(frozen=True)
class AblationData:
    """Where a worker finds its windows, labels, teacher and settings."""

    work_dir: str
    labels: tuple[str, ...]
    sample_rate: int
    teacher_dir: str | None  # saved by finetune_teacher (None: alpha = 1 only)
    tests: tuple[str, ...]  # names of test subsets: test_<name>_x.npy / _y.npy
    distill: dict[str, Any] = field(default_factory=dict)  # DistillConfig fields
    augment: dict[str, Any] | None = None  # TensorAugmentConfig fields (None: no augmentation)
    noise_file: str | None = None  # .npy of background noise for the augmentation
    teacher_bf16: bool = True
    time_limit_s: float | None = None  # jobs not started by then are skipped
    # one teacher pass per seed over the batch sequence, shared by every run of that seed
    # (edgekd_train.distill.teacher_steps); False: every run calls the teacher on each of its batches
    share_teacher_steps: bool = True

    @staticmethod
    def save(work_dir: str | Path, arrays: dict[str, np.ndarray]) -> None:
        work = Path(work_dir)
        work.mkdir(parents=True, exist_ok=True)
        for name, a in arrays.items():
            np.save(work / f"{name}.npy", a)

    @staticmethod
    def save_windows(work_dir: str | Path, windows: Any) -> None:
        """A `edgekd_train.prepare.Windows`: every part's windows and labels, and the training windows' corpora."""
        arrays = {**{f"{n}_x": x for n, x in windows.x.items()}, **{f"{n}_y": y for n, y in windows.y.items()}}
        if "train" in windows.corpus:
            arrays["train_groups"] = windows.corpus["train"]
        AblationData.save(work_dir, arrays)

    def load(self, name: str) -> np.ndarray:
        return np.load(Path(self.work_dir) / f"{name}.npy")


# --------------------------------------------------------------------------- one run (in a worker)

_WORKER: dict[str, Any] = {}


def _worker_state(data: AblationData) -> dict[str, Any]:
    """Load the windows (to the GPU) and the teacher once per worker process."""
    import torch

    if _WORKER.get("data") == data:
        return _WORKER
    device = torch.device("cuda" if torch.cuda.is_available() and data.distill.get("device", "auto") != "cpu" else "cpu")
    state: dict[str, Any] = {"data": data, "device": device}
    state["train"] = (torch.from_numpy(data.load("train_x")).to(device), torch.from_numpy(data.load("train_y")).to(device))
    state["val"] = (torch.from_numpy(data.load("val_x")).to(device), torch.from_numpy(data.load("val_y")).to(device))
    groups = Path(data.work_dir) / "train_groups.npy"  # each training window's corpus, for balance = "group"
    state["groups"] = np.load(groups) if groups.is_file() else None
    state["tests"] = {t: (data.load(f"test_{t}_x"), data.load(f"test_{t}_y")) for t in data.tests}
    state["noise"] = None
    if data.noise_file:
        noise = np.load(data.noise_file)
        if noise.dtype == np.int16:  # a compact bank: int16 PCM
            noise = noise.astype(np.float32) / 32768.0
        state["noise"] = torch.from_numpy(noise.astype(np.float32))
    state["teacher"] = None
    if data.teacher_dir:
        from edgekd_train.ensemble import load_teacher

        state["teacher"] = load_teacher(data.teacher_dir, data.labels, data.sample_rate).to(device).eval()
        for p in state["teacher"].parameters():
            p.requires_grad_(False)
    _WORKER.clear()
    _WORKER.update(state)
    return _WORKER


def _teacher_fn(data: AblationData, st: dict[str, Any]):
    import torch

    from edgekd_train.ensemble import StudentEnsemble

    teacher, device = st["teacher"], st["device"]
    if teacher is None:
        raise ValueError("alpha < 1 needs a teacher, but AblationData.teacher_dir is None")
    # bf16 suits a wav2vec2; students' log-mel front ends stay float32
    bf16 = data.teacher_bf16 and device.type == "cuda" and not isinstance(teacher, StudentEnsemble)

    def teacher_fn(xb: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            return teacher(xb).float()

    return teacher_fn


def _augmenter(data: AblationData, st: dict[str, Any], seed: int):
    from edgekd_train.distill.tensor_augment import TensorAugment, TensorAugmentConfig

    if data.augment is None:
        return None
    return TensorAugment(TensorAugmentConfig(**{**data.augment, "seed": seed}), st["noise"])


def _steps_path(out_dir: str | Path, seed: int) -> Path:
    return Path(out_dir) / "teacher-steps" / f"seed{seed}.pt"


def fill_teacher_steps(data: AblationData, seed: int, out_dir: str) -> dict[str, Any]:
    """The teacher's logits for every step of seed `seed`'s runs (any student, T, alpha), saved."""
    from edgekd_train.distill.loop import DistillConfig
    from edgekd_train.distill.teacher_steps import TeacherSteps

    started = time.monotonic()
    st = _worker_state(data)
    cfg = DistillConfig(**{**data.distill, "seed": seed, "progress": False})
    steps = TeacherSteps.compute(_teacher_fn(data, st), st["train"][0], cfg, _augmenter(data, st, seed), st["groups"])
    steps.save(_steps_path(out_dir, seed))
    log.info("ablation: teacher logits of seed %d's %d steps in %.0f s", seed, len(steps), time.monotonic() - started)
    return {"seed": seed, "steps": len(steps), "seconds": time.monotonic() - started}


def run_job(data: AblationData, job: AblationJob, out_dir: str) -> dict[str, Any]:
    """Train one student for one cell; evaluate it on val and every test subset; save its weights."""
    import torch

    from edgekd_train.checkpoints import save_student
    from edgekd_train.distill.loop import DistillConfig, distill, evaluate_logits
    from edgekd_train.distill.teacher_steps import TeacherSteps
    from edgekd_train.evaluate import evaluate
    from edgekd_train.models.students import build_student, count_params

    started = time.monotonic()
    st = _worker_state(data)
    device = st["device"]
    torch.manual_seed(job.seed)
    student = build_student(job.student, len(data.labels), data.sample_rate)
    cfg = DistillConfig(**{**data.distill, "T": job.T, "alpha": job.alpha, "seed": job.seed, "progress": False})
    augment = _augmenter(data, st, job.seed)
    teacher_fn = None
    teacher_mode = "none"
    if job.alpha < 1:
        teacher_fn = _teacher_fn(data, st)
        teacher_mode = "live"
        cached = _steps_path(out_dir, job.seed)
        if data.share_teacher_steps and cached.is_file():
            teacher_fn = TeacherSteps.load(cached, device, fallback=teacher_fn)
    history = distill(student, st["train"][0], st["train"][1], st["val"][0], st["val"][1],
                      teacher_fn=teacher_fn, cfg=cfg, augment=augment, groups=st["groups"])
    if isinstance(teacher_fn, TeacherSteps):
        teacher_mode = f"shared steps ({teacher_fn.hits} cached, {teacher_fn.misses} live)"
    result: dict[str, Any] = {**asdict(job), "key": job.key, "params": count_params(student),
                              "val_acc": history["best_val_acc"], "best_epoch": history["best_epoch"],
                              "epochs_run": len(history["epoch"]), "teacher": teacher_mode, "tests": {}}
    for name, (x, y) in st["tests"].items():
        logits = evaluate_logits(student, torch.from_numpy(x).to(device)).cpu().numpy()
        ev = evaluate(logits, y, data.labels)
        result["tests"][name] = {"accuracy": ev.accuracy, "macro_f1": ev.macro_f1}
    out = Path(out_dir)
    save_student(out / f"{job.key}.pt", student, job.student, T=job.T, alpha=job.alpha, seed=job.seed)
    result["seconds"] = time.monotonic() - started
    (out / f"{job.key}.json").write_text(json.dumps({**result, "history": {k: history[k] for k in ("train_loss", "val_acc")}}))
    return result


def _run_chunk(data: AblationData, jobs: list[AblationJob], out_dir: str, deadline: float | None) -> list[dict[str, Any]]:
    results = []
    for job in jobs:
        if deadline is not None and time.time() > deadline:
            log.warning("ablation: time limit reached, skipping %s", job.key)
            continue
        try:
            results.append(run_job(data, job, out_dir))
        except Exception:  # one failed cell must not lose the others: log it; the table counts what ran
            log.exception("ablation: %s failed", job.key)
            continue
        log.info("ablation: %s val %.3f %s", job.key, results[-1]["val_acc"],
                 {k: round(v["accuracy"], 3) for k, v in results[-1]["tests"].items()})
    return results


def _fill(data: AblationData, seed: int, out_dir: str) -> None:
    try:
        fill_teacher_steps(data, seed, out_dir)
    except Exception:  # the runs of that seed then call the teacher themselves: slower, same result
        log.exception("ablation: teacher steps of seed %d failed; its runs use the live teacher", seed)


def run_grid(data: AblationData, jobs: Sequence[AblationJob], out_dir: str | Path, workers: int = 1) -> list[dict[str, Any]]:
    """Run `jobs` in `workers` processes (1: in this process). Results in the order they finish.

    With `share_teacher_steps` the teacher first runs once per seed over that seed's batches
    (alongside the labels-only runs), then the runs that learn from it read its logits.
    """
    deadline = time.time() + data.time_limit_s if data.time_limit_s else None
    jobs = list(jobs)
    out = str(out_dir)
    labels_only = [j for j in jobs if j.alpha >= 1]
    taught = [j for j in jobs if j.alpha < 1]
    seeds = sorted({j.seed for j in taught}) if data.share_teacher_steps else []
    if workers <= 1:
        for seed in seeds:
            _fill(data, seed, out)
        return _run_chunk(data, labels_only + taught, out, deadline)
    import multiprocessing as mp

    results: list[dict[str, Any]] = []
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                             initializer=_init_logging) as pool:
        fills = [pool.submit(_fill, data, seed, out) for seed in seeds]
        futures = [pool.submit(_run_chunk, data, [j], out, deadline) for j in labels_only]
        for f in fills:
            f.result()
        futures += [pool.submit(_run_chunk, data, [j], out, deadline) for j in taught]
        for f in as_completed(futures):
            results.extend(f.result())
    return results


def _init_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(processName)s %(name)s: %(message)s")


# --------------------------------------------------------------------------- the table


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else float("nan")  # no spread from one run


def metric_of(result: dict[str, Any], metric: str) -> float:
    """`val_acc`, or `<test>` / `<test>.macro_f1` for a test subset."""
    if metric == "val_acc":
        return float(result["val_acc"])
    name, _, field_ = metric.partition(".")
    return float(result["tests"][name][field_ or "accuracy"])


def summarize(results: Sequence[dict[str, Any]], metrics: Sequence[str], temperatures: Sequence[float]) -> list[dict[str, Any]]:
    """One row per (student, T, alpha): mean, std and n for each metric. alpha = 1 rows repeat per T."""
    rows = []
    students = sorted({r["student"] for r in results})
    alphas = sorted({r["alpha"] for r in results})
    for student in students:
        for T in temperatures:
            for alpha in alphas:
                runs = [r for r in results if r["student"] == student and r["alpha"] == alpha
                        and (alpha >= 1 or r["T"] == T)]
                if not runs:
                    continue
                row: dict[str, Any] = {"student": student, "T": float(T), "alpha": alpha, "n": len(runs),
                                       "seeds": sorted(r["seed"] for r in runs)}
                for m in metrics:
                    row[m] = _mean_std([metric_of(r, m) for r in runs])
                rows.append(row)
    return rows


def teacher_effect(rows: Sequence[dict[str, Any]], student: str, select_by: str, metrics: Sequence[str]) -> dict[str, Any]:
    """Best teacher cell (alpha < 1, chosen by `select_by`) against labels only (alpha = 1).

    The verdict counts a difference as real only when it exceeds the larger of the two spreads.
    """
    mine = [r for r in rows if r["student"] == student]
    with_teacher = [r for r in mine if r["alpha"] < 1]
    labels_only = [r for r in mine if r["alpha"] >= 1]
    if not with_teacher or not labels_only:
        return {"student": student, "verdict": "not measured (the grid lacks alpha < 1 or alpha = 1 cells)"}
    best = max(with_teacher, key=lambda r: r[select_by][0])
    base = labels_only[0]
    out: dict[str, Any] = {"student": student, "best_cell": {"T": best["T"], "alpha": best["alpha"]},
                           "selected_by": select_by, "metrics": {}}
    verdicts = []
    for m in metrics:
        (bm, bs), (lm, ls) = best[m], base[m]
        diff = bm - lm
        noise = max((x for x in (bs, ls) if not math.isnan(x)), default=0.0)
        word = "helped" if diff > noise else "hurt" if diff < -noise else "no clear difference"
        out["metrics"][m] = {"with_teacher": [bm, bs], "labels_only": [lm, ls], "difference": diff, "verdict": word}
        verdicts.append(f"{m}: {word} ({diff:+.2%})")
    out["verdict"] = "; ".join(verdicts)
    return out


def _fmt(ms: tuple[float, float]) -> str:
    m, s = ms
    if math.isnan(m):
        return "-"
    return f"{m:.2%} (one run)" if math.isnan(s) else f"{m:.2%} ± {s:.2%}"


def write_ablation(
    out_dir: str | Path,
    results: Sequence[dict[str, Any]],
    temperatures: Sequence[float],
    metrics: Sequence[str],
    select_by: str = "val_acc",
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    """`ablation.json`, `ablation.md`, `ablation.png`; returns the summary (rows and teacher effect)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = summarize(results, metrics, temperatures)
    students = sorted({r["student"] for r in rows})
    effects = {s: teacher_effect(rows, s, select_by, metrics) for s in students}
    summary = {"rows": rows, "teacher_effect": effects, "metrics": list(metrics), "select_by": select_by,
               "runs": len(results), "notes": list(notes)}
    (out / "ablation.json").write_text(json.dumps(summary, indent=1, default=float))
    (out / "ablation_runs.json").write_text(json.dumps(list(results), indent=1, default=float))
    lines = ["# Ablation: temperature T x alpha (alpha = 1: labels only, no teacher)", ""]
    lines += [f"- {n}" for n in notes]
    lines += [f"- {len(results)} runs; mean ± standard deviation over seeds; alpha = 1 is one set of runs "
              "per student and seed, repeated in each T row (the loss ignores T there)", ""]
    lines.append("| student | T | alpha | n | " + " | ".join(metrics) + " |")
    lines.append("|---" * (4 + len(metrics)) + "|")
    for r in rows:
        lines.append(f"| {r['student']} | {r['T']:g} | {r['alpha']:g} | {r['n']} | "
                     + " | ".join(_fmt(tuple(r[m])) for m in metrics) + " |")
    lines += ["", "## Does the teacher help?", ""]
    for s, e in effects.items():
        cell = e.get("best_cell", {})
        lines.append(f"- **{s}** (best teacher cell by {select_by}: T={cell.get('T')}, alpha={cell.get('alpha')}): {e['verdict']}")
    (out / "ablation.md").write_text("\n".join(lines) + "\n")
    _heatmap(out / "ablation.png", rows, students, temperatures, metrics)
    return summary


def _heatmap(path: Path, rows: Sequence[dict[str, Any]], students: Sequence[str], temperatures: Sequence[float],
             metrics: Sequence[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    alphas = sorted({r["alpha"] for r in rows})
    fig, axes = plt.subplots(len(students), len(metrics), squeeze=False,
                             figsize=(1.2 + 2.6 * len(metrics), 0.8 + 2.2 * len(students)))
    for i, s in enumerate(students):
        for j, m in enumerate(metrics):
            grid_ = np.full((len(temperatures), len(alphas)), np.nan)
            spread = np.full_like(grid_, np.nan)
            for r in rows:
                if r["student"] == s:
                    a, b = temperatures.index(r["T"]), alphas.index(r["alpha"])
                    grid_[a, b], spread[a, b] = r[m]
            ax = axes[i][j]
            im = ax.imshow(grid_, cmap="viridis", aspect="auto")
            for a in range(len(temperatures)):
                for b in range(len(alphas)):
                    if not np.isnan(grid_[a, b]):
                        sd = "one run" if np.isnan(spread[a, b]) else f"±{spread[a, b]:.1%}"
                        ax.text(b, a, f"{grid_[a, b]:.1%}\n{sd}", ha="center", va="center",
                                fontsize=7, color="white" if grid_[a, b] < np.nanmean(grid_) else "black")
            ax.set_xticks(range(len(alphas)), [f"{x:g}" for x in alphas])
            ax.set_yticks(range(len(temperatures)), [f"{t:g}" for t in temperatures])
            ax.set_xlabel("alpha (1 = no teacher)")
            ax.set_ylabel("T")
            ax.set_title(f"{s}: {m}", fontsize=9)
            fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

"""Keyword spotting, top to bottom: real + synthetic clips, a speaker-disjoint split, one small
student trained on the CPU, figures on unseen real speakers, the noisy long-clip protocol, export.

    nice -n 10 edgekd train run keyword --synth .devdata/keyword-synth/synth --out runs/keyword

1. data     the recipe's corpora (speech_commands, its keywords named there, every other word
            `_unknown_`) split by the recipe's [split] (whole speakers: the part of the file name
            before `_nohash_`); synthetic clips (`edgekd train synth`) join the training
            part only; `--mix real|synth|real+synth` says which training clips are used.
2. train    `edgekd_train.student_run.fit`: augmentation with the recipe's noise recordings (the first
            `--noise-train-s` seconds of each), optional teacher and temporal loss.
3. figures  accuracy and per-class figures on the unseen real speakers (`test`), and the noisy
            long-clip protocol: each test clip at a random time in 2/4/6/8 s of noise cut
            from the *other* part of the noise recordings, at 10 dB SNR.
4. export   `--export PATH` writes the contract ONNX file (parity-checked against torch).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edgekd_train.tasks import DEFAULT_DATA, TaskOptionsError, require_dir, start_run

log = logging.getLogger(__name__)

LONG_SECONDS = (2.0, 4.0, 6.0, 8.0)
LONG_SNR_DB = 10.0


@dataclass(frozen=True)
class KeywordOptions:
    """What `edgekd train run keyword` takes; the recipe holds every training setting."""

    out: Path
    data: Path = DEFAULT_DATA
    recipe: str = "keyword"
    assignments: tuple[str, ...] = ()  # --set KEY=VALUE overrides of the recipe's [distill]
    synth: Path | None = None  # a folder written by `edgekd train synth`
    mix: Literal["real", "synth", "real+synth"] = "real+synth"
    student: str | None = None  # default: the recipe's [distill] student
    epochs: int | None = None
    seed: int | None = None
    minutes: float = 12.0  # no new epoch starts after this
    noise_train_s: float = 40.0  # the first seconds of each noise recording augment; the rest is for testing
    export: Path | None = None  # write the trained student here as ONNX
    teacher_dir: Path | None = None  # a keyword wav2vec2 (save_pretrained folder) or a student ensemble
    train_teacher: float | None = None  # minutes: train the recipe's scratch teacher with Trainer first
    distill_teacher: Path | None = None  # train the scratch teacher on the soft targets of this stronger model
    teacher_set: tuple[str, ...] = ()  # with distill_teacher: KEY=VALUE overrides of the teacher's distillation
    map_teacher: Path | None = None  # with teacher_dir: the temporal maps come from this wav2vec2 instead
    teacher_only: bool = False  # stop after the teacher
    teacher_steps: Path | None = None  # the teacher's outputs on this seed's augmented batches, shared by runs
    alpha: float | None = None  # Hinton's alpha (1: labels only); default: the recipe's
    T: float | None = None
    lam: float = 0.0  # weight of the temporal (attention) loss
    no_augment: bool = False  # no shift/gain/noise: the teacher's outputs are then computed once

    def __post_init__(self) -> None:
        if sum(x is not None for x in (self.teacher_dir, self.train_teacher, self.distill_teacher)) > 1:
            raise TaskOptionsError("give one of --teacher-dir, --train-teacher, --distill-teacher")
        if self.map_teacher is not None and self.teacher_dir is None:
            raise TaskOptionsError("--map-teacher needs --teacher-dir (the teacher whose soft targets are used)")
        if self.teacher_only and not (self.train_teacher or self.distill_teacher):
            raise TaskOptionsError("--teacher-only needs --train-teacher or --distill-teacher")
        if self.mix not in ("real", "synth", "real+synth"):
            raise TaskOptionsError(f"--mix {self.mix!r}: use real, synth or real+synth")
        if self.mix != "real" and self.synth is None:
            raise TaskOptionsError(f"--mix {self.mix} needs --synth DIR (generate one with "
                                   "`edgekd train synth --out DIR`)")
        require_dir(self.data, "the recipe's corpora and noise/")


@dataclass
class KeywordData:
    """Training windows (real and/or synthetic), the decoded parts, and the noise cut in two."""

    train_x: np.ndarray
    train_y: np.ndarray
    windows: Any  # edgekd_train.prepare.Windows: "val", "test", "train_real", "train_synth"
    noise_train: np.ndarray
    noise_test: np.ndarray
    speakers: dict[str, int]
    info: dict[str, Any]


def load_noise(folder: Path, rate: int, train_s: float) -> tuple[np.ndarray, np.ndarray]:
    """The noise recordings cut in two: the first `train_s` s of each for training, the rest for testing."""
    from edgekd_train.data.audio import find_audio_files, load_audio

    train, test = [], []
    for f in find_audio_files(folder):
        x = load_audio(f, rate)
        cut = int(train_s * rate)
        if len(x) <= cut + rate:
            raise ValueError(f"noise file {f} is {len(x) / rate:.0f} s: shorter than --noise-train-s + 1 s")
        train.append(x[:cut])
        test.append(x[cut:])
    return np.concatenate(train).astype(np.float32), np.concatenate(test).astype(np.float32)


def long_clips(x: np.ndarray, noise: np.ndarray, seconds: float, rate: int, seed: int,
               snr_db: float = LONG_SNR_DB) -> tuple[np.ndarray, np.ndarray]:
    """Each 1-s window of `x` at a random time in `seconds` of noise; returns clips and onsets (s)."""
    rng = np.random.default_rng(seed)
    n, w = int(seconds * rate), x.shape[1]
    out = np.empty((len(x), n), np.float32)
    onsets = np.empty(len(x))
    for i, clip in enumerate(x):
        start = int(rng.integers(0, len(noise) - n))
        bg = noise[start : start + n].astype(np.float64)
        ref = max(float(np.sqrt(np.mean(clip.astype(np.float64) ** 2))), 1e-3)
        bg *= ref / max(float(np.sqrt(np.mean(bg**2))), 1e-9) * 10 ** (-snr_db / 20)
        at = int(rng.integers(0, n - w + 1))
        bg[at : at + w] += clip
        out[i] = np.clip(bg, -1, 1)
        onsets[i] = at / rate
    return out, onsets


def long_clip_figures(model_fn, x: np.ndarray, y: np.ndarray, noise: np.ndarray, rate: int, labels,
                      batch_size: int = 32) -> dict[str, dict[str, float]]:
    """The noisy long-clip protocol for `model_fn(audio) -> (logits, per-frame weights)`: accuracy per
    length, and the share of the model's weight over time that falls on the keyword's second (a model
    that cannot tell when gets 1 / length)."""
    import torch

    from edgekd_train.evaluate import evaluate
    from edgekd_train.temporal.interpolate import mass_between

    acc, share = {}, {}
    for sec in LONG_SECONDS:
        lx, onsets = long_clips(x, noise, sec, rate, seed=int(sec * 10))
        logits, shares = [], []
        with torch.no_grad():
            for i in range(0, len(lx), batch_size):
                lo, wts = model_fn(torch.from_numpy(lx[i : i + batch_size]))
                start = torch.from_numpy(onsets[i : i + batch_size] / sec)
                logits.append(lo.float().numpy())
                shares.append(mass_between(wts.float(), start, start + x.shape[1] / rate / sec))
        acc[f"{sec:g}s"] = evaluate(np.concatenate(logits), y, labels).accuracy
        share[f"{sec:g}s"] = float(torch.cat(shares).mean())
    return {"accuracy": acc, "weight_on_keyword": share}


def keyword_data(opts: KeywordOptions, recipe) -> KeywordData:
    """The recipe's split (written to OUT/split.json), decoded; the synthetic clips; the noise cut in two."""
    from edgekd_train.data.corpora import load_corpus
    from edgekd_train.prepare import decode, load_clips, protocol_split

    if recipe.data.noise is None:
        raise TaskOptionsError(f"recipe {recipe.path}: [data] noise must name the noise recordings (e.g. \"noise\")")
    labels, rate, window = recipe.task.labels, recipe.task.sample_rate, recipe.task.window_samples
    split, _ = protocol_split(load_clips(recipe.corpora, opts.data), recipe.split)
    split.write(opts.out / "split.json")
    parts = {"val": split.val, "test": split.test}
    if opts.mix != "synth":
        parts["train_real"] = split.train
    if opts.mix != "real":
        parts["train_synth"] = load_corpus("folder", opts.synth, group="file")
    w = decode(parts, labels, rate, window)
    train_x = np.concatenate([w.x[k] for k in ("train_real", "train_synth") if k in w.x])
    train_y = np.concatenate([w.y[k] for k in ("train_real", "train_synth") if k in w.y])
    noise_train, noise_test = load_noise(opts.data / recipe.data.noise, rate, opts.noise_train_s)
    speakers = {k: len({c.group for c in v}) for k, v in split.parts().items()}
    info = {"mix": opts.mix, "windows": {k: int(len(v)) for k, v in w.x.items()}, "skipped": w.skipped,
            "speakers": speakers, "synth": str(opts.synth) if opts.synth else None}
    extra_x, extra_y, added = stream_windows(opts, recipe, w)
    if added is not None:
        train_x, train_y = np.concatenate([train_x, extra_x]), np.concatenate([train_y, extra_y])
        info["stream_windows"] = added
    log.info("data: %s", info)
    return KeywordData(train_x, train_y, w, noise_train, noise_test, speakers, info)


def stream_windows(opts: KeywordOptions, recipe, w) -> tuple[np.ndarray, np.ndarray, dict[str, Any] | None]:
    """The recipe's [streams] windows (edgekd_train.streams.negatives), from training audio only:
    background from the training half of corpora the task never trained on, and partial windows of
    the real training keywords. (x, y, what was added), or empty arrays and None without the table."""
    spec, labels, rate, window = recipe.streams, recipe.task.labels, recipe.task.sample_rate, recipe.task.window_samples
    if not (spec.background or spec.partial):
        return np.zeros((0, window), np.float32), np.zeros(0, np.int64), None
    from edgekd.contract import WELL_KNOWN_BACKGROUND
    from edgekd_train.data.audio import load_audio
    from edgekd_train.streams.negatives import BackgroundPool, background_windows, partial_windows
    from edgekd_train.streams.sources import keyword_training_background

    xs, ys, info = [], [], {"seed": spec.seed, "background": 0, "partial": 0}
    if spec.background:
        from edgekd_train.streams.sources import KEYWORD_NOISE_TRAIN_S

        if opts.noise_train_s > KEYWORD_NOISE_TRAIN_S:
            raise TaskOptionsError(f"[streams] background with --noise-train-s {opts.noise_train_s:g}: the val and test "
                                   f"streams' noise starts at {KEYWORD_NOISE_TRAIN_S:g} s; use at most that")
        clips, noise = keyword_training_background(opts.data, str(recipe.path), opts.noise_train_s)
        pool = BackgroundPool(clips=clips, labels=dict(spec.labels), noise=noise, weights=dict(spec.weights))
        bx, bl = background_windows(pool, spec.background, window, seed=spec.seed, decode=lambda p: load_audio(p, rate))
        xs.append(bx)
        ys.append(np.array([labels.index(label) for label in bl], np.int64))
        info["background"] = len(bx)
        info["background_by_label"] = {label: bl.count(label) for label in sorted(set(bl))}
    if spec.partial:
        if "train_real" not in w.x:
            raise TaskOptionsError("[streams] partial windows are cut from the real training keywords: "
                                   "use --mix real or real+synth, or set partial = 0")
        targets = {labels.index(label) for label in labels if label not in WELL_KNOWN_BACKGROUND}
        events = [x for x, y in zip(w.x["train_real"], w.y["train_real"]) if int(y) in targets]
        px = partial_windows(events, window, rate, seed=spec.seed, per_event=spec.partial)
        xs.append(px)
        ys.append(np.full(len(px), labels.index(spec.partial_label), np.int64))
        info["partial"] = len(px)
    log.info("stream windows: %s", info)
    return np.concatenate(xs), np.concatenate(ys), info


def stream_soft_weights(recipe, d: KeywordData) -> np.ndarray | None:
    """Per training window, how much a teacher's soft targets count (`fit`'s soft_weights): with
    `[streams] soft_targets = false`, 1 on each clip and 0 on each [streams] window (they come last);
    else None (every window fully)."""
    added = d.info.get("stream_windows")
    if recipe.streams.soft_targets or not added:
        return None
    clips = len(d.train_x) - added["background"] - added["partial"]
    return (np.arange(len(d.train_x)) < clips).astype(np.float32)


def run(opts: KeywordOptions) -> dict[str, Any]:
    """Data, teacher (if any), student, figures, export; writes OUT/summary.json and returns it."""
    from edgekd_train.recipe import distill_settings, load_recipe, with_overrides

    recipe = with_overrides(load_recipe(opts.recipe), opts.assignments)
    labels, rate = recipe.task.labels, recipe.task.sample_rate
    student, fields, aug = distill_settings(recipe, student=opts.student, epochs=opts.epochs, seed=opts.seed,
                                            alpha=opts.alpha, T=opts.T)
    start_run(opts.out)
    import torch

    from edgekd_train.evaluate import evaluate, write_report
    from edgekd_train.student_run import export, fit, logits_of, shared_teacher_steps

    # ----------------------------------------------------------------- 1. data
    d = keyword_data(opts, recipe)
    w = d.windows

    # ----------------------------------------------------------------- 2. teacher, then the student
    teacher, teacher_info = None, None
    if opts.train_teacher or opts.teacher_dir or opts.distill_teacher:
        teacher, teacher_info = get_teacher(opts, recipe, d, fields, aug)
    if opts.teacher_only:
        summary = {"teacher": teacher_info, "data": d.info}
        (opts.out / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
        return summary
    need_teacher = teacher is not None and (fields.get("alpha", 1.0) < 1 or opts.lam > 0)

    if opts.no_augment:
        aug = None

    def teacher_fn(xb):
        from edgekd_train.temporal.rollout import teacher_outputs

        return teacher_outputs(teacher, xb)

    cached = None
    if need_teacher and aug is None:
        from edgekd_train.temporal.rollout import cache_teacher

        tl, tw = cache_teacher(teacher, torch.from_numpy(d.train_x), batch_size=64)
        cached = (tl.numpy(), tw.numpy())
    live = teacher_fn if need_teacher and cached is None else None
    if live is not None and opts.teacher_steps is not None:
        live = shared_teacher_steps(opts.teacher_steps, teacher, teacher_fn, d.train_x, fields, aug, d.noise_train, rate)
    soft_weights = stream_soft_weights(recipe, d)
    if soft_weights is not None:
        d.info["stream_windows"]["soft_targets"] = False
    res = fit(student, labels, (d.train_x, d.train_y), (w.x["val"], w.y["val"]), fields, aug, d.noise_train,
              sample_rate=rate, lam=opts.lam, teacher=cached, teacher_fn=live, time_limit_s=opts.minutes * 60,
              soft_weights=soft_weights)
    if hasattr(live, "hits"):
        log.info("teacher steps: %d served from %s, %d by the live teacher", live.hits, opts.teacher_steps, live.misses)
    torch.save(res.model.state_dict(), opts.out / f"{student}.pt")

    # ----------------------------------------------------------------- 3. figures
    evals = {"val": evaluate(logits_of(res.model, w.x["val"]), w.y["val"], labels),
             "test": evaluate(logits_of(res.model, w.x["test"]), w.y["test"], labels)}
    res.model.eval()
    longf = long_clip_figures(res.model.forward_with_attention, w.x["test"], w.y["test"], d.noise_test, rate, labels)
    long = longf["accuracy"]
    summary = {
        "student": student, "params": res.params, "macs_per_window": res.macs_per_window,
        "train_seconds": round(res.seconds, 1), "epochs_run": len(res.history["epoch"]),
        "best_epoch": res.history["best_epoch"], "stopped_by_time_limit": res.history["stopped_by_time_limit"],
        "data": d.info, "distill": fields, "augment": aug, "teacher": teacher_info if need_teacher else None,
        "lambda": opts.lam, "teacher_available": teacher_info,
        "figures": {k: e.summary() for k, e in evals.items()},
        "long_clip_accuracy": {"snr_db": LONG_SNR_DB, **long},
        "long_clip_weight_on_keyword": longf["weight_on_keyword"],
    }
    write_report(opts.out / "report", evals, f"{student} keyword ({opts.mix})", {"params": res.params})
    log.info("figures: val %.4f, test (unseen speakers) %.4f; long clips %s", evals["val"].accuracy,
             evals["test"].accuracy, long)

    # ----------------------------------------------------------------- 4. export
    summary["training_metadata"] = training_metadata(opts, recipe, d, res, evals, summary)
    if opts.export is not None:
        summary["export"] = export(res.model, recipe, f"{student}-keyword", summary["training_metadata"],
                                   w.x["test"][:16], opts.export)
    (opts.out / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
    return summary


def training_metadata(opts: KeywordOptions, recipe, d: KeywordData, res, evals, summary) -> dict[str, Any]:
    """The `edgekd.training` metadata of an exported keyword student."""
    streams = d.info.get("stream_windows")
    return ({"stream_windows": {**streams, "recipe": recipe.name}} if streams else {}) | {
        "data": f"Speech Commands v0.02 (CC BY 4.0, Warden 2018) real clips, speaker-disjoint split; "
                f"training mix {opts.mix}" + (" with the synthetic corpus of edgekd_train.data.synth" if opts.synth else ""),
        "split": {"by": "speaker", "seed": recipe.split.seed, "val": recipe.split.val, "test": recipe.split.test,
                  "speakers": d.speakers},
        "teacher": summary.get("teacher"), "student": summary["student"], "alpha": summary["distill"].get("alpha"),
        "T": summary["distill"].get("T"), "lambda": opts.lam, "params": res.params,
        "macs_per_window": res.macs_per_window,
        "figures": {"test_unseen_speakers": evals["test"].summary(), "val": evals["val"].summary(),
                    "long_clip_accuracy": summary["long_clip_accuracy"]},
    }


def get_teacher(a: KeywordOptions, recipe, d: KeywordData, fields: dict[str, Any],
                aug: dict[str, Any] | None) -> tuple[Any, dict[str, Any]]:
    """Load `--teacher-dir`, or train the recipe's scratch teacher (`--train-teacher` minutes with
    Trainer, or `--distill-teacher` from a stronger model on the students' batches); its figures."""
    from edgekd_train.evaluate import evaluate
    from edgekd_train.teacher import (
        ScratchTeacherConfig, TeacherTrainConfig, build_teacher, count_parameters, finetune_teacher, teacher_logits,
    )  # fmt: skip
    from edgekd_train.ensemble import describe_teacher, load_teacher_model
    from edgekd_train.temporal.rollout import use_eager_attention

    labels, w = recipe.task.labels, d.windows
    info: dict[str, Any] = {}
    if a.teacher_dir is not None:
        model = load_teacher_model(a.teacher_dir, labels, recipe.task.sample_rate)
        info.update(dir=str(a.teacher_dir), **describe_teacher(model))
        if a.map_teacher is not None:
            from edgekd_train.temporal.rollout import PairedTeacher

            maps = use_eager_attention(load_teacher_model(a.map_teacher, labels, recipe.task.sample_rate))
            model = PairedTeacher(model, maps.eval())
            info["maps_from"] = {"dir": str(a.map_teacher), **describe_teacher(maps)}
    elif a.distill_teacher is not None:
        model, info = distilled_teacher(a, recipe, d, fields, aug)
    else:
        scratch = ScratchTeacherConfig.from_mapping(recipe.teacher_scratch)
        tcfg = TeacherTrainConfig.from_mapping({**recipe.teacher_train, "max_minutes": a.train_teacher})
        result = finetune_teacher(build_teacher(scratch, labels), d.train_x, d.train_y, w.x["val"], w.y["val"], tcfg,
                                  a.out / "teacher")
        model = result.model
        info.update(dir=str(a.out / "teacher" / "best"), train_seconds=result.train_seconds,
                    stopped_by_time_budget=result.stopped_early, scratch=recipe.teacher_scratch)
    model = use_eager_attention(model).eval()
    info["parameters"] = count_parameters(model)
    info["test"] = evaluate(teacher_logits(model, w.x["test"], 64), w.y["test"], labels).summary()
    info["val"] = evaluate(teacher_logits(model, w.x["val"], 64), w.y["val"], labels).summary()
    if a.teacher_dir is None:  # a reused teacher was measured on long clips by the run that trained it
        from edgekd_train.temporal.rollout import teacher_outputs

        longf = long_clip_figures(lambda xb: teacher_outputs(model, xb), w.x["test"], w.y["test"], d.noise_test,
                                  recipe.task.sample_rate, labels, batch_size=16)  # fmt: skip
        info["long_clip_accuracy"] = longf["accuracy"]
        info["long_clip_weight_on_keyword"] = longf["weight_on_keyword"]
    log.info("teacher: %s", info)
    return model, info


def distilled_teacher(a: KeywordOptions, recipe, d: KeywordData, fields: dict[str, Any],
                      aug: dict[str, Any] | None) -> tuple[Any, dict[str, Any]]:
    """The recipe's scratch wav2vec2, trained on the labels and `--distill-teacher`'s soft targets.

    Its settings are the students' ([distill]) with the schedule of [teacher.train] (epochs, batch size,
    learning rate, weight decay, warm-up, gradient clipping), Hinton's T = 2 and alpha = 0.5, then
    `--teacher-set`."""
    from edgekd_train.ensemble import describe_teacher, load_teacher
    from edgekd_train.recipe import assign, teacher_distill_fields
    from edgekd_train.student_run import make_augment, run_config
    from edgekd_train.teacher import build_teacher, distill_teacher

    table = {**teacher_distill_fields(recipe, fields), "T": 2.0, "alpha": 0.5}
    cfg = run_config(assign(table, a.teacher_set, recipe.path, "teacher"))
    big = load_teacher(a.distill_teacher, recipe.task.labels, recipe.task.sample_rate).eval()
    model = build_teacher(recipe.teacher_scratch, recipe.task.labels)
    w = d.windows
    result = distill_teacher(model, big, d.train_x, d.train_y, w.x["val"], w.y["val"], cfg, a.out / "teacher",
                             make_augment(aug, d.noise_train, recipe.task.sample_rate, cfg.seed))
    hist = result.history[0]
    info = {"dir": str(a.out / "teacher" / "best"), "scratch": recipe.teacher_scratch,
            "distilled_from": {"dir": str(a.distill_teacher), **describe_teacher(big)},
            "distill": {k: v for k, v in hist["config"].items() if k not in ("ckpt_dir", "progress", "device")},
            "train_seconds": round(result.train_seconds, 1), "best_epoch": hist["best_epoch"],
            "val_acc_by_epoch": [round(v, 4) for v in hist["val_acc"]]}  # fmt: skip
    return result.model, info


def export_run(run_dir: Path, path: Path, recipe_name: str = "keyword") -> dict[str, Any]:
    """Export a finished run (its `STUDENT.pt` and `summary.json`) without training again; the parity
    check runs on 16 test clips of the run's own split."""
    import torch

    from edgekd_train.data.split import Split
    from edgekd_train.prepare import decode
    from edgekd_train.recipe import load_recipe
    from edgekd_train.student_run import build_any_student, export

    summary = json.loads((run_dir / "summary.json").read_text())
    recipe = load_recipe(recipe_name)
    student = summary["student"]
    model = build_any_student(student, len(recipe.task.labels), recipe.task.sample_rate)
    model.load_state_dict(torch.load(run_dir / f"{student}.pt", weights_only=True))
    test = Split.read(run_dir / "split.json").test[:16]
    w = decode({"check": test}, recipe.task.labels, recipe.task.sample_rate, recipe.task.window_samples)
    return export(model.eval(), recipe, f"{student}-keyword", summary["training_metadata"], w.x["check"], path)

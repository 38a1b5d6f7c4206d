"""Keyword spotting, top to bottom: real + synthetic clips, a speaker-disjoint split, one small
student trained on the CPU, figures on unseen real speakers, the noisy long-clip protocol, export.

    nice -n 10 python -m train.run_keyword --synth .devdata/keyword-synth/synth --out runs/keyword

1. data     ../shared/data/speech_commands split by speaker (the part of the file name before
            `_nohash_`): test and validation are whole speakers never heard in training;
            synthetic clips (`python -m train.data.synth`) join the training part only;
            `--mix real|synth|real+synth` says which training clips are used.
2. train    `train.student_run.fit`: augmentation with the noise recordings (the first
            `--noise-train-s` seconds of each), optional teacher and temporal loss.
3. figures  accuracy and per-class figures on the unseen real speakers (`test`), and the noisy
            long-clip protocol: each test clip at a random time in 2/4/6/8 s of noise cut
            from the *other* part of the noise recordings, at 10 dB SNR.
4. export   `--export PATH` writes the contract ONNX file (parity-checked against torch).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("train.run_keyword")

LONG_SECONDS = (2.0, 4.0, 6.0, 8.0)
LONG_SNR_DB = 10.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--data", type=Path, default=Path(os.environ.get("EDGEKD_DATA", "../shared/data")))
    p.add_argument("--synth", type=Path, help="a folder written by `python -m train.data.synth`")
    p.add_argument("--mix", choices=("real", "synth", "real+synth"), default="real+synth")
    p.add_argument("--student", default=None, help="default: the recipe's [distill] student")
    p.add_argument("--epochs", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--minutes", type=float, default=12.0, help="no new epoch starts after this")
    p.add_argument("--noise-train-s", type=float, default=40.0)
    p.add_argument("--export", type=Path, help="write the trained student here as ONNX")
    p.add_argument("--teacher-dir", type=Path,
                   help="a keyword wav2vec2 teacher (save_pretrained folder) or a student ensemble (train.ensemble)")
    p.add_argument("--train-teacher", type=float, metavar="MINUTES",
                   help="train the recipe's scratch wav2vec2 teacher for at most MINUTES first (saved to OUT/teacher)")
    p.add_argument("--distill-teacher", type=Path, metavar="DIR",
                   help="train the recipe's scratch wav2vec2 teacher on the labels and the soft targets of DIR (a "
                        "stronger teacher, e.g. a student ensemble), on the students' augmented batches, for "
                        "[teacher.train] epochs (saved to OUT/teacher/best; a killed run resumes)")
    p.add_argument("--teacher-set", action="append", default=[], metavar="KEY=VALUE",
                   help="with --distill-teacher: override a setting of the teacher's distillation (repeat), "
                        "e.g. --teacher-set epochs=60")
    p.add_argument("--map-teacher", type=Path, metavar="DIR",
                   help="with --teacher-dir: take the temporal maps (attention rollout) from this wav2vec2 instead, "
                        "and only the soft targets from --teacher-dir")
    p.add_argument("--teacher-only", action="store_true", help="stop after the teacher: measure it, train no student")
    p.add_argument("--teacher-steps", type=Path, metavar="FILE",
                   help="the teacher's outputs on this seed's augmented batches: read from FILE, or computed once "
                        "and saved there, so that every student and lambda of the seed shares them")
    p.add_argument("--alpha", type=float, help="Hinton's alpha (1: labels only); default: the recipe's")
    p.add_argument("--T", type=float)
    p.add_argument("--lam", type=float, default=0.0, help="weight of the temporal (attention) loss")
    p.add_argument("--no-augment", action="store_true",
                   help="no shift/gain/noise: the teacher's outputs are then computed once and cached (much faster)")
    p.add_argument("--recipe", default="keyword")
    p.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE",
                   help="override a [distill] key of the recipe (repeat), e.g. --set ema=0.995")
    a = p.parse_args(argv)
    if sum(x is not None and x is not False for x in (a.teacher_dir, a.train_teacher, a.distill_teacher)) > 1:
        p.error("give one of --teacher-dir, --train-teacher, --distill-teacher")
    if a.map_teacher is not None and a.teacher_dir is None:
        p.error("--map-teacher needs --teacher-dir (the teacher whose soft targets are used)")
    if a.teacher_only and not (a.train_teacher or a.distill_teacher):
        p.error("--teacher-only needs --train-teacher or --distill-teacher")
    if a.mix != "real" and a.synth is None:
        p.error(f"--mix {a.mix} needs --synth DIR (generate one with `python -m train.data.synth --out DIR`)")
    if not a.data.is_dir():
        p.error(f"no {a.data}: pass --data (the folder holding the recipe's corpora and noise/)")
    return a


def load_noise(folder: Path, rate: int, train_s: float) -> tuple[np.ndarray, np.ndarray]:
    """The noise recordings cut in two: the first `train_s` s of each for training, the rest for testing."""
    from train.data.audio import find_audio_files, load_audio

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

    from train.evaluate import evaluate
    from train.temporal.interpolate import mass_between

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


def main(argv: list[str] | None = None) -> dict[str, Any]:
    a = parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                        handlers=[logging.StreamHandler(), logging.FileHandler(a.out / "run.log")])
    import torch

    torch.set_num_threads(int(os.environ.get("EDGEKD_THREADS", "1")))
    from train.data.corpora import load_corpus
    from train.evaluate import evaluate, write_report
    from train.prepare import decode, load_clips, protocol_split
    from train.recipe import distill_settings, load_recipe, with_overrides
    from train.student_run import export, fit, logits_of, shared_teacher_steps

    recipe = with_overrides(load_recipe(a.recipe), a.assignments)
    labels, rate, window = recipe.task.labels, recipe.task.sample_rate, recipe.task.window_samples
    student, fields, aug = distill_settings(recipe, student=a.student, epochs=a.epochs, seed=a.seed, alpha=a.alpha,
                                            T=a.T)

    # ----------------------------------------------------------------- 1. data
    split, _ = protocol_split(load_clips(recipe.corpora, a.data), recipe.split)
    split.write(a.out / "split.json")
    parts = {"val": split.val, "test": split.test}
    if a.mix != "synth":
        parts["train_real"] = split.train
    if a.mix != "real":
        parts["train_synth"] = load_corpus("folder", a.synth, group="file")
    w = decode(parts, labels, rate, window)
    train_x = np.concatenate([w.x[k] for k in ("train_real", "train_synth") if k in w.x])
    train_y = np.concatenate([w.y[k] for k in ("train_real", "train_synth") if k in w.y])
    noise_train, noise_test = load_noise(a.data / recipe.data.noise, rate, a.noise_train_s)
    speakers = {k: len({c.group for c in v}) for k, v in {"train": split.train, "val": split.val, "test": split.test}.items()}
    data_info = {"mix": a.mix, "windows": {k: int(len(v)) for k, v in w.x.items()}, "skipped": w.skipped,
                 "speakers": speakers, "synth": str(a.synth) if a.synth else None}
    log.info("data: %s", data_info)

    # ----------------------------------------------------------------- 2. teacher, then the student
    teacher, teacher_info = None, None
    if a.train_teacher or a.teacher_dir or a.distill_teacher:
        teacher, teacher_info = get_teacher(a, recipe, train_x, train_y, w, noise_test, fields, aug, noise_train)
    if a.teacher_only:
        summary = {"teacher": teacher_info, "data": data_info}
        (a.out / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
        return summary
    need_teacher = teacher is not None and (fields.get("alpha", 1.0) < 1 or a.lam > 0)

    if a.no_augment:
        aug = None

    def teacher_fn(xb):
        from train.temporal.rollout import teacher_outputs

        return teacher_outputs(teacher, xb)

    cached = None
    if need_teacher and aug is None:
        import torch

        from train.temporal.rollout import cache_teacher

        tl, tw = cache_teacher(teacher, torch.from_numpy(train_x), batch_size=64)
        cached = (tl.numpy(), tw.numpy())
    live = teacher_fn if need_teacher and cached is None else None
    if live is not None and a.teacher_steps is not None:
        live = shared_teacher_steps(a.teacher_steps, teacher, teacher_fn, train_x, fields, aug, noise_train, rate)
    res = fit(student, labels, (train_x, train_y), (w.x["val"], w.y["val"]), fields, aug, noise_train,
              sample_rate=rate, lam=a.lam, teacher=cached, teacher_fn=live, time_limit_s=a.minutes * 60)
    if hasattr(live, "hits"):
        log.info("teacher steps: %d served from %s, %d by the live teacher", live.hits, a.teacher_steps, live.misses)
    torch.save(res.model.state_dict(), a.out / f"{student}.pt")

    # ----------------------------------------------------------------- 3. figures
    evals = {"val": evaluate(logits_of(res.model, w.x["val"]), w.y["val"], labels),
             "test": evaluate(logits_of(res.model, w.x["test"]), w.y["test"], labels)}
    res.model.eval()
    longf = long_clip_figures(res.model.forward_with_attention, w.x["test"], w.y["test"], noise_test, rate, labels)
    long = longf["accuracy"]
    summary = {
        "student": student, "params": res.params, "macs_per_window": res.macs_per_window,
        "train_seconds": round(res.seconds, 1), "epochs_run": len(res.history["epoch"]),
        "best_epoch": res.history["best_epoch"], "stopped_by_time_limit": res.history["stopped_by_time_limit"],
        "data": data_info, "distill": fields, "augment": aug, "teacher": teacher_info if need_teacher else None,
        "lambda": a.lam, "teacher_available": teacher_info,
        "figures": {k: e.summary() for k, e in evals.items()},
        "long_clip_accuracy": {"snr_db": LONG_SNR_DB, **long},
        "long_clip_weight_on_keyword": longf["weight_on_keyword"],
    }
    write_report(a.out / "report", evals, f"{student} keyword ({a.mix})", {"params": res.params})
    log.info("figures: val %.4f, test (unseen speakers) %.4f; long clips %s", evals["val"].accuracy,
             evals["test"].accuracy, long)

    # ----------------------------------------------------------------- 4. export
    summary["training_metadata"] = training_metadata(a, recipe, student, fields, res, speakers, evals, summary)
    if a.export is not None:
        summary["export"] = export(res.model, recipe, f"{student}-keyword", summary["training_metadata"],
                                   w.x["test"][:16], a.export)
    (a.out / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
    return summary


def training_metadata(a, recipe, student, fields, res, speakers, evals, summary) -> dict[str, Any]:
    return {
        "data": f"Speech Commands v0.02 (CC BY 4.0, Warden 2018) real clips, speaker-disjoint split; "
                f"training mix {a.mix}" + (" with the synthetic corpus of train.data.synth" if a.synth else ""),
        "split": {"by": "speaker", "seed": recipe.split.seed, "val": recipe.split.val, "test": recipe.split.test,
                  "speakers": speakers},
        "teacher": summary.get("teacher"), "student": student, "alpha": fields.get("alpha"), "T": fields.get("T"),
        "lambda": a.lam, "params": res.params, "macs_per_window": res.macs_per_window,
        "figures": {"test_unseen_speakers": evals["test"].summary(), "val": evals["val"].summary(),
                    "long_clip_accuracy": summary["long_clip_accuracy"]},
    }


def get_teacher(a, recipe, train_x, train_y, w, noise_test, fields, aug, noise_train) -> tuple[Any, dict[str, Any]]:
    """Load `--teacher-dir`, or train the recipe's scratch teacher (`--train-teacher` minutes with
    Trainer, or `--distill-teacher` from a stronger model on the students' batches); its figures."""
    from train.evaluate import evaluate
    from train.teacher import (
        ScratchTeacherConfig, TeacherTrainConfig, build_teacher, count_parameters, finetune_teacher, teacher_logits,
    )  # fmt: skip
    from train.ensemble import describe_teacher, load_teacher_model
    from train.temporal.rollout import use_eager_attention

    labels = recipe.task.labels
    info: dict[str, Any] = {}
    if a.teacher_dir is not None:
        model = load_teacher_model(a.teacher_dir, labels, recipe.task.sample_rate)
        info.update(dir=str(a.teacher_dir), **describe_teacher(model))
        if a.map_teacher is not None:
            from train.temporal.rollout import PairedTeacher

            maps = use_eager_attention(load_teacher_model(a.map_teacher, labels, recipe.task.sample_rate))
            model = PairedTeacher(model, maps.eval())
            info["maps_from"] = {"dir": str(a.map_teacher), **describe_teacher(maps)}
    elif a.distill_teacher is not None:
        model, info = distilled_teacher(a, recipe, train_x, train_y, w, fields, aug, noise_train)
    else:
        scratch = ScratchTeacherConfig.from_mapping(recipe.teacher_scratch)
        tcfg = TeacherTrainConfig.from_mapping({**recipe.teacher_train, "max_minutes": a.train_teacher})
        result = finetune_teacher(build_teacher(scratch, labels), train_x, train_y, w.x["val"], w.y["val"], tcfg,
                                  a.out / "teacher")
        model = result.model
        info.update(dir=str(a.out / "teacher" / "best"), train_seconds=result.train_seconds,
                    stopped_by_time_budget=result.stopped_early, scratch=recipe.teacher_scratch)
    model = use_eager_attention(model).eval()
    info["parameters"] = count_parameters(model)
    info["test"] = evaluate(teacher_logits(model, w.x["test"], 64), w.y["test"], labels).summary()
    info["val"] = evaluate(teacher_logits(model, w.x["val"], 64), w.y["val"], labels).summary()
    if a.teacher_dir is None:  # a reused teacher was measured on long clips by the run that trained it
        from train.temporal.rollout import teacher_outputs

        longf = long_clip_figures(lambda xb: teacher_outputs(model, xb), w.x["test"], w.y["test"], noise_test,
                                  recipe.task.sample_rate, labels, batch_size=16)  # fmt: skip
        info["long_clip_accuracy"] = longf["accuracy"]
        info["long_clip_weight_on_keyword"] = longf["weight_on_keyword"]
    log.info("teacher: %s", info)
    return model, info


def distilled_teacher(a, recipe, train_x, train_y, w, fields, aug, noise_train) -> tuple[Any, dict[str, Any]]:
    """The recipe's scratch wav2vec2, trained on the labels and `--distill-teacher`'s soft targets.

    Its settings are the students' ([distill]) with the schedule of [teacher.train] (epochs, batch size,
    learning rate, weight decay, warm-up, gradient clipping), Hinton's T = 2 and alpha = 0.5, then
    `--teacher-set`."""
    from train.ensemble import describe_teacher, load_teacher
    from train.recipe import assign, teacher_distill_fields
    from train.student_run import make_augment, run_config
    from train.teacher import build_teacher, distill_teacher

    table = {**teacher_distill_fields(recipe, fields), "T": 2.0, "alpha": 0.5}
    cfg = run_config(assign(table, a.teacher_set, recipe.path, "teacher"))
    big = load_teacher(a.distill_teacher, recipe.task.labels, recipe.task.sample_rate).eval()
    model = build_teacher(recipe.teacher_scratch, recipe.task.labels)
    result = distill_teacher(model, big, train_x, train_y, w.x["val"], w.y["val"], cfg, a.out / "teacher",
                             make_augment(aug, noise_train, recipe.task.sample_rate, cfg.seed))
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

    from train.data.split import Split
    from train.prepare import decode
    from train.recipe import load_recipe
    from train.student_run import build_any_student, export

    summary = json.loads((run_dir / "summary.json").read_text())
    recipe = load_recipe(recipe_name)
    student = summary["student"]
    model = build_any_student(student, len(recipe.task.labels), recipe.task.sample_rate)
    model.load_state_dict(torch.load(run_dir / f"{student}.pt", weights_only=True))
    test = Split.read(run_dir / "split.json").test[:16]
    w = decode({"check": test}, recipe.task.labels, recipe.task.sample_rate, recipe.task.window_samples)
    return export(model.eval(), recipe, f"{student}-keyword", summary["training_metadata"], w.x["check"], path)


if __name__ == "__main__":
    main()

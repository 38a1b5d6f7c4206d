"""`edgekd train ...`: run (a task, top to bottom), reduced, study, teacher, distill, evaluate, ablate,
export, quantize, card, stream-parts, background-offset, streams, and the tools around runs: synth, pack, ensemble,
students, ship (edgekd_train.cli_tools).

Each command reads a recipe (train/recipes/<name>.toml, or a path) and writes its results into
`--out`. torch and transformers are imported inside the commands, never at module import, so
`edgekd --help` works on a device without the train extra.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Annotated, Any, Optional, Sequence

import typer

from edgekd_train.cli_common import command_group, setup_logging, user_errors
from edgekd_train.cli_run import reduced_cmd, run_app, study_cmd
from edgekd_train.cli_tools import ensemble, pack, record, ship_app, students, synth, synth_speech
from edgekd_train.streams.cli import app as streams_app
from edgekd_train.tasks import DEFAULT_DATA

log = logging.getLogger(__name__)

app = command_group("train", "Train a teacher, distil students, evaluate, run the ablation, export and quantise ONNX models.")


RecipeOpt = Annotated[str, typer.Option("--recipe", "-r", help="Recipe name under train/recipes/ or a .toml path.")]
DataOpt = Annotated[Path, typer.Option("--data", help="Folder holding the corpora the recipe names ($EDGEKD_DATA).")]
PackedOpt = Annotated[
    Optional[Path], typer.Option("--packed", help="A packed copy (edgekd_train.data.pack) to read instead of --data.")
]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Folder for results (created).")]

app.add_typer(streams_app, name="streams")


def _recipe_first(name: str) -> None:
    """Read the recipe before the training stack is imported: a wrong name is one line, torch or not."""
    from edgekd_train.recipe import load_recipe

    load_recipe(name)


def _prepare(recipe_name: str, data: Path, packed: Path | None, out: Path, assignments: Sequence[str] = ()):
    """Recipe (with `--set` overrides), split (written to out/split.json) and decoded windows."""
    from edgekd_train.prepare import prepare
    from edgekd_train.recipe import load_recipe, with_overrides

    recipe = with_overrides(load_recipe(recipe_name), assignments)
    if packed is not None:
        recipe = recipe.reading_packed(packed)
        data = Path(".")
    split, tests, windows = prepare(recipe, data)
    out.mkdir(parents=True, exist_ok=True)
    split.write(out / "split.json")
    return recipe, split, windows


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, sort_keys=True, default=float) + "\n")


app.add_typer(run_app, name="run")
app.command("reduced")(reduced_cmd)
app.command("study")(study_cmd)


@app.command()
def teacher(
    recipe: RecipeOpt = "emotion",
    data: DataOpt = Path(DEFAULT_DATA),
    packed: PackedOpt = None,
    out: OutOpt = Path("runs/teacher"),
    source: Annotated[Optional[str], typer.Option(help="Hub name or save_pretrained folder (else the recipe's).")] = None,
    epochs: Annotated[Optional[float], typer.Option(help="Override the recipe's teacher epochs.")] = None,
    freeze_cnn: Annotated[Optional[bool], typer.Option("--freeze-cnn/--train-cnn", help="Freeze the CNN feature encoder.")] = None,
    max_minutes: Annotated[Optional[float], typer.Option(help="Stop training after this long, keeping the best.")] = None,
    export: Annotated[bool, typer.Option("--export/--no-export", help="Also write out/teacher.onnx.")] = True,
) -> None:
    """Fine-tune (or train from scratch) the wav2vec2 teacher; report val and test figures."""
    setup_logging()
    with user_errors():
        _recipe_first(recipe)
        from edgekd_train.evaluate import evaluate, write_report
        from edgekd_train.prepare import centre_crop
        from edgekd_train.teacher import TeacherTrainConfig, build_teacher, finetune_teacher, teacher_logits

        rec, split, w = _prepare(recipe, data, packed, out)
        src = source or rec.teacher_source
        model = build_teacher(rec.teacher_scratch if src == "scratch" else src, rec.task.labels)
        overrides = {k: v for k, v in {"epochs": epochs, "freeze_feature_encoder": freeze_cnn,
                                       "max_minutes": max_minutes}.items() if v is not None}
        cfg = TeacherTrainConfig.from_mapping({**rec.teacher_train, **overrides})
        result = finetune_teacher(model, centre_crop(w.x["train"], rec.task.window_samples), w.y["train"],
                                  w.x["val"], w.y["val"], cfg, out)
        evals = {name: evaluate(teacher_logits(result.model, w.x[name]), w.y[name], rec.task.labels)
                 for name in w.x if name != "train"}
        write_report(out / "report", evals, f"teacher ({src})",
                     {"best_val_accuracy": f"{result.best_val_accuracy:.4f}", "train_seconds": f"{result.train_seconds:.0f}"})
        if export:
            _export_teacher(result.model, rec, w.x["val"][:8], out / "teacher.onnx")
        typer.echo(json.dumps({n: round(e.accuracy, 4) for n, e in evals.items()}))


def _export_teacher(model, rec, check_windows, path: Path) -> None:
    from edgekd_train.export import export_onnx
    from edgekd_train.recipe import model_metadata
    from edgekd_train.teacher import AudioTeacher

    meta = model_metadata(rec, f"teacher-{rec.task.name}", training={"role": "teacher"})
    export_onnx(AudioTeacher(model).float().cpu().eval(), meta, path, check_windows)


@app.command("distill")
def distill_cmd(
    recipe: RecipeOpt = "emotion",
    data: DataOpt = Path(DEFAULT_DATA),
    packed: PackedOpt = None,
    out: OutOpt = Path("runs/student"),
    teacher: Annotated[Optional[Path], typer.Option(help="Teacher folder (out/best of `train teacher`).")] = None,
    student: Annotated[Optional[str], typer.Option(help="wav2small | wav2tiny | cnn (else the recipe's).")] = None,
    temperature: Annotated[Optional[float], typer.Option("--T", help="Distillation temperature.")] = None,
    alpha: Annotated[Optional[float], typer.Option(help="Weight of the label loss (1: no teacher).")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Override the recipe's epochs.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Override the recipe's seed.")] = None,
    augment: Annotated[bool, typer.Option("--augment/--no-augment", help="Use the recipe's [distill.augment].")] = True,
    noise: Annotated[Optional[Path], typer.Option(help="Folder of background-noise recordings for the augmentation.")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Override a [distill] key: KEY=VALUE (repeat), e.g. balance=group.")] = None,
) -> None:
    """Distil one student from the teacher (or train it on labels alone with --alpha 1)."""
    setup_logging()
    with user_errors():
        _recipe_first(recipe)
        import torch

        from edgekd_train.checkpoints import save_student
        from edgekd_train.distill.loop import DistillConfig, distill, evaluate_logits
        from edgekd_train.distill.tensor_augment import TensorAugment, TensorAugmentConfig
        from edgekd_train.evaluate import evaluate, write_report
        from edgekd_train.models.students import build_student
        from edgekd_train.prepare import noise_bank
        from edgekd_train.recipe import distill_settings
        from edgekd_train.teacher import AudioTeacher, build_teacher

        rec, split, w = _prepare(recipe, data, packed, out, set_ or ())
        name, fields, aug = distill_settings(rec, student=student, T=temperature, alpha=alpha, epochs=epochs, seed=seed)
        cfg = DistillConfig(**{**fields, "ckpt_dir": str(out / "ckpt")})
        teacher_fn = None
        if cfg.alpha < 1:
            if teacher is None:
                raise FileNotFoundError(f"alpha={cfg.alpha} < 1 needs --teacher (a folder from `edgekd train teacher`)")
            teacher_fn = AudioTeacher(build_teacher(teacher, rec.task.labels)).eval()
        bank = torch.from_numpy(noise_bank(noise, rec.task.sample_rate)) if noise is not None else None
        augmenter = TensorAugment(TensorAugmentConfig(**{**aug, "seed": cfg.seed}), bank) if augment and aug else None
        torch.manual_seed(cfg.seed)
        model = build_student(name, len(rec.task.labels), rec.task.sample_rate)
        history = distill(model, w.x["train"], w.y["train"], w.x["val"], w.y["val"], teacher_fn=teacher_fn, cfg=cfg,
                          augment=augmenter, groups=w.corpus.get("train"))
        save_student(out / "student.pt", model, name, T=cfg.T, alpha=cfg.alpha, seed=cfg.seed)
        model.cpu()
        evals = {n: evaluate(evaluate_logits(model, torch.from_numpy(w.x[n])).numpy(), w.y[n], rec.task.labels)
                 for n in w.x if n != "train"}
        _write_json(out / "history.json", history)
        write_report(out / "report", evals, f"{name} T={cfg.T:g} alpha={cfg.alpha:g}")
        typer.echo(json.dumps({n: round(e.accuracy, 4) for n, e in evals.items()}))


@app.command("evaluate")
def evaluate_cmd(
    model: Annotated[Path, typer.Option("--model", "-m", help="ONNX model file (edgekd contract).")],
    split: Annotated[Path, typer.Option(help="split.json written by teacher/distill/ablate.")],
    out: OutOpt = Path("runs/evaluate"),
    part: Annotated[str, typer.Option(help="Part of the split: train | val | test.")] = "test",
) -> None:
    """Score an ONNX model with the runtime (edgekd.model.Model) on the original files of a split."""
    setup_logging()
    with user_errors():
        from edgekd_train.evaluate import write_report
        from edgekd_train.onnx_eval import evaluate_onnx_on_split

        evals, info = evaluate_onnx_on_split(model, split, part)
        write_report(out, evals, f"{model.name} on {part}", info)
        typer.echo(json.dumps({n: round(e.accuracy, 4) for n, e in evals.items()}))


@app.command()
def ablate(
    recipe: RecipeOpt = "emotion",
    data: DataOpt = Path(DEFAULT_DATA),
    packed: PackedOpt = None,
    out: OutOpt = Path("runs/ablation"),
    teacher: Annotated[Optional[Path], typer.Option(help="Teacher folder (out/best of `train teacher`).")] = None,
    workers: Annotated[int, typer.Option(help="Worker processes sharing the device.")] = 1,
    epochs: Annotated[Optional[int], typer.Option(help="Override the recipe's epochs.")] = None,
    time_limit: Annotated[Optional[float], typer.Option(help="Seconds after which no new run starts.")] = None,
) -> None:
    """T x alpha x student x seed grid: table (mean, std), heatmap, and whether the teacher helps."""
    setup_logging()
    with user_errors():
        _recipe_first(recipe)
        from edgekd_train.ablate import AblationData, grid, run_grid, write_ablation
        from edgekd_train.recipe import distill_settings

        rec, split, w = _prepare(recipe, data, packed, out)
        tests = tuple(n.removeprefix("test_") for n in w.x if n.startswith("test_"))
        AblationData.save_windows(out / "work", w)
        _, settings, aug = distill_settings(rec, epochs=epochs)
        abl = rec.ablation
        if teacher is None and any(a < 1 for a in abl.alphas):
            raise FileNotFoundError("the grid has alpha < 1 cells: pass --teacher (a folder from `edgekd train teacher`)")
        adata = AblationData(str(out / "work"), rec.task.labels, rec.task.sample_rate, str(teacher) if teacher else None,
                             tests, settings, aug, None, time_limit_s=time_limit)
        jobs = grid(abl.students, abl.temperatures, abl.alphas, abl.seeds)
        results = run_grid(adata, jobs, out / "runs", workers)
        summary = write_ablation(out, results, list(abl.temperatures), ["val_acc", *tests])
        for s, e in summary["teacher_effect"].items():
            typer.echo(f"{s}: {e['verdict']}")


@app.command()
def export(
    checkpoint: Annotated[Path, typer.Option(help="student.pt from `train distill` (or an ablation run's .pt).")],
    split: Annotated[Path, typer.Option(help="split.json: check windows come from its train part.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="ONNX file to write.")],
    recipe: RecipeOpt = "emotion",
    student: Annotated[Optional[str], typer.Option(help="Student architecture, if the checkpoint does not say.")] = None,
    name: Annotated[Optional[str], typer.Option(help="Model name in the metadata (default: <student>-<task>).")] = None,
    version: Annotated[Optional[str], typer.Option(help="Model version (default: the recipe's).")] = None,
    training: Annotated[Optional[Path], typer.Option(help="JSON file for the edgekd.training metadata.")] = None,
    like: Annotated[
        Optional[Path],
        typer.Option(help="An earlier export of the same checkpoint: re-export it with that file's metadata "
                          "(name, version, training figures) and report how often the two files agree."),
    ] = None,
) -> None:
    """Write a student as one ONNX file with the contract's metadata, after an ORT-vs-torch check."""
    setup_logging()
    with user_errors():
        _recipe_first(recipe)
        from edgekd_train.export import ExportError, export_onnx
        from edgekd_train.onnx_eval import split_windows
        from edgekd_train.recipe import load_recipe, model_metadata
        from edgekd_train.checkpoints import load_student

        rec = load_recipe(recipe)
        if like is not None:
            if name or version or training:
                raise ExportError("--like takes name, version and training from that file: leave out --name, "
                                  "--version and --training")
            if like.resolve() == out.resolve():
                raise ExportError(f"--out {out} is the --like file: write elsewhere, compare, then replace it")
            meta = _metadata_like(like, rec)
        model, arch = load_student(checkpoint, student, len(rec.task.labels), rec.task.sample_rate)
        if like is None:
            info = json.loads(training.read_text()) if training else {}
            meta = model_metadata(rec, name or f"{arch}-{rec.task.name}", version, info)
        x, _ = split_windows(split, "train", rec.task.labels, rec.task.sample_rate, rec.task.window_samples, limit=16)
        report = export_onnx(model, meta, out, x, opset=rec.export.opset)
        result = report.to_dict()
        if like is not None:
            from edgekd.model import Model

            if "onnx_vs_torch_max_abs" in meta.training:  # the figure in the metadata is this export's
                result.update(_set_training(out, {"onnx_vs_torch_max_abs": report.max_abs_diff}))
            old, new = Model(like).logits(x), Model(out).logits(x)
            result["like"] = {"path": str(like), "max_abs_diff": float(abs(old - new).max()),
                              "argmax_agreement": float((old.argmax(-1) == new.argmax(-1)).mean())}
        typer.echo(json.dumps(result))


def _set_training(path: Path, values: dict[str, Any]) -> dict[str, Any]:
    """Update keys of the `edgekd.training` metadata in the ONNX file at `path` (the graph is untouched)."""
    import onnx

    from edgekd.contract import file_sha256
    from edgekd_train.export import set_training

    proto = onnx.load(str(path))
    set_training(proto, values)
    tmp = path.with_name(path.name + ".tmp")
    onnx.save(proto, str(tmp))
    os.replace(tmp, path)
    return {"bytes": path.stat().st_size, "sha256": file_sha256(path)}


def _metadata_like(path: Path, rec: Any):
    """The metadata of the model file at `path`, checked against the recipe the checkpoint was trained with."""
    from edgekd.model import Model

    meta = Model(path).meta
    mine = (rec.task.name, tuple(rec.task.labels), rec.task.sample_rate, rec.task.window_samples)
    theirs = (meta.task, tuple(meta.labels), meta.sample_rate, meta.window_samples)
    if mine != theirs:
        from edgekd_train.export import ExportError

        raise ExportError(f"--like {path} is a {theirs} model but the recipe {rec.path} trains {mine}: "
                         "pass the recipe the checkpoint was trained with")
    return meta


@app.command()
def quantize(
    model: Annotated[Path, typer.Option("--model", "-m", help="FP32 ONNX file.")],
    split: Annotated[Path, typer.Option(help="split.json: calibration windows come from its train part.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="INT8 ONNX file to write.")],
    calib: Annotated[int, typer.Option(help="Number of calibration windows.")] = 64,
) -> None:
    """INT8 quantisation with calibration windows from the training part; reports the change."""
    setup_logging()
    with user_errors():
        from edgekd.model import Model
        from edgekd_train.onnx_eval import split_windows
        from edgekd_train.quantize import quantize_int8

        meta = Model(model).meta
        x, _ = split_windows(split, "train", meta.labels, meta.sample_rate, meta.window_samples, limit=calib)
        result = quantize_int8(model, out, x)
        typer.echo(json.dumps(result if isinstance(result, dict) else getattr(result, "__dict__", str(result)), default=str))


@app.command()
def card(
    model: Annotated[Path, typer.Argument(help="ONNX model file (edgekd contract).")],
    record: Annotated[
        Optional[Path], typer.Option(help="Run record JSON (default: NAME.record.json beside the model, if there).")
    ] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write the card to this file instead of printing it.")] = None,
    cards: Annotated[Optional[Path], typer.Option(help="Folder of TASK.md.tmpl and TASK.toml (default: train/cards).")] = None,
) -> None:
    """Render a model card from the file's metadata and its run record (template: train/cards/TASK.md.tmpl)."""
    setup_logging()
    with user_errors():
        from edgekd_train.cards import CARDS_DIR, write_card

        text = write_card(model, out, record, cards or CARDS_DIR)
        if out is None:
            typer.echo(text, nl=False)


@app.command("stream-parts")
def stream_parts_cmd(
    model: Annotated[Path, typer.Argument(help="An exported ONNX model with a log-mel front end (not changed).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="ONNX file to write: the model plus its stream parts.")],
    clip: Annotated[
        Optional[list[Path]], typer.Option(help="Audio files whose windows join the check (repeatable).")
    ] = None,
    f_min: Annotated[Optional[float], typer.Option(help="Lowest mel edge in Hz, if the defaults do not match.")] = None,
    f_max: Annotated[Optional[float], typer.Option(help="Highest mel edge in Hz (default: half the rate).")] = None,
) -> None:
    """Add `edgekd.frontend` and `edgekd.body` to an exported model, cut from its own graph, without its
    checkpoint; written only if the runtime's split path reproduces the whole graph."""
    setup_logging()
    with user_errors():
        import numpy as np

        from edgekd.audio.decode import decode_file
        from edgekd.model import Model
        from edgekd_train.stream_parts import StreamPartsError, add_stream_parts

        meta = Model(model).meta
        windows = []
        for path in clip or []:
            x = decode_file(path, meta.sample_rate).samples
            w = meta.window_samples
            x = np.pad(x, (0, max(0, w - len(x))))
            windows += [x[i : i + w] for i in range(0, len(x) - w + 1, max(1, w // 2))]
        try:
            report = add_stream_parts(model, out, np.stack(windows) if windows else None, f_min=f_min, f_max=f_max)
        except StreamPartsError as exc:
            raise typer.BadParameter(f"{model}: {exc}; nothing written") from None
        typer.echo(json.dumps(report.__dict__))


@app.command("background-offset")
def background_offset_cmd(
    model: Annotated[Path, typer.Argument(help="A single-label detector (ONNX, with background labels; not changed).")],
    split: Annotated[Path, typer.Option(help="split.json: the offset is chosen on its val part, and only there.")],
    write: Annotated[Path, typer.Option("--write", help="Where to write the model with the offset in its graph.")],
) -> None:
    """Lower the background labels' logits by one constant, chosen for accuracy on validation clips
    (the prior that stream background teaches, undone for clips); choose the stream operating point
    again afterwards (`edgekd train streams choose`)."""
    setup_logging()
    with user_errors():
        from edgekd_train.background_offset import BackgroundOffsetError, write_offset

        try:
            choice = write_offset(model, write, split)
        except BackgroundOffsetError as exc:
            raise typer.BadParameter(f"{model}: {exc}; nothing written") from None
        typer.echo(f"{model.name}: background offset {choice.offset:g} -> validation clips "
                   f"{choice.accuracy_before:.4f} -> {choice.accuracy_after:.4f} (n {choice.clips}); written to {write}")


app.add_typer(ship_app, name="ship")
for _tool in (record, synth, synth_speech, pack, ensemble, students):
    app.command()(_tool)


if __name__ == "__main__":  # `python -m edgekd_train.cli run keyword ...` where the edgekd command is not installed
    app()

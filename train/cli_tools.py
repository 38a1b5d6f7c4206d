"""`edgekd train record | synth | synth-speech | pack | ensemble | students | ship emotion`: the tools around the runs.

- `record`: figures measured on a model file merged into its run record (edgekd_train.records).
- `synth`: the synthetic keyword corpus (edgekd_train.data.synth), for `run keyword --synth`.
- `synth-speech`: keyword-free synthetic sentences (edgekd_train.data.synth.generate_speech), background
  speech from many voices for stream-trained detectors.
- `pack`: a compact Opus copy of corpora (edgekd_train.data.pack), for a remote GPU machine.
- `ensemble`: several student checkpoints as one teacher folder (edgekd_train.ensemble).
- `students`: parameters and MACs of every student architecture.
- `ship emotion`: select, export, re-measure on the CPU and card the emotion students
  (edgekd_train.ship_emotion).

Each imports its module inside the command, so `edgekd --help` needs no torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from edgekd_train.cli_common import command_group, setup_logging, user_errors
ship_app = command_group("ship", "Select, export, re-measure and card a task's shipped models: emotion.")


def synth(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for LABEL/*.wav, manifest.csv and synth.json.")],
    per_label: Annotated[int, typer.Option(help="Clips per label.")] = 400,
    noise: Annotated[Optional[Path], typer.Option(help="Background-noise folder, e.g. ../shared/data/noise.")] = None,
    seed: Annotated[int, typer.Option(help="Seed: the same seed and engine versions write the same files.")] = 0,
    engines: Annotated[str, typer.Option(help="Speech engines to use where installed, comma-separated.")] = "espeak-ng,flite,festival",
) -> None:
    """The synthetic keyword corpus: every installed voice says the words, over noise, reproducibly."""
    setup_logging()
    with user_errors():
        from edgekd_train.data.synth import SynthConfig, generate

        cfg = SynthConfig(per_label=per_label, noise_dir=str(noise) if noise else None, seed=seed,
                          engines=tuple(engines.split(",")))
        clips = generate(cfg, out)
        typer.echo(f"{len(clips)} clips in {out}")


def synth_speech(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for _unknown_/*.wav, manifest.csv and synth.json.")],
    count: Annotated[int, typer.Option(help="Sentences to write.")] = 1500,
    seed: Annotated[int, typer.Option(help="Seed: the same seed and engine versions write the same files.")] = 0,
    engines: Annotated[str, typer.Option(help="Speech engines to use where installed, comma-separated.")] = "espeak-ng,flite,festival",
) -> None:
    """Keyword-free sentences from every installed voice: background speech for stream-trained detectors."""
    setup_logging()
    with user_errors():
        from edgekd_train.data.synth import SpeechConfig, generate_speech

        if count < 1:
            raise typer.BadParameter(f"--count {count}: write at least 1 sentence")
        clips = generate_speech(SpeechConfig(count=count, seed=seed, engines=tuple(engines.split(","))), out)
        typer.echo(f"{len(clips)} sentences in {out}")


def pack(
    corpus: Annotated[list[str], typer.Option(metavar="NAME=ROOT", help="A corpus to pack, e.g. tess=../shared/data/tess (repeat).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the Opus files and manifest.json.")],
    rate: Annotated[int, typer.Option(help="Sample rate of the packed clips.")] = 16000,
    compression_level: Annotated[float, typer.Option(help="Opus compression level (0.85: about 40 kbit/s).")] = 0.85,
    floor_db: Annotated[float, typer.Option(help="Trim frames this far below the loudest (80: keep all but digital silence).")] = 40.0,
    no_trim: Annotated[bool, typer.Option("--no-trim", help="Keep every clip whole, as the device will hear it.")] = False,
) -> None:
    """A compact Opus copy of corpora (with a manifest), for training on a machine that cannot take the originals."""
    setup_logging()
    with user_errors():
        import numpy as np

        from edgekd_train.data.corpora import load_corpus
        from edgekd_train.data.pack import pack_corpus, verify_packed

        clips = []
        for spec in corpus:
            name, _, root = spec.partition("=")
            if not root:
                raise typer.BadParameter(f"--corpus {spec!r}: write NAME=ROOT")
            clips += load_corpus(name, root)
        report = pack_corpus(clips, out, rate, compression_level, floor_db, trim=not no_trim)
        snrs = verify_packed(out, n=50)
        typer.echo(json.dumps({
            "out": str(report.out_dir), "clips": report.clips, "mib": round(report.mib, 2),
            "seconds_before": round(report.seconds_before), "seconds_after": round(report.seconds_after),
            "skipped": report.skipped, "labels": report.labels,
            "snr_db_50_clips": {"min": round(min(snrs), 1), "median": round(float(np.median(snrs)), 1)},
        }, indent=1))  # fmt: skip


def ensemble(
    checkpoints: Annotated[list[Path], typer.Argument(help="Student checkpoints (save_student files, or state dicts with --student).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Teacher folder to write (checkpoints + ensemble.json).")],
    student: Annotated[Optional[str], typer.Option(help="Architecture of checkpoints saved as bare state dicts, e.g. wav2small.")] = None,
) -> None:
    """A teacher made of trained students (the mean of their logits), usable wherever a teacher folder is."""
    setup_logging()
    with user_errors():
        from edgekd_train.ensemble import write_ensemble

        typer.echo(str(write_ensemble(out, checkpoints, student)))


def students(
    labels: Annotated[int, typer.Option(help="Output classes (7 for emotion, 12 for keywords).")] = 7,
    seconds: Annotated[float, typer.Option(help="Window length (3 s for emotion, 1 s for keywords).")] = 3.0,
    rate: Annotated[int, typer.Option(help="Sample rate in Hz.")] = 16000,
) -> None:
    """Parameters and multiply-accumulates of every student architecture, front end included."""
    from edgekd_train.models.macs import macs_per_second, macs_per_window
    from edgekd_train.models.students import count_params
    from edgekd_train.student_run import build_any_student, student_names

    samples = round(rate * seconds)
    typer.echo(f"{'student':<10} {'params':>8} {'MMAC/window':>12} {'MMAC/s':>8}  front end")
    for name in student_names():
        model = build_any_student(name, labels, rate)
        fe = model.frontend.cfg
        typer.echo(
            f"{name:<10} {count_params(model):>8,} {macs_per_window(model, samples) / 1e6:>12.1f} "
            f"{macs_per_second(model, rate, seconds) / 1e6:>8.1f}  "
            f"{fe.n_fft / rate * 1e3:.0f} ms / {fe.hop / rate * 1e3:.0f} ms, {fe.n_mels} mels"
        )


@ship_app.command("emotion")
def ship_emotion_cmd(
    results: Annotated[list[Path], typer.Option(
        help="Unpacked `edgekd train run emotion` results with the wav2vec2 teacher and the labels-only runs (repeat).")],
    teacher_summary: Annotated[Path, typer.Option(help="summary.json of the run that trained the wav2vec2.")],
    ensemble_results: Annotated[Optional[list[Path]], typer.Option(
        help="Unpacked results whose teacher was a student ensemble (repeat).")] = None,
    alt_teacher_summary: Annotated[Optional[Path], typer.Option(help="summary.json of a wav2vec2 trained and not used.")] = None,
    ensemble_summary: Annotated[Optional[Path], typer.Option(help="summary.json of a run that evaluated the ensemble teacher.")] = None,
    seeds: Annotated[Optional[list[int]], typer.Option("--seed", help="Seeds the tables keep (repeat; default: the recipe's).")] = None,
    work: Annotated[Path, typer.Option(help="Folder for the merged runs, tables and reports.")] = Path("runs/emotion-final"),
    models: Annotated[Path, typer.Option(help="Where the shipped files, records and cards go.")] = Path("models"),
    data: Annotated[Path, typer.Option(help="Folder with the original corpora ($EDGEKD_DATA).")] = Path("../shared/data"),
    manifest: Annotated[Path, typer.Option(help="The packed copy's manifest, to check the split clip by clip.")] = Path(
        ".devdata/emotion-whole/manifest.json"),
    recipe: Annotated[str, typer.Option("--recipe", "-r", help="Recipe name under train/recipes/ or a .toml path.")] = "emotion",
) -> None:
    """Merge the GPU runs, select on validation, export, re-measure on the CPU and write each model's record and card."""
    setup_logging()
    with user_errors():
        from edgekd_train.ship_emotion import ShipOptions, ship

        ship(ShipOptions(results=tuple(results), teacher_summary=teacher_summary,
                         ensemble_results=tuple(ensemble_results or ()), alt_teacher_summary=alt_teacher_summary,
                         ensemble_summary=ensemble_summary, seeds=tuple(seeds) if seeds else None, work=work,
                         models=models, data=data, manifest=manifest, recipe=recipe))


def record(
    model: Annotated[Path, typer.Argument(help="The ONNX model file the measurements are of.")],
    evaluate: Annotated[Optional[Path], typer.Option(help="Output folder of `edgekd train evaluate` on this file.")] = None,
    score: Annotated[Optional[Path], typer.Option(help="Output folder of `edgekd train run cough|covid --score` on this file.")] = None,
    streams: Annotated[Optional[Path], typer.Option(help="Output folder of `edgekd train streams score` with this file.")] = None,
    part: Annotated[str, typer.Option(help="The part the evaluation or the streams measured: test or val.")] = "test",
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="The record (default: NAME.record.json beside the model).")] = None,
) -> None:
    """Merge figures measured on a model file into its run record, which its card reads (`edgekd train card`)."""
    setup_logging()
    with user_errors():
        from edgekd.model import Model
        from edgekd_train.cards import record_path_for
        from edgekd_train.records import from_evaluation, from_score, from_streams, write_record

        m = Model(model)
        updates = []
        if evaluate is not None:
            updates.append(from_evaluation(evaluate / "report.json", part))
        if score is not None:
            updates.append(from_score(score / "summary.json", model.name.removesuffix(".onnx")))
        if streams is not None:
            updates.append(from_streams(streams / "streams.json", m.meta.name, part))
        if not updates:
            raise typer.BadParameter("give --evaluate, --score or --streams: the measurements to record")
        path = out or record_path_for(model)
        write_record(path, m.meta.name, m.sha256, *updates)
        typer.echo(f"{path}: {', '.join(sorted({k for u in updates for k in u}))} recorded")

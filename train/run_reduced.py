"""The reduced wav2vec2 student on emotion, on a workstation CPU: the shipped emotion teacher's CNN
and first `--layers` transformer layers, distilled (KL + L2 on CNN features, AdamW 2.5e-5 with a
two-epoch warm-up), measured on the emotion protocol's test parts, exported, and put beside the
CNN students' size, MACs and latency.

    nice -n 10 python -m train.run_reduced --teacher runs/gpu1/teacher16 --packed .devdata/emotion --out runs/reduced
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("train.run_reduced")


def latency_ms(path: Path, window: np.ndarray, repeats: int = 30) -> float:
    """Median single-window latency of an ONNX file, onnxruntime on one CPU thread."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    x = window[None].astype(np.float32)
    sess.run(None, {"audio": x})
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        sess.run(None, {"audio": x})
        times.append((time.perf_counter() - t) * 1000)
    return float(np.median(times))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--teacher", type=Path, required=True, help="the emotion teacher (save_pretrained folder)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--data", type=Path, default=Path(os.environ.get("EDGEKD_DATA", "../shared/data")))
    p.add_argument("--packed", type=Path, help="a packed copy of the emotion corpora (train.data.pack)")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--minutes", type=float, default=12.0)
    p.add_argument("--thin", type=int, default=1, help="keep every n-th clip of every part (smoke runs)")
    p.add_argument("--max-train", type=int, help="distil on this many training windows (seeded sample): a CPU "
                   "budget; validation and test stay whole")
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                        handlers=[logging.StreamHandler(), logging.FileHandler(a.out / "run.log")])
    import torch

    torch.set_num_threads(int(os.environ.get("EDGEKD_THREADS", "1")))
    from train.evaluate import evaluate
    from train.export import export_onnx
    from train.models.macs import macs_per_window
    from train.models.reduced_w2v2 import ReducedConfig, ReducedWav2Vec2, distill_reduced
    from train.prepare import centre_crop, prepare
    from train.recipe import CorpusSpec, load_recipe, model_metadata
    from train.student_run import logits_of
    from train.teacher import build_teacher

    recipe = load_recipe("emotion")
    if a.packed is not None:
        corpora = tuple(CorpusSpec("packed", str(a.packed.resolve()), {"corpus": c.name}) for c in recipe.corpora)
        recipe = type(recipe)(**{**recipe.__dict__, "corpora": corpora})
    split, tests, w = prepare(recipe, a.data, thin=a.thin)
    split.write(a.out / "split.json")
    labels = recipe.task.labels
    teacher = build_teacher(a.teacher, labels).eval()
    student = ReducedWav2Vec2.from_teacher(teacher, a.layers)
    parts = [k for k in w.x if k != "train"]

    def figures(model) -> dict[str, Any]:
        return {k: evaluate(logits_of(model, w.x[k], 16), w.y[k], labels).summary() for k in parts}

    before = figures(student)
    log.info("reduced (%d layers) before distillation: %s", a.layers, before)
    cfg = ReducedConfig(epochs=a.epochs, batch_size=16)
    tx, ty = centre_crop(w.x["train"], recipe.task.window_samples), w.y["train"]
    if a.max_train is not None and a.max_train < len(tx):
        keep = np.sort(np.random.default_rng(0).choice(len(tx), a.max_train, replace=False))
        tx, ty = tx[keep], ty[keep]
    hist = distill_reduced(student, teacher, torch.from_numpy(tx), torch.from_numpy(ty).long(),
                           torch.from_numpy(w.x["val"]), torch.from_numpy(w.y["val"]).long(), cfg,
                           time_limit_s=a.minutes * 60)  # fmt: skip
    after = figures(student)
    meta = model_metadata(recipe, f"w2v2-{a.layers}l-emotion", None,
                          {"student": f"reduced wav2vec2, {a.layers} layers", "teacher": str(a.teacher),
                           "distill": asdict(cfg), "figures": after})  # fmt: skip
    path = a.out / f"w2v2-{a.layers}l-emotion.onnx"
    report = export_onnx(student, meta, path, w.x["val"][:8])
    window = w.x["val"][0]
    summary = {
        "layers": a.layers, "params": sum(p.numel() for p in student.parameters()),
        "teacher_params": sum(p.numel() for p in teacher.parameters()),
        "macs_per_window": macs_per_window(student, len(window)), "teacher_macs_per_window":
        macs_per_window(ReducedWav2Vec2(teacher), len(window)), "before": before, "after": after,
        "history": hist, "export": report.to_dict(), "latency_ms_1thread": latency_ms(path, window),
        "bytes": path.stat().st_size, "split": split.summary(), "train_windows_used": int(len(tx)),
        "teacher_figures": figures(ReducedWav2Vec2(teacher)),
    }  # fmt: skip
    (a.out / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
    log.info("reduced: %s", {k: summary[k] for k in ("params", "macs_per_window", "after", "latency_ms_1thread")})
    return summary


if __name__ == "__main__":
    main()

"""Probe: does a cough detector trained with more stream background keep its recall at fewer false alarms?

    python benchmarks/cough_stream_training.py OUT N_BACKGROUND
    env: EDGEKD_DATA (corpora)

The cough task's own data (edgekd_train.tasks.cough.cough_data) plus N background windows from the training
half of corpora the cough task never trained on (Speech Commands words as `speech`) and the noise
recordings' training stretch (`other`), at random levels (edgekd_train.streams.negatives). Same student and
settings as the recipe; the model is exported to OUT/wav2tiny-cough.onnx with the figures of the
cough task, for `edgekd train streams choose` on validation streams.
"""
import json
import logging
import os
import sys
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(1)
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

from edgekd_train.data.audio import load_audio  # noqa: E402
from edgekd_train.data.corpora import load_corpus  # noqa: E402
from edgekd_train.prepare import noise_bank  # noqa: E402
from edgekd_train.recipe import distill_settings, load_recipe  # noqa: E402
from edgekd_train.streams.negatives import BackgroundPool, background_windows  # noqa: E402
from edgekd_train.streams.sources import COUGH_NOISE_PARTS, stable_part  # noqa: E402
from edgekd_train.student_run import export, fit, logits_of  # noqa: E402
from edgekd_train.tasks.cough import cough_data, cough_figures  # noqa: E402

data = Path(os.environ.get("EDGEKD_DATA", "../shared/data"))
out, n_bg = Path(sys.argv[1]), int(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
rec = load_recipe("cough")
labels, rate, window = list(rec.task.labels), rec.task.sample_rate, rec.task.window_samples
d = cough_data(data, rec)
train_x, train_y = d.x["train"], d.y["train"]
if n_bg:
    words = [c for c in load_corpus("speech_commands", data / "speech_commands") if stable_part(c.group) == "train"]
    lo, hi = COUGH_NOISE_PARTS["train"]
    noise = []
    for f in sorted((data / rec.data.noise).glob("*.flac")):
        x = load_audio(f, rate)
        noise.append(x[int(lo * len(x)) : int(hi * len(x))])
    pool = BackgroundPool(clips={"speech": words}, labels={"speech": "speech", "noise": "other"}, noise=noise,
                          weights={"speech": 0.7, "noise": 0.3})
    bx, bl = background_windows(pool, n_bg, window, seed=0, decode=lambda p: load_audio(p, rate))
    train_x = np.concatenate([train_x, bx])
    train_y = np.concatenate([train_y, np.array([labels.index(label) for label in bl])])
student, fields, aug = distill_settings(rec)
res = fit(student, labels, (train_x, train_y), (d.x["val"], d.y["val"]), fields, aug,
          noise_bank(data / rec.data.noise, rate, seconds_per_file=40.0), sample_rate=rate)
figs = cough_figures(lambda x: logits_of(res.model, x), d, rec)
evals = figs.pop("evals")
summary = {k: e.summary() for k, e in evals.items()}
print(json.dumps(summary, default=float), flush=True)
training = {"data": "coughs: covid19-cough (CC0); speech: RAVDESS (CC BY-NC-SA 4.0), TESS (CC BY-NC-ND 4.0), "
                    "Speech Commands words (CC BY 4.0, training half of the speakers); other: Speech Commands "
                    "background noise (CC BY 4.0); non-commercial use",
            "split": f"coughs by recording, RAVDESS by actor, TESS by word, noise by time range; seed {rec.split.seed}",
            "background_windows": n_bg, "teacher": None, "student": student, "alpha": fields.get("alpha", 1.0),
            "params": res.params, "figures": {"val": evals["val"].summary(), "test": evals["test"].summary(),
                                              "test_by_source": figs["test_by_source"]}}
export(res.model, rec, f"{student}-cough", training, d.x["test"][::40][:16], out / f"{student}-cough.onnx")

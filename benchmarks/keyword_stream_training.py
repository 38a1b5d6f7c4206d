"""Probe: does training a keyword student with stream background help recall at 5 false alarms an hour?

    python benchmarks/keyword_stream_training.py OUT N_BACKGROUND [wav2tiny|wav2small]
    env: EDGEKD_DATA (corpora), SYNTH (a folder of `edgekd train synth`), EPOCHS (40), SEED (0),
         MINE=MODEL.onnx (add windows where MODEL raised false alarms on training streams built with
         `edgekd train streams build keyword --part train --out $TRAIN_STREAMS`), TEACHER=MODEL.onnx
         with ALPHA (Hinton soft targets from an ONNX teacher on every augmented batch; an ensemble
         teacher is TEACHER=a.onnx,b.onnx: each file runs on the batch and their logits are averaged
         before the temperature, and the exported metadata records the files and the averaging), TEACHER_ON
         (`all`, the default: soft targets on every window; `clips`: on the real and synthetic keyword
         clips only, the background, partial and mined windows learning from their labels alone),
         FINETUNE=MODEL.onnx (start from that exported student's weights, edgekd_train.onnx_init) with LR,
         SPEECH_SYNTH=DIR (sentences of `edgekd train synth-speech` as a further kind of background, drawn
         SPEECH_SYNTH_SHARE of the time, 0.2; the other kinds keep their proportions), SPEED=LO,HI (speed
         perturbation of the background speech, e.g. 0.85,1.15: each drawn clip at a random speed, as
         another speaker; edgekd_train.streams.negatives.speed_perturb)

The figures of docs/streams.md come from this script, then `edgekd train streams choose` on the
validation streams. It is a probe, not the training path: the recipe train/recipes/keyword-streams.toml
(its [streams] table) gives `edgekd train run keyword` the same windows; this script keeps what the
recipe does not (windows mined from false alarms, an ONNX teacher, fine-tuning an exported file).
"""
import json, logging, os, sys, time
from pathlib import Path
import numpy as np
import torch
torch.set_num_threads(1)
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
from edgekd_train.data.corpora import load_corpus
from edgekd_train.data.split import group_split
from edgekd_train.data.audio import load_audio
from edgekd_train.prepare import decode
from edgekd_train.recipe import load_recipe, distill_settings
from edgekd_train.student_run import fit, export
from edgekd_train.streams.sources import stable_part, KEYWORD_NOISE_TRAIN_S
from edgekd_train.streams.negatives import BackgroundPool, background_windows, partial_windows
from edgekd.contract import WELL_KNOWN_BACKGROUND

data = Path(os.environ.get("EDGEKD_DATA", "../shared/data")); out = Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
n_bg = int(sys.argv[2]); student_name = sys.argv[3] if len(sys.argv) > 3 else "wav2tiny"
epochs = int(os.environ.get("EPOCHS", "40"))
seed = int(os.environ.get("SEED", "0"))
rec = load_recipe("keyword")
labels = list(rec.task.labels); rate = rec.task.sample_rate; window = rec.task.window_samples
targets = [l for l in labels if l not in WELL_KNOWN_BACKGROUND]
real = load_corpus("speech_commands", data / "speech_commands", keywords=targets)
split = group_split(real, val=rec.split.val, test=rec.split.test, seed=rec.split.seed)
parts = {"val": split.val, "train_real": split.train,
         "train_synth": load_corpus("folder", os.environ.get("SYNTH", ".devdata/keyword-synth"), group="file")}
w = decode(parts, labels, rate, window)
train_x = np.concatenate([w.x["train_real"], w.x["train_synth"]]); train_y = np.concatenate([w.y["train_real"], w.y["train_synth"]])
n_clips = len(train_x)  # the keyword clips come first; every window after them is a stream window
noise_train = np.concatenate([load_audio(f, rate)[: int(KEYWORD_NOISE_TRAIN_S * rate)] for f in sorted((data / "noise").glob("*.flac"))])
if n_bg > 0:
    tess = [c for c in load_corpus("tess", data / "tess") if stable_part(c.group) == "train" and c.meta.get("word") not in targets]
    rav = [c for c in load_corpus("ravdess", data / "ravdess", calm="neutral") if stable_part(c.group) == "train"]
    coughs = [c for c in load_corpus("covid19_cough", data / "covid19-cough") if stable_part(c.group) == "train"]
    kinds = {"speech": tess + rav, "distractor": coughs}
    weights = {"speech": 0.65, "distractor": 0.15, "noise": 0.2}
    if os.environ.get("SPEECH_SYNTH"):  # keyword-free sentences of `edgekd train synth-speech`: more voices
        kinds["synthetic"] = load_corpus("folder", os.environ["SPEECH_SYNTH"], group="file")
        share = float(os.environ.get("SPEECH_SYNTH_SHARE", "0.2"))
        weights = {k: v * (1 - share) for k, v in weights.items()} | {"synthetic": share}
        print("synthetic speech", len(kinds["synthetic"]), "sentences, share", share, flush=True)
    pool = BackgroundPool(clips=kinds,
                          labels={"speech": "_unknown_", "distractor": "_unknown_", "synthetic": "_unknown_", "noise": "_silence_"},
                          noise=[load_audio(f, rate)[: int(KEYWORD_NOISE_TRAIN_S * rate)] for f in sorted((data / "noise").glob("*.flac"))],
                          weights=weights,
                          speed=tuple(float(v) for v in os.environ["SPEED"].split(",")) if os.environ.get("SPEED") else None)
    if pool.speed:
        print("speech background played at speeds", pool.speed, flush=True)
    bx, bl = background_windows(pool, n_bg, window, seed=0, decode=lambda p: load_audio(p, rate))
    kw_idx = [i for i, y in enumerate(w.y["train_real"]) if labels[y] in targets]
    px = partial_windows([w.x["train_real"][i] for i in kw_idx], window, rate, seed=0)
    extra_x = np.concatenate([bx, px]); extra_y = np.array([labels.index(l) for l in bl] + [labels.index("_unknown_")] * len(px))
    train_x = np.concatenate([train_x, extra_x]); train_y = np.concatenate([train_y, extra_y])
    print("extra windows", len(bx), len(px), flush=True)
mine = os.environ.get("MINE")
if mine:
    from edgekd.model import Model
    from edgekd_train.streams.score import StreamSet, window_scores, replay, match
    from edgekd_train.streams.negatives import mined_windows
    m = Model(mine); streams = StreamSet.read(Path(os.environ.get("TRAIN_STREAMS", "runs/streams/keyword-train")))
    mx = []
    for name, audio, r, events in streams.items:
        times, scores = window_scores(m, audio, r)
        found = replay(m, times, scores, {"defaults": {"threshold": 0.5, "smoothing": 1, "refractory": 0.5, "mode": "events"}})
        # false alarms: detections that belong to no event (same rule as the scorer)
        fa_times = []
        for d in found:
            one = match(events, [d], m.meta.window_seconds, len(audio) / r, background=m.meta.background)
            if one.false_alarms:
                fa_times.append(d.t)
        mx.append(mined_windows(audio, r, fa_times, window))
    mx = np.concatenate(mx)
    print("mined windows", len(mx), flush=True)
    train_x = np.concatenate([train_x, mx]); train_y = np.concatenate([train_y, np.full(len(mx), labels.index("_unknown_"))])
teacher_path = os.environ.get("TEACHER")
alpha = float(os.environ.get("ALPHA", "1.0"))
lr = float(os.environ["LR"]) if os.environ.get("LR") else None
student, fields, aug = distill_settings(rec, student=student_name, epochs=epochs, seed=seed, alpha=alpha, T=2.0, lr=lr)
init = None
if os.environ.get("FINETUNE"):
    from edgekd_train.onnx_init import student_from_onnx
    from edgekd_train.student_run import build_any_student
    calib = train_x[np.random.default_rng(0).permutation(len(train_x))[:1024]]
    init = student_from_onnx(build_any_student(student, len(labels), rate), os.environ["FINETUNE"], calib).state_dict()
teacher_on = os.environ.get("TEACHER_ON", "all")
if teacher_on not in ("all", "clips"):
    sys.exit(f"TEACHER_ON={teacher_on!r}: use 'all' or 'clips'")
soft_weights = None
if teacher_on == "clips":
    soft_weights = (np.arange(len(train_x)) < n_clips).astype(np.float32)
    print("soft targets on", n_clips, "clips of", len(train_x), "windows", flush=True)
def onnx_teacher(paths, labels):
    """The teacher's logits for a batch: one ONNX file (onnxruntime, 1 thread) as before, or, with several
    files, the mean of their logits (each file must have the recipe's labels in the same order)."""
    import onnxruntime as ort
    sessions = []
    for p in paths:
        so = ort.SessionOptions(); so.intra_op_num_threads = 1
        sess = ort.InferenceSession(p, so)
        if len(paths) > 1:
            own = json.loads(sess.get_modelmeta().custom_metadata_map.get("edgekd.labels", "null"))
            if own != list(labels):
                sys.exit(f"TEACHER {p}: labels {own} differ from the recipe's {list(labels)}; cannot average")
        sessions.append((sess, sess.get_inputs()[0].name))
    if len(sessions) == 1:
        sess, name = sessions[0]
        def teacher_fn(xb):
            return torch.from_numpy(sess.run(None, {name: xb.detach().cpu().numpy().astype(np.float32)})[0])
        return teacher_fn
    def teacher_fn(xb):
        x = xb.detach().cpu().numpy().astype(np.float32)
        logits = np.stack([sess.run(None, {name: x})[0] for sess, name in sessions])
        return torch.from_numpy(logits.mean(axis=0, dtype=np.float32))
    return teacher_fn
teacher_fn = None
teacher_files = [p for p in teacher_path.split(",") if p] if teacher_path else []
if teacher_files:
    teacher_fn = onnx_teacher(teacher_files, labels)
    print("teacher", teacher_files, "(mean of logits)" if len(teacher_files) > 1 else "", flush=True)
t = time.time()
res = fit(student, labels, (train_x, train_y), (w.x["val"], w.y["val"]), fields, aug, noise_train, sample_rate=rate,
          teacher_fn=teacher_fn, init=init, soft_weights=soft_weights)
print("trained in", time.time() - t, flush=True)
(out / "history.json").write_text(json.dumps({**res.history, "seconds_total": res.seconds}, default=str))
torch.save(res.model.state_dict(), out / "model.pt")
info = export(res.model, rec, f"{student}-keyword", {"prototype": f"stream background {n_bg}", "seed": seed, "teacher": teacher_path, **({"teacher_files": teacher_files, "teacher_combine": "mean of the files' logits"} if len(teacher_files) > 1 else {}), "alpha": alpha, "teacher_on": teacher_on, "finetune": os.environ.get("FINETUNE"), "lr": lr, "speech_synth": os.environ.get("SPEECH_SYNTH"), "speed": os.environ.get("SPEED"), "speech_synth_share": os.environ.get("SPEECH_SYNTH_SHARE", "0.2") if os.environ.get("SPEECH_SYNTH") else None}, w.x["val"][:16], out / f"{student}-keyword.onnx")
print(json.dumps(info, default=str)[:500])

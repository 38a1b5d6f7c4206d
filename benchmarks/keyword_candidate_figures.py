"""Test figures of a keyword candidate, measured once after it was chosen on validation: unseen-speaker
clips through the ONNX file, and the noisy long clips (2 / 4 / 6 / 8 s at 10 dB SNR) through its torch
weights less the background offset the file carries in its graph.

    python benchmarks/keyword_candidate_figures.py RUN_DIR MODEL.onnx OFFSET [wav2tiny|wav2small]

RUN_DIR holds model.pt of `benchmarks/keyword_stream_training.py`; the split is the keyword recipe's
(SPLIT, default runs/split-keyword.json); prints one JSON line.
"""
import json, os, sys
from pathlib import Path
import numpy as np, torch
torch.set_num_threads(1)
from edgekd.model import Model
from edgekd_train.onnx_eval import split_windows
from edgekd_train.evaluate import evaluate
from edgekd_train.tasks.keyword import load_noise, long_clip_figures
from edgekd_train.student_run import build_any_student
run = Path(sys.argv[1]); onnx_path = Path(sys.argv[2]); offset = float(sys.argv[3])
m = Model(onnx_path); meta = m.meta; labels = list(meta.labels)
x, y = split_windows(os.environ.get("SPLIT", "runs/split-keyword.json"), "test", labels, 16000, 16000)
z = np.concatenate([m.logits(x[i:i+64]) for i in range(0, len(x), 64)])
ev = evaluate(z, y, labels)
student = build_any_student(sys.argv[4] if len(sys.argv) > 4 else "wav2tiny", len(labels), 16000)
student.load_state_dict(torch.load(run / "model.pt")); student.eval()
bg = [labels.index(b) for b in meta.background]
vec = torch.zeros(len(labels)); vec[bg] = offset
def fn(xb):
    lo, w = student.forward_with_attention(xb)
    return lo - vec, w
_, noise_test = load_noise(Path(os.environ.get("EDGEKD_DATA", "../shared/data")) / "noise", 16000, 40.0)
longf = long_clip_figures(fn, x, y, noise_test, 16000, labels)
print(json.dumps({"test_accuracy": ev.accuracy, "test_n": len(y), "correct": int((z.argmax(1) == y).sum()),
                  "long": longf["accuracy"]}))

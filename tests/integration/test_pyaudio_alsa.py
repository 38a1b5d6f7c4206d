"""The microphone path for real: PyAudio -> PortAudio -> ALSA, with ALSA's `file` plugin serving
a real speech clip as capture data (see shared/docs/recipes.md). No sound card needed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import edgekd
from edgekd.audio.decode import decode_file
from edgekd.model import Model
from edgekd.pipeline import ModelRunner, Pipeline, RunnerSpec
from edgekd.postprocess import PostConfig
from edgekd.sink import MemorySink

pytestmark = pytest.mark.integration
pytest.importorskip("pyaudio", reason="needs the mic extra: pip install 'edgekd[mic]'")

CLIP = Path(edgekd.__file__).parent / "assets" / "YAF_bar_angry.flac"  # real speech, 16 kHz, 16-bit


@pytest.fixture
def alsa_home(tmp_path):
    """A HOME whose .asoundrc makes the default capture device read CLIP's samples."""
    samples = decode_file(CLIP).samples
    raw = tmp_path / "in.raw"
    raw.write_bytes(np.round(samples * 32768).astype("<i2").tobytes())
    (tmp_path / ".asoundrc").write_text(
        'pcm.!default { type asym  playback.pcm "null"  capture.pcm "filecap" }\n'
        f'pcm.filecap  {{ type file  slave.pcm "null"  file "/dev/null"  infile "{raw}"  format "raw" }}\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEKD_")}
    env.update(HOME=str(tmp_path), PYTHONUNBUFFERED="1")
    return tmp_path, env


def test_devices_lists_the_alsa_capture_device(alsa_home):
    _, env = alsa_home
    proc = subprocess.run([sys.executable, "-m", "edgekd", "devices", "--json"], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    names = [d["name"] for d in json.loads(proc.stdout)]
    assert "filecap" in names and "default" in names


def expected_results(model_path):
    """What the same samples give when served from the file: the reference."""
    model = Model(model_path)
    audio = decode_file(CLIP)
    sink = MemorySink()
    runner = ModelRunner(model, RunnerSpec(4000, PostConfig(), gate_db=None))
    Pipeline([runner], audio.rate, sink, "ref").feed(audio.samples)
    return [(r.label, r.scores) for r in sink.results]


@pytest.mark.parametrize("source", ["mic", "mic:filecap"])
def test_serve_from_the_microphone_classifies_the_clip(alsa_home, energy_onnx, source):
    home, env = alsa_home
    # ALSA's null device is not paced: capture runs far faster than real time, so give the
    # ring buffer room for the whole burst and compare only the windows made of the clip.
    cfg = home / "edgekd.toml"
    cfg.write_text("[audio]\nbuffer_seconds = 600\n")
    want = expected_results(energy_onnx)
    assert len(want) == 5
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgekd", "serve", "--config", str(cfg), "--model", str(energy_onnx),
         "--source", source, "--gate-db", "off", "--stdout"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    got = []
    try:
        deadline = time.monotonic() + 30
        while len(got) < len(want) and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            got.append(json.loads(line))
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert len(got) >= len(want), err[-2000:]
    assert proc.returncode == 0, err[-2000:]
    for (label, scores), r in zip(want, got):
        assert r["label"] == label
        assert r["scores"] == pytest.approx(scores, abs=1e-5)

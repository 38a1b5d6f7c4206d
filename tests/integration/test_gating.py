"""The shipped cough detector gates the shipped COVID model in a real `edgekd serve` process:
real ONNX files, real audio (two CC0 coughs of the covid19-cough set that no model trained on,
a TESS sentence), results read from the daemon's --stdout JSON lines."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import edgekd
from edgekd.payloads import ResultPayload

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
COUGH_MODEL = ROOT / "models" / "wav2tiny-cough.onnx"
COVID_MODEL = ROOT / "models" / "wav2small-covid.onnx"
COUGHS = sorted((ROOT / "tests" / "fixtures" / "cough").glob("*.flac"))
SPEECH = Path(edgekd.__file__).parent / "assets" / "YAF_bar_angry.flac"
RATE = 16000


def _write(path: Path, parts: list[np.ndarray]) -> Path:
    import soundfile as sf

    sf.write(str(path), np.concatenate(parts).astype(np.float32), RATE, subtype="PCM_16")
    return path


def _load(path: Path) -> np.ndarray:
    from edgekd.audio.decode import decode_file

    clip = decode_file(path)
    assert clip.rate == RATE, f"{path} must be 16 kHz"
    return clip.samples.astype(np.float32)


def _serve(source: Path, *extra: str) -> list[ResultPayload]:
    cmd = [sys.executable, "-m", "edgekd", "serve", "--model", str(COUGH_MODEL), "--model", str(COVID_MODEL),
           "--source", str(source), "--stdout", "--mode", "all", "--smoothing", "1", "--gate-db", "off", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return [ResultPayload.model_validate_json(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def _end_s(r: ResultPayload, t0) -> float:
    return (r.window_end - t0).total_seconds()


@pytest.fixture(scope="module")
def audio(tmp_path_factory) -> dict[str, Path]:
    if not (COUGH_MODEL.is_file() and COVID_MODEL.is_file()) or len(COUGHS) < 2:
        pytest.fail("models/wav2tiny-cough.onnx, models/wav2small-covid.onnx and tests/fixtures/cough/*.flac "
                    "are part of the repository; restore them (git checkout)")
    d = tmp_path_factory.mktemp("gating")
    quiet = np.random.default_rng(0).standard_normal(RATE).astype(np.float32) * 1e-3
    speech = _load(SPEECH)
    coughs = [_load(p) for p in COUGHS]
    return {
        "mixed": _write(d / "mixed.wav", [speech, quiet, coughs[0], quiet, coughs[1], quiet, speech]),
        "speech": _write(d / "speech.wav", [speech, quiet, speech, quiet]),
    }


def _check_gated(results: list[ResultPayload]) -> tuple[list[ResultPayload], list[ResultPayload]]:
    cough = [r for r in results if r.task == "cough"]
    covid = [r for r in results if r.task == "covid"]
    assert cough, "the cough model published nothing"
    t0 = min(r.window_start for r in results)
    cough_at = [_end_s(r, t0) for r in cough if r.label == "cough"]
    hold = 2.0  # the covid model's window (2 s) is longer than two cough hops (0.5 s)
    for r in covid:
        t = _end_s(r, t0)
        # the covid window ran only while the cough model's latest window said cough
        assert any(t - hold - 0.1 <= c <= t + 0.1 for c in cough_at), (t, cough_at)
    return cough, covid


@pytest.mark.slow
def test_covid_runs_only_on_windows_the_cough_model_calls_cough(audio):
    cough, covid = _check_gated(_serve(audio["mixed"], "--gate", "covid=cough:cough"))
    assert any(r.label == "cough" for r in cough), "the detector heard none of the two real coughs"
    assert covid, "the covid model never ran although the detector heard a cough"
    assert all(r.label in ("negative", "positive") for r in covid)
    ungated_all = _serve(audio["mixed"])
    ungated = [r for r in ungated_all if r.task == "covid"]
    assert len(covid) < len(ungated)  # without the gate it runs on every window, speech and silence too
    # the opening sentence and pause (the first coughs start at 3.1 s): ungated covid ran there, gated never
    t0 = min(r.window_start for r in ungated_all)
    assert any(_end_s(r, t0) <= 3.0 for r in ungated)
    t0 = min(r.window_start for r in cough)
    assert not any(_end_s(r, t0) <= 3.0 for r in covid)


def test_no_cough_no_covid(audio):
    cough, covid = _check_gated(_serve(audio["speech"], "--gate", "covid=cough:cough"))
    if not any(r.label == "cough" for r in cough):
        assert covid == []

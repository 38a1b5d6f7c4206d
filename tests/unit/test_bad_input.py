"""No crash on bad input: each bad model, audio file or setting gets one clear message naming the
input and what to do, and where it makes sense the daemon keeps serving.

Models are real ONNX files (tests/onnx_models.py) broken the way files really break: cut short,
overwritten, metadata missing or wrong. Audio is real: the bundled speech clip, re-encoded,
truncated, or with invalid samples written into a float WAV.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import edgekd
from edgekd.audio.decode import AudioError, decode_file, file_info
from edgekd.audio.sources import FileSource
from edgekd.cli import main
from edgekd.contract import ModelContractError
from edgekd.daemon import Daemon
from edgekd.model import Model
from edgekd.pipeline import ModelRunner, RunnerSpec
from edgekd.postprocess import PostConfig
from edgekd.sink import MemorySink
from onnx_models import energy_model

CLIP = Path(edgekd.__file__).parent / "assets" / "YAF_bar_angry.flac"  # real speech, 2.1 s, 16 kHz


def run_cli(monkeypatch, capsys, *args) -> tuple[int, str]:
    monkeypatch.setattr("sys.argv", ["edgekd", *map(str, args)])
    with pytest.raises(SystemExit) as exc:
        main()
    return int(exc.value.code or 0), capsys.readouterr().err


# -- models ----------------------------------------------------------------------------------


def _truncated(tmp_path: Path) -> Path:
    good = energy_model(tmp_path / "good.onnx").read_bytes()
    bad = tmp_path / "truncated.onnx"
    bad.write_bytes(good[: len(good) // 2])
    return bad


def _overwritten(tmp_path: Path) -> Path:
    data = bytearray(energy_model(tmp_path / "good.onnx").read_bytes())
    rng = np.random.default_rng(7)
    data[16:200] = rng.integers(0, 256, 184, dtype=np.uint8).tobytes()
    bad = tmp_path / "corrupt.onnx"
    bad.write_bytes(bytes(data))
    return bad


BROKEN_MODELS = {
    "truncated": (_truncated, "onnxruntime cannot load it"),
    "overwritten": (_overwritten, "onnxruntime cannot load it"),
    "flac-renamed": (lambda p: Path(p / "x.onnx").write_bytes(CLIP.read_bytes()) and p / "x.onnx", "onnxruntime cannot load it"),
    "empty": (lambda p: Path(p / "e.onnx").write_bytes(b"") or p / "e.onnx", "the file is empty"),
    "no-labels": (lambda p: energy_model(p / "m.onnx", props_override={"edgekd.labels": None}), "edgekd.labels"),
    "no-rate": (lambda p: energy_model(p / "m.onnx", props_override={"edgekd.sample_rate": None}), "edgekd.sample_rate"),
    "no-metadata-at-all": (
        lambda p: energy_model(p / "m.onnx", props_override={k: None for k in (
            "edgekd.task", "edgekd.labels", "edgekd.sample_rate", "edgekd.window_samples", "edgekd.model_name",
            "edgekd.model_version", "edgekd.multi_label", "edgekd.training", "edgekd.contract_version")}),
        "edgekd.",
    ),
    "labels-not-json": (lambda p: energy_model(p / "m.onnx", props_override={"edgekd.labels": "quiet,loud"}), "not JSON"),
    "duplicate-labels": (lambda p: energy_model(p / "m.onnx", props_override={"edgekd.labels": '["a","a"]'}), "duplicate"),
    "rate-out-of-range": (lambda p: energy_model(p / "m.onnx", props_override={"edgekd.sample_rate": "1000000"}), "outside"),
    "rate-not-a-number": (lambda p: energy_model(p / "m.onnx", props_override={"edgekd.sample_rate": "16k"}), "not an integer"),
    "task-with-slash": (lambda p: energy_model(p / "m.onnx", props_override={"edgekd.task": "a/b"}), "edgekd.task"),
    "outputs-disagree-with-labels": (lambda p: energy_model(p / "m.onnx", n_outputs=3), "label"),
    "fixed-length-disagrees": (
        lambda p: energy_model(p / "m.onnx", fixed_length=True, props_override={"edgekd.window_samples": "8000"}),
        "window_samples",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN_MODELS))
def test_a_broken_model_is_refused_naming_the_file_and_the_problem(tmp_path, case):
    make, says = BROKEN_MODELS[case]
    path = make(tmp_path)
    with pytest.raises(ModelContractError) as info:
        Model(path)
    message = str(info.value)
    assert message.startswith(f"model {path}: ") and says in message


@pytest.mark.parametrize("case", ["truncated", "no-labels", "outputs-disagree-with-labels"])
def test_serve_with_a_broken_model_is_one_line_and_exit_2(monkeypatch, capsys, tmp_path, case):
    path = BROKEN_MODELS[case][0](tmp_path)
    code, err = run_cli(monkeypatch, capsys, "serve", "-m", path, "--source", CLIP, "--stdout")
    assert code == 2 and "Traceback" not in err
    assert err.startswith(f"edgekd: model {path}: ") and len(err.strip().splitlines()) == 1


# -- audio files -----------------------------------------------------------------------------


def _clip_cut(p: Path) -> Path:
    data = CLIP.read_bytes()
    out = p / "cut.flac"
    out.write_bytes(data[: len(data) // 3])
    return out


BROKEN_AUDIO = {
    "empty": (lambda p: (p / "e.wav").write_bytes(b"") and None or p / "e.wav", "the file is empty"),
    "text": (lambda p: (p / "t.wav").write_text("RIFF? no\n" * 50) and p / "t.wav", "cannot decode it"),
    "unknown-format": (lambda p: (p / "m.onnx").write_bytes(energy_model(p / "x.onnx").read_bytes()) and p / "m.onnx", "cannot decode it"),
    "header-only": (lambda p: (p / "h.flac").write_bytes(CLIP.read_bytes()[:100]) and p / "h.flac", "audio"),
    "cut-short": (_clip_cut, "decoding failed part way"),
}


@pytest.mark.parametrize("case", sorted(BROKEN_AUDIO))
def test_a_broken_audio_file_is_one_audio_error_naming_it(tmp_path, case):
    make, says = BROKEN_AUDIO[case]
    path = make(tmp_path)
    with pytest.raises(AudioError) as info:
        decode_file(path)
    assert str(path) in str(info.value) and says in str(info.value)


def test_serve_with_a_broken_audio_file_is_one_line_and_exit_2(monkeypatch, capsys, tmp_path, energy_onnx):
    path = BROKEN_AUDIO["text"][0](tmp_path)
    code, err = run_cli(monkeypatch, capsys, "serve", "-m", energy_onnx, "--source", path, "--stdout")
    assert code == 2 and err.startswith(f"edgekd: audio {path}: cannot decode it") and "supported formats" in err


@pytest.mark.parametrize("rate", [8000, 11025, 22050, 44100, 48000, 96000, 192000])
def test_any_real_sample_rate_is_resampled_and_served(tmp_path, energy_onnx, rate):
    """The speech clip re-encoded at another rate gives as many windows as the original, and, where
    the rate keeps the whole speech band, the same labels."""
    audio = decode_file(CLIP, rate=rate)
    path = tmp_path / f"clip{rate}.wav"
    sf.write(path, audio.samples, rate, subtype="PCM_16")
    results = serve_file(path, energy_onnx)
    assert [r.seq for r in results] == [0, 1, 2, 3, 4]
    if rate >= 16000:
        assert [r.label for r in results] == [r.label for r in serve_file(CLIP, energy_onnx)]


@pytest.mark.parametrize("rate", [1, 100, 1000])
def test_a_sample_rate_no_audio_has_is_refused_naming_the_file(tmp_path, rate):
    path = tmp_path / f"r{rate}.wav"
    sf.write(path, np.zeros(rate * 2, np.float32), rate, subtype="PCM_16")
    with pytest.raises(AudioError, match=rf"{path}: sample rate {rate} Hz .*4000"):
        file_info(path)


# -- invalid, clipped and offset samples -------------------------------------------------------


def serve_file(path: Path, model_path: Path, gate_db: float | None = None) -> list:
    sink = MemorySink()
    runner = ModelRunner(Model(model_path), RunnerSpec(4000, PostConfig(), gate_db=gate_db))
    daemon = Daemon(FileSource(path), [runner], sink, device="t", stats_interval=3600)
    daemon.run()
    serve_file.last_stats = sink.stats[-1]  # type: ignore[attr-defined]
    return sink.results


def test_nan_and_inf_samples_are_replaced_counted_and_named(tmp_path, energy_onnx, caplog):
    samples = decode_file(CLIP).samples.copy()
    samples[1000:1100] = np.nan
    samples[20000:20010] = np.inf
    samples[30000:30005] = -np.inf
    path = tmp_path / "nan.wav"
    sf.write(path, samples, 16000, subtype="FLOAT")
    with caplog.at_level(logging.WARNING):
        results = serve_file(path, energy_onnx)
    stats = serve_file.last_stats  # type: ignore[attr-defined]
    assert stats.audio_nonfinite == 115
    assert len(results) == 5 and all(np.isfinite(r.score) and 0 <= r.score <= 1 for r in results)
    # the same as the clip with those samples silent: nothing else changed
    clean = decode_file(CLIP).samples.copy()
    clean[1000:1100] = 0
    clean[20000:20010] = 0
    clean[30000:30005] = 0
    ref_path = tmp_path / "zeros.wav"
    sf.write(ref_path, clean, 16000, subtype="FLOAT")
    assert [r.scores for r in serve_file(ref_path, energy_onnx)] == [r.scores for r in results]
    warning = next(r.getMessage() for r in caplog.records if "NaN or infinite" in r.getMessage())
    assert str(path) in warning and "replaced by silence" in warning


def test_clipping_is_counted_and_named_and_serving_goes_on(tmp_path, energy_onnx, caplog):
    loud = np.clip(decode_file(CLIP).samples * 20, -1, 1)
    path = tmp_path / "clipped.wav"
    sf.write(path, loud, 16000, subtype="PCM_16")
    with caplog.at_level(logging.WARNING):
        results = serve_file(path, energy_onnx)
    assert len(results) == 5 and serve_file.last_stats.audio_clipped > 1000  # type: ignore[attr-defined]
    assert any("is clipping" in r.getMessage() and str(path) in r.getMessage() and "gain" in r.getMessage()
               for r in caplog.records)


def test_a_dc_offset_is_reported_and_serving_goes_on(tmp_path, energy_onnx, caplog):
    offset = decode_file(CLIP).samples * 0.3 + 0.4
    path = tmp_path / "dc.wav"
    sf.write(path, offset, 16000, subtype="PCM_16")
    with caplog.at_level(logging.WARNING):
        results = serve_file(path, energy_onnx)
    assert len(results) == 5
    assert serve_file.last_stats.audio_dc_offset == pytest.approx(0.4, abs=0.02)  # type: ignore[attr-defined]
    assert any("DC offset of +0.4" in r.getMessage() and str(path) in r.getMessage() for r in caplog.records)


def test_clean_speech_raises_no_audio_warning(energy_onnx, caplog):
    with caplog.at_level(logging.WARNING):
        serve_file(CLIP, energy_onnx)
    stats = serve_file.last_stats  # type: ignore[attr-defined]
    assert stats.audio_nonfinite == 0 and stats.audio_clipped == 0 and abs(stats.audio_dc_offset) < 0.01
    assert not [r for r in caplog.records if r.name == "edgekd.audio.health"]


# -- settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "toml,needle",
    [
        ("[mqtt]\nurl = 'mqtt://host:99999'\n", "port 99999 is outside 1..65535"),
        ("[mqtt]\nurl = 'mqtt://user:secret@host'\n", "credentials do not belong in the URL"),
        ("[mqtt]\nurl = 'http://host'\n", "scheme 'http'"),
        ("[mqtt]\nqueue_size = 0\n", "mqtt.queue_size"),
        ("[mqtt]\noutbox = 'cloud'\n", "mqtt.outbox"),
        ("[mqtt]\noutbox_max_age = -1\n", "mqtt.outbox_max_age"),
        ("[mqtt]\nusername = 'u'\npassword_file = '/nonexistent/pw'\n", "password_file '/nonexistent/pw' does not exist"),
        ("stats_interval = 'often'\n", "stats_interval"),
        ("threads = 0\n", "threads"),
        ("[audio]\nrate = -5\n", "audio.rate"),
        ("[defaults]\nthreshold = 1.5\n", "defaults.threshold"),
        ("[[models]]\npath = 'm.onnx'\ncolour = 'red'\n", "models[0].colour: unknown key"),
        ("log_level = 'loud'\n", "log_level"),
        ("this is not toml", "not valid TOML"),
    ],
)
def test_a_bad_config_is_one_line_naming_the_key_and_exit_2(monkeypatch, capsys, tmp_path, energy_onnx, toml, needle):
    cfg = tmp_path / "edgekd.toml"
    cfg.write_text(toml)
    # no --stdout: the [mqtt] table is checked only when results go to MQTT
    model = [] if "[[models]]" in toml else ["-m", energy_onnx]  # -m would replace the file's [[models]]
    code, err = run_cli(monkeypatch, capsys, "serve", "--config", cfg, *model, "--source", CLIP)
    assert code == 2 and needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "secret" not in err


def test_an_outbox_in_use_by_another_daemon_is_one_line_and_exit_2(monkeypatch, capsys, tmp_path, energy_onnx):
    from edgekd.mqtt.outbox import SqliteOutbox

    path = tmp_path / "shared.sqlite3"
    holder = SqliteOutbox(path)  # another serve with the same outbox
    cfg = tmp_path / "edgekd.toml"
    cfg.write_text(f'[mqtt]\nurl = "mqtt://127.0.0.1:9"\noutbox_path = "{path}"\n')
    try:
        code, err = run_cli(monkeypatch, capsys, "serve", "--config", cfg, "-m", energy_onnx, "--source", CLIP)
    finally:
        holder.close()
    assert code == 2 and err.startswith(f"edgekd: outbox {path} is in use by edgekd pid") and "Traceback" not in err


@pytest.mark.parametrize(
    "args,env,needle",
    [
        (["--device-id", "kitchen/#"], {}, "device_id"),
        (["--device-id", "+"], {}, "device_id"),
        (["--device-id", "a\x00b"], {}, "device_id"),
        ([], {"EDGEKD_DEVICE_ID": "x/y/z"}, "device_id"),
        (["--prefix", "edgekd/+"], {}, "prefix"),
        (["--prefix", "$SYS/edgekd"], {}, "prefix"),
        (["--prefix", "a//b"], {}, "prefix"),
    ],
)
def test_topic_injection_through_flags_or_environment_is_refused(monkeypatch, capsys, energy_onnx, args, env, needle):
    """Wildcards, extra levels, NUL or $ topics cannot reach a topic, however they come in."""
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    code, err = run_cli(monkeypatch, capsys, "serve", "-m", energy_onnx, "--source", CLIP, *args)
    assert code == 2 and needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1

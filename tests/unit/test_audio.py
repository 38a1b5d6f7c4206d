import io
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import edgekd
from edgekd.audio.decode import AudioError, decode_file, downmix
from edgekd.audio.ringbuffer import RingBuffer
from edgekd.audio.sources import (
    CHUNK_MAX_S,
    FileSource,
    MicSource,
    StdinSource,
    capture_chunk_seconds,
    open_source,
    pcm16_to_mono,
)

CLIP = Path(edgekd.__file__).parent / "assets" / "YAF_bar_angry.flac"


def drain(ring):
    out = np.empty(ring.capacity, dtype=np.float32)
    parts = []
    while True:
        r = ring.read_into(out, timeout=0)
        if not r.count:
            return np.concatenate(parts) if parts else np.zeros(0, np.float32)
        parts.append(out[: r.count].copy())


def test_decodes_the_bundled_clip_to_mono_float32():
    a = decode_file(CLIP)
    assert a.rate == 16000 and a.samples.dtype == np.float32 and a.samples.ndim == 1
    assert 1.5 < a.seconds < 3 and 0 < np.abs(a.samples).max() <= 1


def test_stereo_is_mixed_down_and_any_rate_resampled(tmp_path):
    t = np.arange(44100) / 44100
    left = 0.5 * np.sin(2 * np.pi * 440 * t)
    path = tmp_path / "st.wav"
    sf.write(path, np.stack([left, -left * 0 + left], axis=1), 44100)
    a = decode_file(path, rate=16000)
    assert a.rate == 16000 and abs(len(a.samples) - 16000) <= 1
    assert np.abs(a.samples).max() == pytest.approx(0.5, abs=0.02)
    assert np.array_equal(downmix(np.array([[1.0, 0.0], [0.5, 0.5]], dtype=np.float32)), [0.5, 0.5])


@pytest.mark.parametrize(
    "content,message",
    [(b"", "empty"), (b"this is not audio at all" * 10, "cannot decode"), (b"RIFF\x00\x00\x00\x00WAVEfmt ", "cannot decode")],
)
def test_bad_files_give_one_clear_error_naming_the_file(tmp_path, content, message):
    p = tmp_path / "bad.wav"
    p.write_bytes(content)
    with pytest.raises(AudioError, match=message) as exc:
        decode_file(p)
    assert str(p) in str(exc.value)


def test_missing_file():
    with pytest.raises(AudioError, match="no such file"):
        decode_file("/nonexistent/x.flac")


def test_file_source_writes_every_sample():
    src = FileSource(CLIP)
    ring = RingBuffer(src.rate * 10)
    src.run(ring, threading.Event())
    assert np.array_equal(drain(ring), decode_file(CLIP).samples)


@pytest.mark.parametrize("chunk_s", [0.064, 0.255, 0.3])
def test_file_source_writes_chunks_of_its_size_and_every_sample(chunk_s):
    src = FileSource(CLIP, chunk_s=chunk_s)
    sizes = []

    class Counting(RingBuffer):
        def write(self, x, block=False):
            sizes.append(len(x))
            return super().write(x, block=block)

    ring = Counting(src.rate * 10)
    src.run(ring, threading.Event())
    step = round(chunk_s * src.rate)
    assert set(sizes[:-1]) == {step} and 0 < sizes[-1] <= step  # decoded about 1 s a read, written a chunk at a time
    assert np.array_equal(drain(ring), decode_file(CLIP).samples)


@pytest.mark.parametrize(
    ("hops", "chunk"),
    [([0.255], 0.255), ([0.08], 0.08), ([0.08, 1.0], 0.08), ([1.0], 0.25), ([0.5, 3.0], 0.25), ([0.3], 0.15),
     ([0.001], 0.016), ([], 0.064)],
)  # fmt: skip
def test_the_capture_chunk_divides_the_shortest_hop(hops, chunk):
    assert capture_chunk_seconds(hops) == pytest.approx(chunk)
    assert capture_chunk_seconds(hops) <= CHUNK_MAX_S


def test_serve_delivers_audio_in_chunks_of_its_models_hop(tmp_path):
    from edgekd.config import load_settings
    from edgekd.daemon import build_runners
    from edgekd.serve import load_models, make_source

    settings = load_settings(None, {"models": [{"path": "wav2tiny-keyword"}], "audio": {"source": str(CLIP)},
                                    "hops": {"wav2tiny-keyword": 0.25}}, environ={})  # fmt: skip
    models = load_models(settings)
    src = make_source(settings, models, build_runners(settings, models))
    # 250 ms is not a whole number of the model's 15 ms frames: served at 255 ms, so chunks of 255 ms
    assert isinstance(src, FileSource) and src.chunk_s == pytest.approx(0.255)
    mic = open_source("mic", rate=None, channels=1, realtime=False, loop=False, default_rate=16000, chunk_s=0.255)
    assert mic.chunk_s == 0.255


def test_file_source_loop_repeats_until_stopped():
    src = FileSource(CLIP, loop=True)
    ring = RingBuffer(src.rate * 10)
    stop = threading.Event()
    # a reader that stops the source after three passes
    n = len(decode_file(CLIP).samples)
    t = threading.Thread(target=src.run, args=(ring, stop))
    t.start()
    got = 0
    out = np.empty(100_000, np.float32)
    while got < 3 * n:
        got += ring.read_into(out, timeout=1).count
    stop.set()
    t.join(5)
    assert not t.is_alive() and ring.dropped == 0


def test_stdin_source_reads_s16le_and_mixes_channels():
    frames = np.array([[1000, 3000], [-32768, 32767], [0, 0]], dtype="<i2")
    data = frames.tobytes() + b"\x01"  # a trailing odd byte is not a whole frame
    ring = RingBuffer(100)
    StdinSource(rate=8000, channels=2, stream=io.BytesIO(data)).run(ring, threading.Event())
    got = drain(ring)
    assert np.allclose(got, [2000 / 32768, -0.5 / 32768, 0.0])
    assert np.allclose(pcm16_to_mono(np.array([16384], "<i2").tobytes(), 1), [0.5])


def test_source_spec_parsing(tmp_path):
    assert isinstance(open_source("mic", rate=None, channels=1, realtime=False, loop=False, default_rate=16000), MicSource)
    mic = open_source("mic:USB Audio", rate=48000, channels=2, realtime=False, loop=False, default_rate=16000)
    assert mic.device == "USB Audio" and mic.rate == 48000 and mic.channels == 2
    std = open_source("-", rate=None, channels=1, realtime=False, loop=False, default_rate=8000)
    assert isinstance(std, StdinSource) and std.rate == 8000
    f = open_source(str(CLIP), rate=None, channels=1, realtime=True, loop=True, default_rate=8000)
    assert isinstance(f, FileSource) and f.rate == 16000 and f.realtime and f.loop
    with pytest.raises(AudioError, match="no such file"):
        open_source(str(tmp_path / "none.wav"), rate=None, channels=1, realtime=False, loop=False, default_rate=1)

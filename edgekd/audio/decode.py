"""Decoding audio files (wav, flac, mp3, ogg through libsndfile) to mono float32."""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekd.audio import native_output
from edgekd.inputfile import file_problem

log = logging.getLogger(__name__)

SUPPORTED = "wav, flac, mp3, ogg"
MIN_RATE = 4000  # below this a file is not audio a model can use (the contract's lowest model rate)
MAX_RATE = 768_000
BLOCK_FRAMES = 16_000  # frames read at a time when streaming a file


class AudioError(ValueError):
    """Audio that cannot be used. The message names the file or source and what to do."""


@dataclass(frozen=True)
class Audio:
    samples: np.ndarray  # mono float32 in [-1, 1]
    rate: int

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.rate


def downmix(frames: np.ndarray) -> np.ndarray:
    """[frames, channels] (or [frames]) to mono float32 by averaging channels."""
    if frames.ndim == 1:
        return frames.astype(np.float32, copy=False)
    if frames.shape[1] == 1:
        return frames[:, 0].astype(np.float32, copy=False)
    return frames.mean(axis=1, dtype=np.float32)


def _open(path: str | Path):
    import soundfile as sf

    p = Path(path)
    problem = file_problem(p, f"give an audio file ({SUPPORTED}), `-` for raw PCM on stdin, or mic")
    if problem is not None:
        raise AudioError(f"audio {p}: {problem}")
    if p.stat().st_size == 0:
        raise AudioError(f"audio {p}: the file is empty")
    try:
        with native_output.captured() as said:
            f = sf.SoundFile(os.fsencode(p))  # bytes: a name that is not UTF-8 opens too
        _DecoderNoise(p).add(said).report()
    except Exception as exc:  # soundfile.LibsndfileError (a RuntimeError) for unknown/corrupt data
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AudioError(f"audio {p}: cannot decode it ({detail}); supported formats: {SUPPORTED}") from None
    if f.frames == 0:
        f.close()
        raise AudioError(f"audio {p}: the file holds no audio frames")
    if not MIN_RATE <= f.samplerate <= MAX_RATE:
        rate = f.samplerate
        f.close()
        raise AudioError(
            f"audio {p}: sample rate {rate} Hz is not one audio is recorded at; edgekd takes {MIN_RATE} to "
            f"{MAX_RATE} Hz: check the file's header, or re-encode it (e.g. `sox in.wav -r 16000 out.wav`)"
        )
    return f


def file_info(path: str | Path) -> tuple[int, int, int]:
    """(rate, channels, frames) of a file, checking that it can be decoded."""
    f = _open(path)
    try:
        return int(f.samplerate), int(f.channels), int(f.frames)
    finally:
        with native_output.captured() as said:
            f.close()
        _DecoderNoise(Path(path)).add(said).report()


class _DecoderNoise:
    """The lines a native decoder printed for one file, reported as one warning (each line at debug)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: list[str] = []

    def add(self, lines: list[str]) -> _DecoderNoise:
        self.lines += lines
        return self

    def report(self) -> None:
        if not self.lines:
            return
        for line in self.lines:
            log.debug("audio %s: decoder: %s", self.path, line)
        problems = [line for line in self.lines if re.search(r"error|illegal", line, re.IGNORECASE)] or self.lines
        first = re.sub(r"^\[[^\]]*\]\s*", "", problems[0])
        log.warning(
            "audio %s: the decoder reported %d problem(s) in damaged or unusual data (first: %s); that audio may "
            "be skipped or wrong: re-encode the file (e.g. `ffmpeg -i IN OUT.flac`) if results look off",
            self.path, len(problems), first,
        )
        self.lines = []


def iter_blocks(path: str | Path, frames: int = BLOCK_FRAMES) -> Iterator[np.ndarray]:
    """Mono float32 blocks of a file, streamed (a long file is never held whole). What a native
    decoder prints on the way (libmpg123 does, a line per damaged MP3 frame) ends as one warning."""
    p = Path(path)
    noise = _DecoderNoise(p)
    f = _open(p)
    quiet = native_output.captured if f.subtype.startswith("MPEG") else contextlib.nullcontext
    try:
        while True:
            try:
                with quiet() as said:
                    block = f.read(frames, dtype="float32", always_2d=True)
            except Exception as exc:
                raise AudioError(f"audio {p}: decoding failed part way ({exc})") from None
            noise.add(said or [])
            if len(block) == 0:
                return
            yield downmix(block)
    finally:
        with quiet() as said:
            f.close()
        noise.add(said or []).report()


def decode_file(path: str | Path, rate: int | None = None) -> Audio:
    """The whole file as mono float32, resampled to `rate` if given."""
    src_rate = file_info(path)[0]
    samples = np.concatenate(list(iter_blocks(path)))
    if not len(samples):
        raise AudioError(f"audio {path}: the file holds no audio frames")
    if rate is not None and rate != src_rate:
        import soxr

        samples = soxr.resample(samples, src_rate, rate, quality="HQ").astype(np.float32, copy=False)
        src_rate = rate
    return Audio(samples=samples, rate=int(src_rate))

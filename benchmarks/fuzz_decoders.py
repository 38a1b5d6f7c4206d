"""Fuzz the audio decoders: mutated real audio files through what `edgekd serve` does to a file.

Each input is written to a file on tmpfs and goes through `file_info` (open, format, rate checks),
`iter_blocks` (streamed decoding by libsndfile), resampling to 16 kHz (soxr) and the input checks
(edgekd.audio.health). The only acceptable failure is AudioError, whose message must name the file;
any other exception, a crash of a native decoder, or a hang (-timeout) is a finding. Findings are
saved under --out (with the input that caused them).

The seeds are real recordings: the bundled speech clip and alsa-utils' spoken channel names, each
re-encoded by libsndfile into WAV (16-bit, float), FLAC, OGG/Vorbis, MP3, AIFF and AU.

Engines:
  atheris (default when installed: `pip install 'edgekd[fuzz]'`): coverage-guided libFuzzer.
  mutate: seeded random mutation (bit flips, byte runs, truncation, splices, header copies) of the
          seeds, for machines without atheris.

    python benchmarks/fuzz_decoders.py --seconds 180 --out runs/fuzz
prints and writes a JSON summary: engine, inputs tried, AudioErrors, decoded files, findings.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edgekd.audio.decode import AudioError, decode_file, file_info, iter_blocks  # noqa: E402
from edgekd.audio.health import AudioHealth  # noqa: E402
from edgekd.audio.windowing import Resampler  # noqa: E402

CLIP = ROOT / "edgekd" / "assets" / "YAF_bar_angry.flac"
ALSA = Path("/usr/share/sounds/alsa")
MODEL_RATE = 16000
ENCODINGS = [("wav", "WAV", "PCM_16"), ("f32.wav", "WAV", "FLOAT"), ("flac", "FLAC", "PCM_16"),
             ("ogg", "OGG", "VORBIS"), ("mp3", "MP3", "MPEG_LAYER_III"), ("aiff", "AIFF", "PCM_16"),
             ("au", "AU", "PCM_16")]
MAX_SEED_SECONDS = 1.0  # short seeds keep each run fast


class Counts:
    def __init__(self) -> None:
        self.tried = 0
        self.audio_errors = 0
        self.decoded = 0
        self.samples = 0
        self.findings: list[dict] = []
        self.messages: dict[str, int] = {}


def make_seeds(folder: Path) -> list[Path]:
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    sources = [CLIP] + sorted(ALSA.glob("*.wav"))[:3]
    seeds = []
    for src in sources:
        audio = decode_file(src)
        x = audio.samples[: int(audio.rate * MAX_SEED_SECONDS)]
        for suffix, fmt, subtype in ENCODINGS:
            path = folder / f"{src.stem}.{suffix}"
            try:
                sf.write(path, x, audio.rate, format=fmt, subtype=subtype)
            except Exception as exc:  # an encoder this libsndfile lacks
                print(f"seed {path.name}: {exc}", file=sys.stderr)
                continue
            seeds.append(path)
        stereo = folder / f"{src.stem}.stereo.wav"
        sf.write(stereo, np.stack([x, -x], axis=1), audio.rate, subtype="PCM_16")
        seeds.append(stereo)
    return seeds


def decode_like_serve(path: Path) -> int:
    """What serve does with a file source, minus the model: returns samples at the model rate."""
    rate, channels, frames = file_info(path)
    resampler = Resampler(rate, MODEL_RATE)
    health = AudioHealth(str(path), rate)
    n = 0
    for block in iter_blocks(path, frames=4096):
        assert block.dtype == np.float32 and block.ndim == 1, (block.dtype, block.shape)
        block = health.check(block.copy())
        assert np.isfinite(block).all()
        n += len(resampler.process(block))
    n += len(resampler.process(np.zeros(0, np.float32), last=True))
    return n


def one_input(data: bytes, scratch: Path, counts: Counts, out: Path) -> None:
    counts.tried += 1
    scratch.write_bytes(data)
    try:
        counts.samples += decode_like_serve(scratch)
        counts.decoded += 1
    except AudioError as exc:
        counts.audio_errors += 1
        text = str(exc)
        if str(scratch) not in text or "\n" in text:
            record(counts, out, data, f"AudioError that does not name the file on one line: {text!r}")
        key = re.sub(r"\d+", "N", text.replace(str(scratch), "FILE").split("(")[0].split(";")[0].strip())
        counts.messages[key] = counts.messages.get(key, 0) + 1
    except Exception:
        record(counts, out, data, traceback.format_exc())
        raise


def record(counts: Counts, out: Path, data: bytes, what: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"finding-{len(counts.findings)}.bin"
    path.write_bytes(data)
    counts.findings.append({"input": str(path), "error": what})
    print(f"FINDING {path}: {what}", file=sys.stderr)


def mutate(rng: random.Random, seeds: list[bytes]) -> bytes:
    data = bytearray(rng.choice(seeds))
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        if op == 0 and data:  # flip bits
            for _ in range(rng.randint(1, 8)):
                i = rng.randrange(len(data))
                data[i] ^= 1 << rng.randrange(8)
        elif op == 1 and data:  # overwrite a run with random or extreme bytes
            i = rng.randrange(len(data))
            run = rng.randint(1, 16)
            fill = rng.choice([b"\x00", b"\xff", b"\x7f", b"\x80", bytes([rng.randrange(256)])])
            data[i : i + run] = fill * run
        elif op == 2 and data:  # truncate
            del data[rng.randrange(len(data)) :]
        elif op == 3:  # splice another seed in
            other = rng.choice(seeds)
            i, j = rng.randrange(len(data) + 1), rng.randrange(len(other) + 1)
            data[i:] = other[j:]
        elif op == 4 and len(data) > 64:  # header field mangling: a 4-byte integer in the first 64 bytes
            i = rng.randrange(0, 60)
            data[i : i + 4] = rng.choice([0, 1, 0x7FFFFFFF, 0xFFFFFFFF, rng.getrandbits(32)]).to_bytes(4, "little")
        elif op == 5 and data:  # duplicate a chunk
            i = rng.randrange(len(data))
            data[i:i] = data[i : i + rng.randint(1, 512)]
    return bytes(data)


def run_mutate(seeds: list[bytes], seconds: float, scratch: Path, counts: Counts, out: Path, seed: int) -> None:
    rng = random.Random(seed)
    for data in seeds:
        one_input(data, scratch, counts, out)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            one_input(mutate(rng, seeds), scratch, counts, out)
        except Exception:
            pass  # recorded; go on


def run_atheris(seed_dir: Path, seconds: float, scratch: Path, counts: Counts, out: Path, summary) -> None:
    import atheris

    atheris.instrument_all()  # coverage of every Python function loaded (edgekd's decoders included)
    deadline = time.monotonic() + seconds

    def target(data: bytes) -> None:
        one_input(data, scratch, counts, out)  # any other exception is raised: atheris reports it
        if time.monotonic() > deadline:
            summary()
            os._exit(0)  # libFuzzer's own exit skips Python's atexit: write the summary first

    corpus = out / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    argv = [sys.argv[0], str(corpus), str(seed_dir), "-timeout=20", "-rss_limit_mb=2048", "-max_len=200000",
            f"-artifact_prefix={out}/"]
    atheris.Setup(argv, target)
    atheris.Fuzz()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--engine", choices=["auto", "atheris", "mutate"], default="auto")
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "edgekd-fuzz")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    engine = args.engine
    if engine == "auto":
        try:
            import atheris  # noqa: F401

            engine = "atheris"
        except ImportError:
            engine = "mutate"
    args.out.mkdir(parents=True, exist_ok=True)
    seed_dir = args.out / "seeds"
    seeds = make_seeds(seed_dir)
    shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
    scratch = shm / f"edgekd-fuzz-{os.getpid()}.audio"
    counts = Counts()
    started = time.monotonic()
    done = False

    def summary() -> None:
        nonlocal done
        if done:
            return
        done = True
        report = {
            "engine": engine,
            "seconds": round(time.monotonic() - started, 1),
            "seeds": len(seeds),
            "inputs_tried": counts.tried,
            "decoded": counts.decoded,
            "audio_errors": counts.audio_errors,
            "samples_decoded_at_16k": counts.samples,
            "findings": counts.findings,
            "audio_error_kinds": dict(sorted(counts.messages.items(), key=lambda kv: -kv[1])[:15]),
        }
        (args.out / "summary.json").write_text(json.dumps(report, indent=2))
        print(json.dumps(report, indent=2))
        scratch.unlink(missing_ok=True)

    if engine == "atheris":
        run_atheris(seed_dir, args.seconds, scratch, counts, args.out, summary)
    else:
        run_mutate([p.read_bytes() for p in seeds], args.seconds, scratch, counts, args.out, args.seed)
    summary()


if __name__ == "__main__":
    main()

"""Where audio comes from: a file, raw PCM on stdin, or a microphone through PyAudio.

Every source has `rate` (Hz of what it writes), `description`, and `run(ring, stop)`, which
writes mono float32 into the ring buffer until the audio ends or `stop` is set, and raises
AudioError when the source cannot be used. Live sources never wait on the ring buffer.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
from pathlib import Path
from typing import BinaryIO, Protocol

import numpy as np

from edgekd.audio import native_output
from edgekd.audio.decode import AudioError, downmix, file_info, iter_blocks
from edgekd.audio.ringbuffer import RingBuffer

log = logging.getLogger(__name__)

DECODE_SECONDS = 1.0  # audio a file source decodes per read
CHUNK_SECONDS = 0.064  # audio per capture write where no hop says otherwise (1024 frames at 16 kHz)
CHUNK_MAX_S = 0.26  # the longest capture chunk `serve` picks (a 255 ms keyword hop is one chunk)
CHUNK_MIN_S = 0.016
INT16_SCALE = 1.0 / 32768.0


class Source(Protocol):
    rate: int
    description: str

    def run(self, ring: RingBuffer, stop: threading.Event) -> None: ...


def chunk_frames(rate: int, seconds: float = CHUNK_SECONDS) -> int:
    return max(1, int(round(rate * seconds)))


def capture_chunk_seconds(hops_s: list[float]) -> float:
    """How much audio a source delivers per write for models at these hops: the shortest hop, cut
    into equal parts of at most CHUNK_MAX_S (at least CHUNK_MIN_S).

    Each write wakes the capture thread, and on a microphone PortAudio's callback: at a 255 ms hop,
    64 ms chunks are 16 wake-ups a second where 4 do. A chunk that divides the hop also ends where
    a window ends, so windows are not kept waiting for the rest of a chunk."""
    if not hops_s:
        return CHUNK_SECONDS
    hop = min(hops_s)
    parts = max(1, math.ceil(hop / CHUNK_MAX_S - 1e-9))
    return min(CHUNK_MAX_S, max(CHUNK_MIN_S, hop / parts))


def pcm16_to_mono(data: bytes, channels: int) -> np.ndarray:
    x = np.frombuffer(data, dtype="<i2")
    usable = len(x) - len(x) % channels
    frames = x[:usable].reshape(-1, channels).astype(np.float32) * INT16_SCALE
    return downmix(frames)


class _Feeder:
    """Writes blocks into the ring, paced by the sample count when `realtime` (so timing never
    drifts), else as fast as the consumer goes. `write` returns False once `stop` is set."""

    def __init__(self, ring: RingBuffer, stop: threading.Event, rate: int, realtime: bool) -> None:
        self.ring, self.stop, self.rate, self.realtime = ring, stop, rate, realtime
        self.t0 = time.monotonic()
        self.sent = 0

    def write(self, block: np.ndarray) -> bool:
        if self.realtime:
            delay = self.t0 + (self.sent + len(block)) / self.rate - time.monotonic()
            if delay > 0 and self.stop.wait(delay):  # wait on `stop` to wake at once
                return False
        elif self.stop.is_set():
            return False
        self.ring.write(block, block=not self.realtime)
        self.sent += len(block)
        return True


class FileSource:
    """A file, read as fast as the consumer goes, or paced like a live stream with `realtime`."""

    def __init__(self, path: str | Path, realtime: bool = False, loop: bool = False, chunk_s: float = CHUNK_SECONDS) -> None:
        self.path = Path(path)
        self.rate, self.channels, self.frames = file_info(self.path)
        self.realtime = realtime
        self.loop = loop
        self.chunk_s = chunk_s
        mode = "realtime" if realtime else "fast"
        self.description = f"file {self.path} ({self.rate} Hz, {mode}{', loop' if loop else ''})"

    def run(self, ring: RingBuffer, stop: threading.Event) -> None:
        step = chunk_frames(self.rate, self.chunk_s)
        feeder = _Feeder(ring, stop, self.rate, self.realtime)
        per_read = step * max(1, round(DECODE_SECONDS / self.chunk_s))
        while not stop.is_set():
            # decoded about DECODE_SECONDS at a time (the decoder's per-call work, a few seeks in
            # soundfile, is per read), written to the ring a capture chunk at a time
            for block in iter_blocks(self.path, frames=per_read):
                for i in range(0, len(block), step):
                    if not feeder.write(block[i : i + step]):
                        return
            if not self.loop:
                return


class PlaylistSource:
    """Several files played one after another, each padded with silence to a whole number of
    slots of `slot_seconds` (e.g. one model window), so that each window holds one clip. The demo
    uses it."""

    def __init__(self, paths: list[Path], slot_seconds: float, realtime: bool = False) -> None:
        if not paths:
            raise AudioError("playlist: no files given")
        self.sources = [FileSource(p, realtime=False) for p in paths]
        rates = {s.rate for s in self.sources}
        if len(rates) != 1:
            raise AudioError(f"playlist: all files must share one sample rate, got {sorted(rates)} Hz")
        self.rate = rates.pop()
        self.channels = 1
        self.slot = max(1, int(round(slot_seconds * self.rate)))
        self.realtime = realtime
        self.description = f"playlist of {len(paths)} files ({self.rate} Hz, one per {self.slot} frames)"

    def run(self, ring: RingBuffer, stop: threading.Event) -> None:
        step = chunk_frames(self.rate)
        feeder = _Feeder(ring, stop, self.rate, self.realtime)
        for src in self.sources:
            clip = np.concatenate(list(iter_blocks(src.path, frames=step)))
            padded = np.zeros(-(-max(len(clip), 1) // self.slot) * self.slot, dtype=np.float32)
            padded[: len(clip)] = clip
            for i in range(0, len(padded), step):
                if not feeder.write(padded[i : i + step]):
                    return


class StdinSource:
    """Raw signed 16-bit little-endian PCM on stdin (`arecord -f S16_LE -r 16000 -c 1 | ...`)."""

    def __init__(self, rate: int, channels: int = 1, stream: BinaryIO | None = None, chunk_s: float = CHUNK_SECONDS) -> None:
        if rate <= 0 or channels <= 0:
            raise AudioError(f"stdin: rate and channels must be positive (rate={rate}, channels={channels})")
        self.rate = int(rate)
        self.channels = int(channels)
        self._stream = stream
        self.chunk_s = chunk_s
        self.description = f"stdin (S16_LE, {self.rate} Hz, {self.channels} ch)"

    def run(self, ring: RingBuffer, stop: threading.Event) -> None:
        stream = self._stream or sys.stdin.buffer
        nbytes = chunk_frames(self.rate, self.chunk_s) * self.channels * 2
        carry = b""
        while not stop.is_set():
            data = stream.read(nbytes)
            if not data:
                return
            data = carry + data
            whole = len(data) - len(data) % (2 * self.channels)
            carry = data[whole:]
            if whole:
                ring.write(pcm16_to_mono(data[:whole], self.channels))


def _pyaudio():
    try:
        import pyaudio
    except ImportError:
        raise AudioError("microphone input needs PyAudio: pip install 'edgekd[mic]' (and apt-get install portaudio19-dev)") from None
    return pyaudio


def _portaudio(pyaudio):
    """A fresh PortAudio. What ALSA and JACK print while it looks for devices (dozens of lines on
    a machine without a sound card) goes to the debug log, not the terminal."""
    with native_output.captured() as said:
        pa = pyaudio.PyAudio()
    for line in said:
        log.debug("PortAudio: %s", line)
    return pa


def list_devices() -> list[dict]:
    """Input devices PortAudio sees: index, name, channels, default rate, and which is the default."""
    pyaudio = _pyaudio()
    pa = _portaudio(pyaudio)
    try:
        try:
            default = pa.get_default_input_device_info()["index"]
        except OSError:
            default = None
        out = []
        for i in range(pa.get_device_count()):
            info = pa.get_device_info_by_index(i)
            if info.get("maxInputChannels", 0) > 0:
                out.append(
                    {
                        "index": i,
                        "name": info["name"],
                        "channels": int(info["maxInputChannels"]),
                        "default_rate": int(info["defaultSampleRate"]),
                        "default": i == default,
                    }
                )
        return out
    finally:
        pa.terminate()


def _has_input(pa) -> bool:
    return any(pa.get_device_info_by_index(i).get("maxInputChannels", 0) > 0 for i in range(pa.get_device_count()))


def _find_device(pa, selector: str | None) -> int | None:
    """None for the default input; an index, or the first input whose name contains `selector`."""
    if not selector:
        return None
    inputs = []
    for i in range(pa.get_device_count()):
        info = pa.get_device_info_by_index(i)
        if info.get("maxInputChannels", 0) > 0:
            inputs.append((i, info["name"]))
    if selector.isdigit():
        idx = int(selector)
        if any(i == idx for i, _ in inputs):
            return idx
    for i, name in inputs:
        if name == selector:
            return i
    for i, name in inputs:
        if selector.lower() in name.lower():
            return i
    if not inputs:
        raise AudioError(f"microphone {selector!r} not found: {NO_INPUT_DEVICES}")
    names = ", ".join(f"{i}: {n}" for i, n in inputs)
    raise AudioError(f"microphone {selector!r} not found; input devices are {names} (see `edgekd devices`)")


RETRY_MIN_S = 1.0  # first wait before reopening a microphone that failed
RETRY_MAX_S = 30.0  # the wait doubles up to this
RETRY_LOG_EVERY_S = 600.0  # while the same failure repeats, it is logged again at most this often
NO_INPUT_DEVICES = (
    "PortAudio finds no audio input device (no sound card or USB microphone, or this user is not in "
    "the 'audio' group); plug one in and check `arecord -l` and `edgekd devices`, or serve a file or "
    "stdin with --source FILE or --source -"
)
STREAM_CHECK_S = 0.5  # how often a running stream is checked
# PortAudio errors that a retry cannot fix: the settings are wrong for the device (fatal at start).
_FATAL_PA_ERRORS = {-9997: "invalid sample rate", -9998: "invalid number of channels"}


class MicSource:
    """A microphone through PyAudio. Its callback only converts and writes to the ring buffer.

    A microphone that fails (cannot be opened, its stream stops, PortAudio raises: a USB microphone
    unplugged, a driver error) is reopened with backoff (RETRY_MIN_S doubling to RETRY_MAX_S)
    without ending `run`: `state` is "failed" and `error` says why meanwhile, and "running" again
    once audio flows. The time it was down is skipped in the ring buffer, so that timestamps stay
    right. Wrong settings (a rate or channel count the device refuses at the first open) and a
    missing PyAudio end `run` with AudioError instead: retrying cannot fix them.
    """

    def __init__(
        self,
        device: str | None = None,
        rate: int = 16000,
        channels: int = 1,
        retry_min: float = RETRY_MIN_S,
        retry_max: float = RETRY_MAX_S,
        chunk_s: float = CHUNK_SECONDS,
    ) -> None:
        self.device = device
        self.chunk_s = chunk_s
        self.rate = int(rate)
        self.channels = int(channels)
        self.retry_min = retry_min
        self.retry_max = max(retry_min, retry_max)
        self.description = f"mic {device or 'default'} ({self.rate} Hz, {self.channels} ch)"
        self.state = "starting"  # "running" once audio flows, "failed" while it is retried
        self.error: str | None = None
        self.failures = 0  # times it failed (at open or while running)
        self.recoveries = 0  # times it came back after failing
        self._last_audio = 0.0  # time.monotonic() of the last callback
        self._last_logged = 0.0  # time.monotonic() when a failure was last logged as a warning

    def run(self, ring: RingBuffer, stop: threading.Event) -> None:
        pyaudio = _pyaudio()
        delay = self.retry_min
        self._last_audio = time.monotonic()
        opened_once = False
        while not stop.is_set():
            try:
                self._capture(pyaudio, ring, stop)
                return  # stopped on request
            except AudioError as exc:
                if not opened_once and getattr(exc, "fatal", False):
                    raise
                error = exc
            except Exception as exc:  # PortAudio/driver errors: report them and retry
                error = AudioError(f"{self.description}: {type(exc).__name__}: {exc}")
            opened_once = opened_once or self.state == "running"
            if self.state == "running":
                delay = self.retry_min
            self._log_failure(str(error), delay)
            self.state, self.error = "failed", str(error)
            self.failures += 1
            if stop.wait(delay):
                return
            delay = min(delay * 2, self.retry_max)

    def _log_failure(self, error: str, delay: float) -> None:
        """A new failure is logged at once; the same one again at most every RETRY_LOG_EVERY_S
        (each retry is in the debug log, and `state`/`error` are in the stats all along)."""
        now = time.monotonic()
        if error != self.error or now - self._last_logged >= RETRY_LOG_EVERY_S:
            again = f", {self.failures + 1} failures so far" if error == self.error else ""
            log.warning(
                "%s; retrying in %.0f s, then with backoff up to %.0f s (logged again every %.0f min while it "
                "fails%s)", error, delay, self.retry_max, RETRY_LOG_EVERY_S / 60, again,
            )
            self._last_logged = now
        else:
            log.debug("%s; retrying in %.0f s (failure %d)", error, delay, self.failures + 1)

    def _capture(self, pyaudio, ring: RingBuffer, stop: threading.Event) -> None:
        pa = _portaudio(pyaudio)  # a fresh PortAudio each time: it lists devices only when initialised
        try:
            index = _find_device(pa, self.device)
            channels = self.channels

            def callback(in_data, frame_count, time_info, status):
                self._last_audio = time.monotonic()
                ring.write(pcm16_to_mono(in_data, channels))
                return (None, pyaudio.paContinue)

            try:
                with native_output.captured() as said:
                    stream = pa.open(
                        format=pyaudio.paInt16,
                        channels=channels,
                        rate=self.rate,
                        input=True,
                        input_device_index=index,
                        frames_per_buffer=chunk_frames(self.rate, self.chunk_s),
                        stream_callback=callback,
                        start=False,  # PyAudio starts at once by default: not before _resume
                    )
            except OSError as exc:
                for line in said:
                    log.debug("PortAudio: %s", line)
                code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
                fix = (
                    "try another --rate or --channels, or pick a device from `edgekd devices`"
                    if _has_input(pa) else NO_INPUT_DEVICES
                )
                err = AudioError(f"{self.description}: cannot open it ({exc}); {fix}")
                err.fatal = code in _FATAL_PA_ERRORS  # type: ignore[attr-defined]
                raise err from None
            try:
                self._resume(ring)
                stream.start_stream()
                while not stop.wait(STREAM_CHECK_S):
                    if not stream.is_active():
                        raise AudioError(f"{self.description}: the input stream stopped (device gone?)")
            finally:
                try:
                    stream.stop_stream()
                    stream.close()
                except OSError:
                    pass  # the device is gone; PortAudio has nothing left to stop
        finally:
            with native_output.captured():
                pa.terminate()

    def _resume(self, ring: RingBuffer) -> None:
        """The stream opened: skip the audio lost while it was down and say it is running."""
        down_s = time.monotonic() - self._last_audio
        if self.state == "failed":
            ring.skip(int(round(down_s * self.rate)))
            self.recoveries += 1
            log.warning("%s is back after %.1f s; capture resumed", self.description, down_s)
        self.state, self.error = "running", None


def open_source(spec: str, *, rate: int | None, channels: int, realtime: bool, loop: bool, default_rate: int,
                chunk_s: float = CHUNK_SECONDS) -> Source:  # fmt: skip
    """`mic`, `mic:NAME-OR-INDEX`, `-` (raw S16_LE on stdin) or a file path; `chunk_s` of audio per write."""
    if spec == "mic" or spec.startswith("mic:"):
        device = spec.partition(":")[2] or None
        return MicSource(device, rate=rate or default_rate, channels=channels, chunk_s=chunk_s)
    if spec == "-":
        return StdinSource(rate=rate or default_rate, channels=channels, chunk_s=chunk_s)
    return FileSource(spec, realtime=realtime, loop=loop, chunk_s=chunk_s)

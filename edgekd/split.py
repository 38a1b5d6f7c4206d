"""A model run as its described front end (numpy, shared per stream) and its body (onnxruntime).

A file that carries `edgekd.frontend` and `edgekd.body` (docs/model-contract.md) can be run in two
parts: the log-mel frames come from `edgekd.frontend.LogMelStream`, computed once per stream for
every model whose description is the same, and only the body runs per window. `load_split` checks
at load, on probe windows, that the two parts give the whole graph's logits (within `PROBE_ATOL`,
same top label); a file that fails is not refused: one line names it and the largest difference,
and the model runs whole windows.

`SharedFrontEnds` serves the models of one stream at one rate: one `LogMelStream` per distinct
description; a model whose file also has a checked step graph (`edgekd.stateful`) reads the same
frames through its stateful path instead of its body. A model's windows can read shared frames only if its hop is a whole number of
front-end hops, so the hop is rounded to the nearest such number (never above the window) and the
change is logged.
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekd.contract import KEY_BODY, KEY_FRONTEND, ModelContractError
from edgekd.frontend import KIND_LOGMEL, FrontEndError, LogMelFrames, LogMelSpec, LogMelStream
from edgekd.model import logits_to_scores
from edgekd.probe import seeded_normal

if TYPE_CHECKING:
    from edgekd.pipeline import ModelRunner
    from edgekd.stateful import StatefulScorer

log = logging.getLogger(__name__)

PROBE_ATOL = 1e-4  # largest |split - whole| on the logits of a probe window
PROBE_NOISE_RMS = (1e-4, 1e-3, 1e-2, 0.1, 0.5)
PROBE_TONE_HZ = 1000.0


class SplitModel:
    """A model's body session and its front end's description, checked against its whole graph."""

    def __init__(self, name: str, spec: LogMelSpec, session: Any, window_samples: int, multi_label: bool,
                 n_labels: int | None = None) -> None:  # fmt: skip
        self.name = name
        self.n_labels = n_labels  # known: one window at a time runs through bound buffers (`window_logits`)
        self.spec = spec
        self.session = session
        self.input_name = session.get_inputs()[0].name
        self.output_name = session.get_outputs()[0].name
        self.frames_per_window = spec.n_frames(window_samples)
        self.multi_label = multi_label
        self.features = LogMelFrames(spec)
        self._bound: tuple[Any, np.ndarray, np.ndarray] | None = None

    def logits(self, logmel: np.ndarray) -> np.ndarray:
        """`[batch, frames, n_mels]` un-normalised log-mel -> `[batch, n_labels]`."""
        return self.session.run([self.output_name], {self.input_name: logmel})[0]

    def scores(self, logmel: np.ndarray) -> np.ndarray:
        return logits_to_scores(self.logits(logmel), self.multi_label)

    def window_logits(self, frames: np.ndarray) -> np.ndarray:
        """One window's `[frames, n_mels]` -> `[1, n_labels]` logits, as `serve` runs it every hop: copied
        into an input buffer bound to the body once (IOBinding), so onnxruntime's per-call work on the
        feed and fetch dictionaries is skipped."""
        if self.n_labels is None:
            return self.logits(frames[None])
        if self._bound is None:
            from onnxruntime import OrtValue

            inputs = np.zeros((1, self.frames_per_window, self.spec.n_mels), dtype=np.float32)
            logits = np.zeros((1, self.n_labels), dtype=np.float32)
            binding = self.session.io_binding()
            binding.bind_ortvalue_input(self.input_name, OrtValue.ortvalue_from_numpy(inputs))
            binding.bind_ortvalue_output(self.output_name, OrtValue.ortvalue_from_numpy(logits))
            self._bound = (binding, inputs, logits)
        binding, inputs, logits = self._bound
        if frames.shape != inputs.shape[1:]:
            return self.logits(frames[None])
        inputs[0] = frames
        self.session.run_with_iobinding(binding)
        return logits.copy()

    def logits_of_windows(self, windows: np.ndarray) -> np.ndarray:
        """The split path over whole PCM windows `[batch, samples]` (the load check, tests, bench)."""
        return self.logits(np.stack([self.features.of_window(w) for w in windows]))


def probe_windows(sample_rate: int, window_samples: int) -> np.ndarray:
    """Silence, seeded noise at several levels, and a tone: the windows the load check compares on."""
    noise = [rms * seeded_normal(f"edgekd probe {i}", window_samples) for i, rms in enumerate(PROBE_NOISE_RMS)]
    tone_hz = min(PROBE_TONE_HZ, sample_rate / 4)
    tone = 0.3 * np.sin(2 * math.pi * tone_hz * np.arange(window_samples) / sample_rate)
    return np.stack([np.zeros(window_samples), *noise, tone]).astype(np.float32)


def compare(whole: np.ndarray, split: np.ndarray) -> tuple[float, bool]:
    """Largest |difference| of the logits, and whether every top label agrees."""
    return float(np.abs(whole - split).max()), bool((whole.argmax(-1) == split.argmax(-1)).all())


def compare_all(pairs: Iterable[tuple[np.ndarray, np.ndarray]]) -> tuple[float, bool]:
    """`compare` over several (whole, other) pairs: the largest difference, and whether every top label agrees."""
    diff, same = 0.0, True
    for whole, other in pairs:
        d, s = compare(whole, other)
        diff, same = max(diff, d), same and s
    return diff, same


def checked_once(cache: weakref.WeakKeyDictionary[Any, Any], model: Any, load: Callable[[Any], Any]) -> Any:
    """`load(model)`, remembered per model object (an unhashable stand-in, as in tests, is loaded every time)."""
    try:
        if model in cache:
            return cache[model]
    except TypeError:
        return load(model)
    result = load(model)
    cache[model] = result
    return result


def part_session(raw: bytes, threads: int = 1, providers: list[str] | None = None) -> Any:
    """An onnxruntime session for a graph carried in a model's metadata (a body, a step graph)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(raw, so, providers=providers or ["CPUExecutionProvider"])


def model_part_session(model: Any, path: Any, key: str, raw: bytes, what: str) -> Any:
    """`part_session` with the loaded model's threads and providers; a graph onnxruntime cannot load
    is a malformed `key` (ModelContractError naming `what` and onnxruntime's first line)."""
    threads = getattr(model, "threads", 1)
    try:
        return part_session(raw, threads, list(getattr(model, "providers", None) or []))
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelContractError(path, f"metadata {key}: onnxruntime cannot load {what}: {first}") from None


_cache: weakref.WeakKeyDictionary[Any, SplitModel | None] = weakref.WeakKeyDictionary()


def load_split(model: Any) -> SplitModel | None:
    """The checked split path of a loaded model, or None (no description, or it disagrees: logged).

    Raises ModelContractError for a malformed `edgekd.frontend` or `edgekd.body`. Checked once per
    model object.
    """
    return checked_once(_cache, model, _load_split)


def _load_split(model: Any) -> SplitModel | None:
    meta = model.meta
    if getattr(meta, "frontend", None) is None and getattr(meta, "body", None) is None:
        return None
    path = getattr(model, "path", meta.name)
    if meta.frontend is None:
        raise ModelContractError(path, f"metadata {KEY_BODY} without {KEY_FRONTEND}", "re-export the model")
    if meta.frontend.get("kind") != KIND_LOGMEL:
        log.info("model %s: front end of kind %r is not computed by this runtime; running whole windows",
                 path, meta.frontend.get("kind"))  # fmt: skip
        return None
    try:
        spec = LogMelSpec.from_dict(meta.frontend)
    except FrontEndError as exc:
        raise ModelContractError(path, f"metadata {KEY_FRONTEND}: {exc}", "see docs/model-contract.md") from None
    if spec.sample_rate != meta.sample_rate:
        raise ModelContractError(
            path, f"metadata {KEY_FRONTEND}: sample_rate={spec.sample_rate} but the model runs at {meta.sample_rate} Hz"
        )
    if meta.body is None:
        return None  # a description alone: nothing to run it with
    split = SplitModel(str(path), spec, _body_session(model, path, meta.body), meta.window_samples, meta.multi_label,
                       len(meta.labels))  # fmt: skip
    windows = probe_windows(meta.sample_rate, meta.window_samples)
    try:
        # as classify runs it (a batch), and as serve does (one window at a time: a graph's arithmetic
        # may differ with the batch size, so each against the whole graph at the same size)
        diff, same_labels = compare_all([
            (model.logits(windows), split.logits_of_windows(windows)),
            (np.concatenate([model.logits(w[None]) for w in windows]),
             np.concatenate([split.window_logits(split.features.of_window(w)) for w in windows])),
        ])  # fmt: skip
    except Exception as exc:  # onnxruntime's own error types: a body that cannot take the frames
        raise ModelContractError(path, f"metadata {KEY_BODY} does not run on the log-mel frames: {exc}") from None
    if not (diff <= PROBE_ATOL and same_labels):
        log.warning(
            "model %s: its front end and body differ from the whole graph by up to %.3g on probe windows%s "
            "(allowed %g); running whole windows",
            path, diff, "" if same_labels else ", with another top label", PROBE_ATOL,
        )  # fmt: skip
        return None
    log.info("model %s: split path checked (largest difference %.2g on %d probe windows)", path, diff, len(windows))
    return split


def _body_session(model: Any, path: Any, body: str) -> Any:
    try:
        raw = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ModelContractError(path, f"metadata {KEY_BODY} is not base64: {exc}", "re-export the model") from None
    session = model_part_session(model, path, KEY_BODY, raw, "it")
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(inputs[0].shape) != 3 or len(outputs) < 1:
        raise ModelContractError(
            path, f"metadata {KEY_BODY}: wants one input [batch, frames, n_mels] and logits out, has "
            f"{[(i.name, i.shape) for i in inputs]} -> {[o.name for o in outputs]}",
        )  # fmt: skip
    return session


@dataclass
class SplitScorer:
    """One model's windows scored from its stream's shared frames."""

    split: SplitModel
    stream: LogMelStream
    scored: int = 0  # windows scored from shared frames

    def scores(self, start: int) -> np.ndarray | None:
        """Scores of the window at stream sample `start`, or None where its frames are not all there
        (a window padded at the end of a stream): the caller then runs the whole window."""
        first = self.stream.frame_at(start)
        if first is None:
            return None
        frames = self.stream.frames(first, self.split.frames_per_window)
        if frames is None:
            return None
        self.scored += 1
        return logits_to_scores(self.split.window_logits(frames), self.split.multi_label)[0]


_hops_logged: weakref.WeakKeyDictionary[Any, set[int]] = weakref.WeakKeyDictionary()


def shared_hop(hop: int, frontend_hop: int, window: int) -> int:
    """The hop nearest `hop` that is a whole number (at least one) of front-end hops, never above the window."""
    frames = max(1, round(hop / frontend_hop))
    if frames * frontend_hop > window:
        frames = max(1, window // frontend_hop)
    return frames * frontend_hop


def served_hop(runner: ModelRunner) -> int:
    """The hop `runner`'s windows have once a pipeline serves it: its own, or, where it reads shared
    frames, the whole number of its front end's frames that SharedFrontEnds rounds it to."""
    split = load_split(runner.model)
    if split is None:
        return runner.spec.hop_samples
    return shared_hop(runner.spec.hop_samples, split.spec.hop, runner.meta.window_samples)


class SharedFrontEnds:
    """The front ends of the models that read one stream at one rate: one per distinct description."""

    def __init__(self, runners: Sequence[ModelRunner]) -> None:
        from edgekd.stateful import StatefulScorer, load_stream

        self.streams: dict[str, LogMelStream] = {}
        keep: dict[str, int] = {}
        attached: list[tuple[ModelRunner, SplitModel, str]] = []
        for r in runners:
            split = load_split(r.model)
            if split is None:
                continue
            key = split.spec.canonical()
            hop = served_hop(r)
            if hop != r.spec.hop_samples:
                rate = r.meta.sample_rate
                said = _hops_logged.setdefault(r.model, set())
                log.log(
                    logging.DEBUG if r.spec.hop_samples in said else logging.INFO,  # once per model and hop
                    "model %s: hop %.4g ms -> %.4g ms, a whole number of its front end's %.4g ms frames, "
                    "so that its windows share frames",
                    r.meta.name, 1e3 * r.spec.hop_samples / rate, 1e3 * hop / rate, 1e3 * split.spec.hop / rate,
                )  # fmt: skip
                said.add(r.spec.hop_samples)
                r.use_hop(hop)
            keep[key] = max(keep.get(key, 0), split.frames_per_window)
            attached.append((r, split, key))
        for key, frames in keep.items():
            spec = next(s.spec for _, s, k in attached if k == key)
            self.streams[key] = LogMelStream(spec, keep=frames)
        self.stateful: list[StatefulScorer] = []
        for r, split, key in attached:
            step = load_stream(r.model)
            if step is None:
                r.split = SplitScorer(split, self.streams[key])
            else:
                r.split = StatefulScorer(step, self.streams[key])
                self.stateful.append(r.split)

    def push(self, samples: np.ndarray) -> None:
        for stream in self.streams.values():
            stream.push(samples)

    def reset(self, position: int) -> None:
        for stream in self.streams.values():
            stream.reset(position)
        for scorer in self.stateful:
            scorer.reset()

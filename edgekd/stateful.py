"""A model run as a stateful step graph (`edgekd.stream`) over its stream's shared log-mel frames.

A file whose `edgekd.stream` holds a step graph (docs/model-contract.md, "Stream step") is run one
hop of new frames at a time: the graph takes the frames since the model's last window and its
state, and gives the logits of the window that ends at the last frame and the next state. Only
the new frames' work is done per window. `load_stream` checks at load, on the probe windows, that
the step graph fed from a zero state gives the whole graph's logits (within `PROBE_ATOL`, same top
label); a file that fails is not refused: one line names it and the largest difference, and the
model runs its split path or whole windows.

A model's state is its own (`StatefulScorer`); it starts at zeros and goes back to zeros after a
gap in the source. A window whose frames go back further than the last frame fed, or that the
model's state did not follow (a window skipped by a gate), is computed from a zero state on the
window's own frames: the logits depend on the last `receptive_field_frames` frames only, so that
gives the same numbers.
"""

from __future__ import annotations

import base64
import binascii
import logging
import weakref
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgekd.contract import KEY_FRONTEND, KEY_STREAM, ModelContractError
from edgekd.frontend import KIND_LOGMEL, FrontEndError, LogMelFrames, LogMelSpec, LogMelStream
from edgekd.model import logits_to_scores
from edgekd.split import PROBE_ATOL, checked_once, compare_all, model_part_session, probe_windows

log = logging.getLogger(__name__)

EQUALS = ("whole_graph", "own_model")
PROBE_STEPS = (1, 5, 7)  # frames per call in the load check: the logits must not depend on it


class StreamStepError(ValueError):
    """A malformed `edgekd.stream`; the message names the field."""


class StepModel:
    """A step graph, its state's description, and how many frames its logits depend on."""

    def __init__(self, name: str, spec: LogMelSpec, session: Any, stream: dict[str, Any], window_samples: int,
                 multi_label: bool, n_labels: int) -> None:  # fmt: skip
        self.name = name
        self.n_labels = n_labels
        self.spec = spec
        self.session = session
        self.multi_label = multi_label
        self.frames_per_window = spec.n_frames(window_samples)
        self.receptive_field = int(stream["receptive_field_frames"])
        self.equals = str(stream["equals"])
        self.state_names = [str(s["name"]) for s in stream["state"]]
        self.state_shapes = [tuple(int(d) for d in s["shape"]) for s in stream["state"]]
        self.inputs = ["frames", *(f"state_in.{n}" for n in self.state_names)]
        self.outputs = ["logits", *(f"state_out.{n}" for n in self.state_names)]
        self._check_io()

    def _check_io(self) -> None:
        have_in = [i.name for i in self.session.get_inputs()]
        have_out = [o.name for o in self.session.get_outputs()]
        if have_in != self.inputs or have_out != self.outputs:
            raise StreamStepError(f"the step graph has inputs {have_in} and outputs {have_out}; its state "
                                  f"says {self.inputs} -> {self.outputs}")  # fmt: skip
        frames = self.session.get_inputs()[0].shape
        if len(frames) != 3 or frames[1] != self.spec.n_mels or isinstance(frames[2], int):
            raise StreamStepError(f"input 'frames' is {frames}; it must be [1, {self.spec.n_mels}, frames] with "
                                  "the frame axis dynamic (the runtime feeds a hop's frames per call)")

    def zero_state(self) -> list[np.ndarray]:
        return [np.zeros(s, dtype=np.float32) for s in self.state_shapes]

    def scores(self, logits: np.ndarray) -> np.ndarray:
        return logits_to_scores(logits, self.multi_label)

    def logits_of_frames(self, frames: np.ndarray, chunk: int | None = None) -> np.ndarray:
        """Logits `[n_labels]` of one window's frames `[frames, n_mels]` fed from a zero state, the way
        `serve` feeds them (`BoundState`)."""
        state = BoundState(self)
        size = chunk or len(frames)
        logits = None
        for i in range(0, len(frames), size):
            logits = state.advance(frames[i : i + size])
        assert logits is not None
        return logits[0]

    def logits_of_windows(self, windows: np.ndarray, chunk: int | None = None) -> np.ndarray:
        features = LogMelFrames(self.spec)
        return np.stack([self.logits_of_frames(features.of_window(w), chunk) for w in windows])


class BoundState:
    """One model's state on one stream, kept in onnxruntime's buffers: two sets of state arrays bound
    to the step graph's inputs and outputs (IOBinding), each call reading one set and writing the
    other. Per call only the new frames are copied in and the logits out; nothing else is allocated,
    and onnxruntime's per-call work on the feed and fetch dictionaries is skipped."""

    def __init__(self, step: StepModel) -> None:
        from onnxruntime import OrtValue

        self.step = step
        self._ortvalue = OrtValue.ortvalue_from_numpy
        self._sets = [step.zero_state() for _ in range(2)]
        self._logits = np.zeros((1, step.n_labels), dtype=np.float32)
        self._bindings = []
        for k in range(2):
            binding = step.session.io_binding()
            for name, array in zip(step.inputs[1:], self._sets[k]):
                binding.bind_ortvalue_input(name, self._ortvalue(array))
            binding.bind_ortvalue_output(step.outputs[0], self._ortvalue(self._logits))
            for name, array in zip(step.outputs[1:], self._sets[1 - k]):
                binding.bind_ortvalue_output(name, self._ortvalue(array))
            self._bindings.append(binding)
        self._bound = [-1, -1]  # the frame count each binding's 'frames' input holds
        self._frames: dict[int, tuple[np.ndarray, Any]] = {}  # frame count -> (array, its OrtValue)
        self._current = 0  # the set the next call reads

    def zero(self) -> None:
        """Back to a zero state."""
        for array in self._sets[self._current]:
            array.fill(0.0)

    def advance(self, frames: np.ndarray) -> np.ndarray:
        """`[n, n_mels]` new frames -> the `[1, n_labels]` logits of the window ending at the last one."""
        n = len(frames)
        held = self._frames.get(n)
        if held is None:
            array = np.zeros((1, self.step.spec.n_mels, n), dtype=np.float32)
            held = self._frames[n] = (array, self._ortvalue(array))
        held[0][0] = frames.T
        k = self._current
        binding = self._bindings[k]
        if self._bound[k] != n:
            binding.bind_ortvalue_input("frames", held[1])
            self._bound[k] = n
        self.step.session.run_with_iobinding(binding)
        self._current = 1 - k
        return self._logits.copy()


def _parse(path: Any, raw: dict[str, Any]) -> None:
    def bad(what: str) -> ModelContractError:
        return ModelContractError(path, f"metadata {KEY_STREAM}: {what}", "see docs/model-contract.md")

    for key in ("graph", "frames_per_step", "receptive_field_frames", "state", "equals"):
        if key not in raw:
            raise bad(f"lacks {key!r}")
    for key in ("frames_per_step", "receptive_field_frames"):
        value = raw[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise bad(f"{key}={value!r} must be a positive integer")
    if raw["equals"] not in EQUALS:
        raise bad(f"equals={raw['equals']!r} must be one of {', '.join(EQUALS)}")
    state = raw["state"]
    if not isinstance(state, list) or not all(
        isinstance(s, dict) and isinstance(s.get("name"), str) and isinstance(s.get("shape"), list)
        and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in s["shape"]) for s in state
    ):  # fmt: skip
        raise bad("state must be a list of {\"name\": str, \"shape\": [int, ...]}")


_cache: weakref.WeakKeyDictionary[Any, StepModel | None] = weakref.WeakKeyDictionary()


def load_stream(model: Any) -> StepModel | None:
    """The checked stateful path of a loaded model, or None (no step graph, or it disagrees: logged).

    Raises ModelContractError for a malformed `edgekd.stream`. Checked once per model object.
    """
    return checked_once(_cache, model, _load_stream)


def _load_stream(model: Any) -> StepModel | None:
    meta = model.meta
    raw = getattr(meta, "stream", None)
    if raw is None:
        return None
    path = getattr(model, "path", meta.name)
    _parse(path, raw)
    if meta.frontend is None:
        raise ModelContractError(path, f"metadata {KEY_STREAM} without {KEY_FRONTEND}", "re-export the model")
    if meta.frontend.get("kind") != KIND_LOGMEL:
        return None
    try:
        spec = LogMelSpec.from_dict(meta.frontend)
        raw_graph = base64.b64decode(raw["graph"], validate=True)
    except FrontEndError as exc:
        raise ModelContractError(path, f"metadata {KEY_FRONTEND}: {exc}") from None
    except (binascii.Error, ValueError, TypeError) as exc:
        raise ModelContractError(path, f"metadata {KEY_STREAM}: graph is not base64: {exc}", "re-export the model") from None
    session = model_part_session(model, path, KEY_STREAM, raw_graph, "its graph")
    try:
        step = StepModel(str(path), spec, session, raw, meta.window_samples, meta.multi_label, len(meta.labels))
    except StreamStepError as exc:
        raise ModelContractError(path, f"metadata {KEY_STREAM}: {exc}") from None
    if step.receptive_field > step.frames_per_window:
        log.warning("model %s: its step graph looks back %d frames, more than its window's %d; running whole windows",
                    path, step.receptive_field, step.frames_per_window)  # fmt: skip
        return None
    windows = probe_windows(meta.sample_rate, meta.window_samples)
    try:
        ref = model.logits(windows)
        diff, same = compare_all((ref, step.logits_of_windows(windows, chunk)) for chunk in PROBE_STEPS)
    except Exception as exc:  # onnxruntime's own error types: a graph that cannot take the frames or state
        raise ModelContractError(path, f"metadata {KEY_STREAM}: its graph does not run on the frames: {exc}") from None
    if step.equals == "whole_graph" and not (diff <= PROBE_ATOL and same):
        log.warning(
            "model %s: its step graph differs from the whole graph by up to %.3g on probe windows%s (allowed %g); "
            "running whole windows",
            path, diff, "" if same else ", with another top label", PROBE_ATOL,
        )  # fmt: skip
        return None
    log.info("model %s: stateful path checked (largest difference %.2g on %d probe windows, %s)",
             path, diff, len(windows), step.equals)  # fmt: skip
    return step


@dataclass
class StatefulScorer:
    """One model's windows scored by its step graph, fed the new frames of its stream since its last window."""

    step: StepModel
    stream: LogMelStream
    scored: int = 0  # windows scored by the step graph
    restarts: int = 0  # windows computed from a zero state (after a reset, a gap, a skipped window)
    next_frame: int | None = None  # the first frame the state has not seen; None: zero state
    last: np.ndarray | None = None  # the logits of the window that ends at next_frame
    state: BoundState = field(init=False)

    def __post_init__(self) -> None:
        self.state = BoundState(self.step)

    def reset(self) -> None:
        """Back to a zero state (a gap in the source)."""
        self.next_frame, self.last = None, None

    def scores(self, start: int) -> np.ndarray | None:
        """Scores of the window at stream sample `start`, or None where its frames are not all there."""
        logits = self.logits(start)
        return None if logits is None else logits_to_scores(logits, self.step.multi_label)[0]

    def logits(self, start: int) -> np.ndarray | None:
        first = self.stream.frame_at(start)
        if first is None:
            return None
        end = first + self.step.frames_per_window
        if self.next_frame == end and self.last is not None:  # the same window again
            return self.last
        begin, restart = self.next_frame, False
        if begin is None or not end - self.step.frames_per_window <= begin < end:
            begin, restart = end - self.step.receptive_field, True
        frames = self.stream.frames(begin, end - begin)
        if frames is None:
            return None
        if restart:
            self.state.zero()
            self.restarts += 1
        self.last = self.state.advance(frames)
        self.next_frame = end
        self.scored += 1
        return self.last

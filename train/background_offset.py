"""A background offset: lower a detector's background logits by one constant, chosen on validation clips.

A keyword student trained on streams sees far more background windows (speech, noise, partial
words) than keyword clips, so it learns a prior that favours `_unknown_` and `_silence_`. On
isolated clips, where keywords are most of what it hears, that prior costs accuracy: its errors
move from one keyword for another to keyword -> background. Subtracting a constant `b` from the
background labels' logits undoes a prior shift of exp(b) (logit adjustment, Menon et al., "Long-tail
learning via logit adjustment", ICLR 2021, with one constant for the background labels).

`b` is chosen on the validation clips of a split (the highest accuracy, the smallest `b` among
equals) and written into the graph itself: an `Add` after the logits, so every ONNX runtime gets
it, and the stream parts (`edgekd.frontend`/`edgekd.body`) are cut again from the new graph and
checked. A stream operating point chosen before the offset no longer fits: choose it again
(`edgekd train streams choose`) on the offset file. The metadata's training record keeps `b`, the
grid, and the validation accuracy before and after.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgekd.contract import KEY_BODY, KEY_FRONTEND, KEY_OPERATING_POINT, KEY_STREAM, parse_props
from edgekd_train.export import set_training

log = logging.getLogger(__name__)

OFFSET_GRID = tuple(np.round(np.arange(0.0, 4.01, 0.25), 2))  # the offsets tried, in logit units
OFFSET_NODE = "edgekd_background_offset"


class BackgroundOffsetError(ValueError):
    pass


@dataclass(frozen=True)
class OffsetChoice:
    offset: float
    accuracy_before: float
    accuracy_after: float
    clips: int
    accuracies: dict[str, float]  # offset -> validation accuracy, the whole grid


def offset_logits(logits: np.ndarray, background: list[int], offset: float) -> np.ndarray:
    out = np.array(logits, dtype=np.float64)
    out[:, background] -= offset
    return out


def choose_offset(logits: np.ndarray, y: np.ndarray, background: list[int],
                  grid: tuple[float, ...] = OFFSET_GRID) -> OffsetChoice:  # fmt: skip
    """The offset of `grid` with the highest accuracy on these (validation) logits; the smallest among equals."""
    if not background:
        raise BackgroundOffsetError("the model has no background labels: nothing to offset")
    y = np.asarray(y)
    acc = {float(b): float((offset_logits(logits, background, b).argmax(1) == y).mean()) for b in grid}
    best = max(acc.values())
    chosen = min(b for b, a in acc.items() if a == best)
    before = float((np.asarray(logits).argmax(1) == y).mean())
    return OffsetChoice(chosen, before, best, len(y), {f"{b:g}": round(a, 4) for b, a in acc.items()})


def with_offset(proto: onnx.ModelProto, background: list[int], n_labels: int, offset: float) -> onnx.ModelProto:
    """A copy of `proto` whose output is its logits less `offset` on the `background` labels."""
    if any(n.name == OFFSET_NODE for n in proto.graph.node):
        raise BackgroundOffsetError("the graph already has a background offset; start from the file without one")
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    g = out.graph
    if len(g.output) != 1:
        raise BackgroundOffsetError(f"the graph has {len(g.output)} outputs; the contract has one (logits)")
    logits = g.output[0].name
    raw = f"{logits}_before_background_offset"
    for node in g.node:  # the node that wrote the logits now writes `raw`
        node.output[:] = [raw if o == logits else o for o in node.output]
    vector = np.zeros(n_labels, dtype=np.float32)
    vector[background] = -offset
    g.initializer.append(numpy_helper.from_array(vector, f"{OFFSET_NODE}_vector"))
    g.node.append(helper.make_node("Add", [raw, f"{OFFSET_NODE}_vector"], [logits], name=OFFSET_NODE))
    onnx.checker.check_model(out)
    return out


def write_offset(src: str | Path, dst: str | Path, split: str | Path) -> OffsetChoice:
    """Choose the offset on the validation clips of `split`, write `src` with it to `dst` (never in place)."""
    from edgekd.model import Model
    from edgekd_train.onnx_eval import split_windows
    from edgekd_train.stream_parts import with_stream_parts

    src, dst = Path(src), Path(dst)
    if src.resolve() == dst.resolve():
        raise BackgroundOffsetError(f"{dst} is the input file: write the copy elsewhere")
    model = Model(src)
    meta = model.meta
    if meta.multi_label:
        raise BackgroundOffsetError(f"{src} is multi-label: its labels do not compete, so there is no prior to undo")
    background = [meta.labels.index(b) for b in meta.background]
    try:
        x, y = split_windows(split, "val", meta.labels, meta.sample_rate, meta.window_samples)
    except ValueError as exc:  # a split of another task, or no clip that decodes
        raise BackgroundOffsetError(f"split {split}: {exc}; pass the split the model was trained on") from None
    logits = np.concatenate([model.logits(x[i : i + 64]) for i in range(0, len(x), 64)])
    choice = choose_offset(logits, y, background)
    proto = onnx.load(str(src))
    props = {p.key: p.value for p in proto.metadata_props}
    if KEY_STREAM in props:
        raise BackgroundOffsetError(f"{src} carries a step graph ({KEY_STREAM}); offsetting it is not supported")
    out = with_offset(proto, background, len(meta.labels), choice.offset)
    if KEY_BODY in props:
        out, report = with_stream_parts(out, json.loads(props[KEY_FRONTEND]), x[:16])
        log.info("stream parts cut again from the offset graph: split vs whole %.2g", report.max_abs_diff)
    if KEY_OPERATING_POINT in props:
        # chosen for the logits before the offset: it does not hold for the new ones
        kept = [p for p in out.metadata_props if p.key != KEY_OPERATING_POINT]
        del out.metadata_props[:]
        out.metadata_props.extend(kept)
        log.warning("%s: its operating point was chosen without the offset and is dropped; choose it again "
                    "(`edgekd train streams choose`)", src)  # fmt: skip
    set_training(out, {"background_offset": {**asdict(choice), "labels": list(meta.background),
                                             "chosen_on": f"val clips of {Path(split).name}", "source": src.name}})
    parse_props(str(dst), {p.key: p.value for p in out.metadata_props})  # still a valid contract file
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    tmp.write_bytes(out.SerializeToString())
    os.replace(tmp, dst)
    check = Model(dst)
    after = float((check.logits(x).argmax(1) == y).mean())
    if abs(after - choice.accuracy_after) > 1e-9:
        raise BackgroundOffsetError(f"{dst}: validation accuracy {after:.4f} where the offset logits gave "
                                    f"{choice.accuracy_after:.4f}")  # fmt: skip
    return choice

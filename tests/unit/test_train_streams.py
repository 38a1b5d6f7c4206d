"""Stream benchmark: event matching on hand-made detections, a reproducible stream builder whose
event list matches its audio, and scoring through the runtime's own pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("soundfile")

from edgekd.contract import KEY_BACKGROUND, KEY_CONTRACT  # noqa: E402
from edgekd.model import Model  # noqa: E402
from tests.onnx_models import energy_model  # noqa: E402
from edgekd_train.data.clips import Clip  # noqa: E402
from edgekd_train.streams.build import (  # noqa: E402
    Event,
    StreamPlan,
    StreamSources,
    active_span,
    build_stream,
    read_stream,
    write_stream,
)
from edgekd_train.streams.score import Detection, StreamSet, choose, match, score_model, sweep  # noqa: E402

RATE = 16000
W = 1.0


def ev(start: float, end: float, label: str = "yes") -> Event:
    return Event(start, end, label, "test")


def det(t: float, label: str = "yes") -> Detection:
    return Detection(t, label, 0.9)


# ---------------------------------------------------------------- matching


def test_a_detection_inside_the_event_is_a_hit_with_its_latency():
    m = match([ev(10.0, 10.6)], [det(10.9)], W, 100.0)
    assert (m.found, m.false_alarms, m.wrong_label_events) == (1, 0, 0)
    assert m.latencies == [pytest.approx(0.3)]


def test_a_late_hit_inside_the_tolerance_counts_and_one_after_it_is_a_false_alarm():
    assert match([ev(10.0, 10.6)], [det(12.0)], W, 100.0, tolerance_s=0.5).found == 1  # window 11.0-12.0 overlaps 10.0-11.1
    late = match([ev(10.0, 10.6)], [det(12.2)], W, 100.0, tolerance_s=0.5)  # window 11.2-12.2: past 11.1
    assert (late.found, late.false_alarms) == (0, 1)


def test_a_detection_far_from_any_event_is_a_false_alarm():
    m = match([ev(10.0, 10.6)], [det(50.0), det(10.8)], W, 3600.0)
    assert (m.found, m.false_alarms) == (1, 1)
    assert m.false_alarms_per_hour == pytest.approx(1 / ((3600.0 - (10.6 + W + 0.5 - 10.0)) / 3600.0))


def test_a_wrong_label_is_counted_and_not_a_hit_or_false_alarm():
    m = match([ev(10.0, 10.6, "yes")], [det(10.8, "no")], W, 100.0)
    assert (m.found, m.false_alarms, m.wrong_label_events, m.wrong_label_detections) == (0, 0, 1, 1)


def test_a_wrong_label_next_to_the_right_one_leaves_the_event_found():
    m = match([ev(10.0, 10.6, "yes")], [det(10.7, "no"), det(10.9, "yes")], W, 100.0)
    assert (m.found, m.wrong_label_events, m.wrong_label_detections) == (1, 0, 1)


def test_two_detections_of_one_event_count_once():
    m = match([ev(10.0, 10.6)], [det(10.7), det(10.95), det(11.2)], W, 100.0)
    assert (m.found, m.false_alarms) == (1, 0) and m.latencies == [pytest.approx(0.1)]


def test_background_labels_are_never_detections_even_if_passed_in():
    m = match([ev(10.0, 10.6)], [det(50.0, "_silence_")], W, 100.0, background=["_silence_"])
    assert (m.found, m.false_alarms) == (0, 0)


def test_a_detection_between_two_events_goes_to_the_one_it_overlaps_most():
    events = [ev(10.0, 10.5, "yes"), ev(11.2, 11.8, "no")]
    m = match(events, [det(11.9, "no")], W, 100.0, tolerance_s=0.5)  # window 10.9-11.9: 0.1 of yes(+tol), 0.7 of no
    assert m.per_label == {"yes": [0, 1], "no": [1, 1]}


def test_per_label_recall_and_the_sum_over_streams():
    a = match([ev(1.0, 1.5, "yes"), ev(5.0, 5.5, "no")], [det(1.6, "yes")], W, 60.0)
    b = match([ev(1.0, 1.5, "no")], [det(1.6, "no"), det(30.0, "no")], W, 60.0)
    s = a.add(b).summary()
    assert s["recall_per_label"] == {"no": 0.5, "yes": 1.0} and s["recall"] == pytest.approx(2 / 3)
    assert s["false_alarms"] == 1 and s["events"] == 3
    c = a.add(b).add(match([], [det(10.0, "yes"), det(20.0, "no")], W, 60.0))
    assert c.summary()["false_alarms_per_label"] == {"no": 2, "yes": 1}  # the label of each false detection


def test_choose_takes_the_best_recall_within_the_false_alarm_aim():
    pts = [{"recall": 0.95, "false_alarms_per_hour": 8.0, "threshold": 0.5, "smoothing": 1},
           {"recall": 0.90, "false_alarms_per_hour": 0.9, "threshold": 0.9, "smoothing": 1},
           {"recall": 0.90, "false_alarms_per_hour": 0.4, "threshold": 0.95, "smoothing": 2},
           {"recall": 0.70, "false_alarms_per_hour": 0.0, "threshold": 0.999, "smoothing": 1}]
    assert choose(pts, 1.0)["threshold"] == 0.95
    assert choose(pts, -1.0) is None


# ---------------------------------------------------------------- building


def tone(freq: float, seconds: float, pad_s: float = 0.2) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    x = 0.5 * np.sin(2 * np.pi * freq * t)
    pad = np.zeros(int(pad_s * RATE))
    return np.concatenate([pad, x, pad]).astype(np.float32)


@pytest.fixture
def sources(tmp_path: Path) -> StreamSources:
    import soundfile as sf

    def clips(label: str, freq: float, n: int) -> list[Clip]:
        out = []
        for i in range(n):
            p = tmp_path / f"{label}{i}.flac"
            sf.write(p, tone(freq, 0.3 + 0.1 * i), RATE)
            out.append(Clip(p, label, f"{label}{i}", "synthetic"))
        return out

    rng = np.random.default_rng(1)
    return StreamSources(
        task="beeps", part="test", rate=RATE,
        events=clips("beep", 3000.0, 4),
        background={"speech": clips("hum", 200.0, 3)},
        noise=[(0.1 * rng.standard_normal(5 * RATE)).astype(np.float32)],
    )


def decode(path: Path, rate: int) -> np.ndarray:
    import soundfile as sf

    x, r = sf.read(path, dtype="float32")
    assert r == rate
    return x


def band_energy(x: np.ndarray, freq: float) -> np.ndarray:
    """Energy at `freq` in 10 ms frames."""
    hop = RATE // 100
    n = len(x) // hop
    frames = x[: n * hop].reshape(n, hop) * np.hanning(hop)
    spec = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    return spec[:, int(round(freq * hop / RATE))]


def test_the_same_seed_gives_the_same_stream_and_another_seed_another(sources):
    a = build_stream(sources, 60.0, seed=3, decode=decode)
    b = build_stream(sources, 60.0, seed=3, decode=decode)
    c = build_stream(sources, 60.0, seed=4, decode=decode)
    assert np.array_equal(a.audio, b.audio) and a.events == b.events
    assert a.events != c.events


def test_the_event_list_matches_the_audio(sources):
    plan = StreamPlan(bed_dbfs=(-70.0, -65.0), kind_weights={"speech": 1.0})  # no white-noise bursts at 3 kHz
    s = build_stream(sources, 90.0, seed=0, decode=decode, plan=plan)
    assert len(s.events) >= 4
    beep = band_energy(s.audio, 3000.0)
    inside = np.zeros(len(beep), dtype=bool)
    for e in s.events:
        assert e.label == "beep" and 0 <= e.start < e.end <= s.seconds
        frames = slice(int(e.start * 100) + 1, int(e.end * 100) - 1)
        assert beep[frames].min() > 1e-3, e  # the beep sounds over its whole span
        inside[int(e.start * 100) - 1 : int(e.end * 100) + 2] = True
    assert beep[~inside].max() < 1e-4 * beep[inside].max()  # and nowhere else


def test_a_written_stream_reads_back_with_its_events(sources, tmp_path):
    s = build_stream(sources, 30.0, seed=0, decode=decode)
    write_stream(s, tmp_path / "out", "stream-000")
    audio, rate, events, info = read_stream(tmp_path / "out" / "stream-000.json")
    assert rate == RATE and len(audio) == len(s.audio) and np.max(np.abs(audio - s.audio)) < 1e-4
    assert [e.label for e in events] == [e.label for e in s.events]
    assert info["n_events"] == len(s.events) and info["seed"] == 0
    assert json.loads((tmp_path / "out" / "stream-000.json").read_text())["task"] == "beeps"


def test_active_span_skips_the_silence_around_a_clip():
    a, b = active_span(tone(1000.0, 0.5, pad_s=0.3), RATE)
    assert abs(a / RATE - 0.3) <= 0.011 and abs(b / RATE - 0.8) <= 0.011


# ---------------------------------------------------------------- scoring through the runtime


@pytest.fixture
def loud_detector(tmp_path: Path) -> Model:
    path = energy_model(tmp_path / "loud.onnx", labels=("quiet", "loud"), threshold_db=-75.0,
                        props_override={KEY_CONTRACT: "2", KEY_BACKGROUND: '["quiet"]'})
    return Model(path)


def test_score_and_sweep_run_the_serve_pipeline_on_streams(sources, loud_detector, tmp_path):
    s = build_stream(sources, 120.0, seed=0, decode=decode,
                     plan=StreamPlan(background_dbfs=(-90.0, -88.0), event_dbfs=(-12.0, -10.0), bed_dbfs=(-95.0, -92.0),
                                     kind_weights={"speech": 1.0}))
    write_stream(s, tmp_path / "streams", "s0")
    streams = StreamSet.read(tmp_path / "streams")
    events = [Event(e.start, e.end, "loud", e.source) for e in s.events]  # the detector's label for a beep
    streams = StreamSet([(name, a, r, events) for name, a, r, _ in streams.items])
    m = score_model(loud_detector, streams, {"defaults": {"threshold": 0.55, "refractory": 1.0}})
    assert m.events == len(events) and m.recall == 1.0 and m.false_alarms == 0
    points = sweep(loud_detector, streams, thresholds=[0.55, 0.999999], smoothings=[1], refractory_s=1.0)
    assert points[0]["recall"] == 1.0 and points[0]["false_alarms_per_hour"] == 0.0
    assert points[1]["recall"] < 1.0  # a threshold the detector's scores never reach finds nothing


@pytest.mark.slow
def test_an_operating_point_written_into_a_model_is_read_back_and_applied_by_serve(loud_detector, tmp_path):
    import subprocess
    import sys

    import soundfile as sf

    from edgekd_train.streams.report import operating_point, write_operating_point

    chosen = {"hop_s": 0.5, "smoothing": 1, "threshold": 0.97, "refractory_s": 30.0, "recall": 0.9,
              "false_alarms_per_hour": 0.5, "wrong_label_rate": 0.0, "events": 10}
    out = write_operating_point(loud_detector.path, tmp_path / "with-op.onnx", operating_point(chosen, 1.0, "unit test"),
                                ["quiet"])
    again = Model(out)
    assert again.meta.operating_point.threshold == 0.97 and again.meta.background == ("quiet",)
    # 4 s of loud noise: every window is 'loud'; the file's 30 s refractory allows one detection
    rng = np.random.default_rng(0)
    clip = tmp_path / "loud.wav"
    sf.write(clip, (0.3 * rng.standard_normal(4 * RATE)).astype(np.float32), RATE)
    run = subprocess.run([sys.executable, "-m", "edgekd", "serve", "--model", str(out), "--source", str(clip),
                          "--stdout"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    results = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    results = [r for r in results if r.get("task") == "loudness"]
    assert results and all(r["label"] == "loud" for r in results)
    assert sum(r["detected"] for r in results) == 1  # the refractory period came from the file
    assert len(results) == 1  # mode "events" from the file: a steady label publishes only its detection


@pytest.mark.parametrize("smoothing, threshold, refractory", [(1, 0.55, 0.0), (2, 0.55, 1.0), (3, 0.8, 2.5)])
def test_the_sweep_replay_gives_what_a_full_pipeline_pass_gives(sources, loud_detector, smoothing, threshold, refractory):
    from edgekd_train.streams.score import detections, replay, window_scores

    s = build_stream(sources, 90.0, seed=2, decode=decode,
                     plan=StreamPlan(background_dbfs=(-90.0, -80.0), event_dbfs=(-30.0, -10.0), bed_dbfs=(-95.0, -92.0),
                                     kind_weights={"speech": 1.0}))
    cfg = {"defaults": {"threshold": threshold, "smoothing": smoothing, "refractory": refractory, "mode": "events"},
           "model": {"hop": 0.2}}
    full = detections(loud_detector, s.audio, RATE, cfg)
    times, scores = window_scores(loud_detector, s.audio, RATE, hop_s=0.2)
    assert [(round(d.t, 6), d.label) for d in replay(loud_detector, times, scores, cfg)] == [
        (round(d.t, 6), d.label) for d in full
    ] and full


# ---------------------------------------------------------------- per-label thresholds


def _point(smoothing: float, threshold: float, per_label: dict[str, list[int]], hours: float = 2.0) -> dict:
    events = sum(v[1] for v in per_label.values())
    return {"smoothing": smoothing, "threshold": threshold, "refractory_s": 1.0, "hop_s": 0.25, "non_event_hours": hours,
            "events": events, "per_label": per_label, "recall": sum(v[0] for v in per_label.values()) / events,
            "false_alarms_per_hour": sum(v[2] for v in per_label.values()) / hours}


def test_per_label_thresholds_spend_the_false_alarms_where_they_find_the_most():
    from edgekd_train.streams.score import choose_per_label

    # "go" raises many false alarms at low thresholds; "yes" almost none: one threshold for both would
    # have to be the high one, per label "yes" can stay low
    pts = [_point(1, 0.5, {"yes": [18, 20, 1], "go": [19, 20, 30]}),
           _point(1, 0.9, {"yes": [15, 20, 0], "go": [16, 20, 6]}),
           _point(1, 0.99, {"yes": [10, 20, 0], "go": [12, 20, 2]})]
    got = choose_per_label(pts, max_false_alarms_per_hour=1.5)  # 3 false alarms in 2 h
    assert got["thresholds"] == {"yes": 0.5, "go": 0.99}
    assert (got["found"], got["false_alarms"]) == (30, 3) and got["recall"] == 30 / 40
    assert got["threshold"] == 0.99 and got["false_alarms_per_hour"] == 1.5
    assert choose(pts, 1.5)["recall"] == 22 / 40  # the best single threshold within the aim finds fewer
    # ties in found events go to fewer false alarms, then to higher thresholds
    tie = [_point(1, 0.5, {"yes": [10, 10, 2]}), _point(1, 0.8, {"yes": [10, 10, 0]}), _point(1, 0.9, {"yes": [10, 10, 0]})]
    assert choose_per_label(tie, 5.0)["thresholds"] == {"yes": 0.9}
    assert choose_per_label(pts, 0.25) is None  # half an alarm: no choice avoids every false alarm


def speech_with_keywords(data_dir: Path, labels: tuple[str, ...], per_label: int) -> tuple[np.ndarray, list[Event]]:
    """Real RAVDESS speech (half scale) with a real Speech Commands keyword (half scale) after each
    utterance, and the keywords' audible spans as events."""
    from edgekd_train.data.audio import load_audio

    words = [p for label in labels for p in sorted((data_dir / "speech_commands" / label).glob("*"))[:per_label]]
    speech = sorted((data_dir / "ravdess").rglob("*.flac"))[: len(words)]
    parts, events, t = [], [], 0.0
    for bg_path, word in zip(speech, words):
        bg = 0.5 * load_audio(bg_path, RATE)
        w = 0.5 * load_audio(word, RATE)
        a, b = active_span(w, RATE)
        start = t + len(bg) / RATE
        events.append(Event(start + a / RATE, start + b / RATE, word.parent.name, "test"))
        parts += [bg, w]
        t = start + len(w) / RATE
    return np.concatenate(parts).astype(np.float32), events


@pytest.mark.slow
def test_per_label_thresholds_replay_to_the_sums_of_the_sweep(data_dir):
    """On a real keyword model over real speech and real keywords: the runtime's post-processing with
    the chosen per-label thresholds finds exactly the events and false alarms the sweep's sums promise."""
    from edgekd_train.streams.score import choose_per_label, record_windows, replay_streams

    model = Model(Path(__file__).resolve().parents[2] / "models" / "wav2tiny-keyword.onnx")
    audio, events = speech_with_keywords(data_dir, ("yes", "no", "go", "stop"), 3)
    streams = StreamSet([("s", audio, RATE, events)])
    recorded = record_windows(model, streams, 0.25)
    points = sweep(model, streams, [0.5, 0.7, 0.9, 0.99], [1, 3], 1.0, hop_s=0.25, recorded=recorded)
    got = choose_per_label(points, max_false_alarms_per_hour=3600.0 * 4 / (len(audio) / RATE))  # about 4 alarms
    assert got is not None
    cfg = {"defaults": {"threshold": got["threshold"], "smoothing": got["smoothing"], "refractory": 1.0, "mode": "events"},
           "model": {"hop": 0.25, "thresholds": got["thresholds"]}}
    check = replay_streams(model, streams, recorded, cfg)
    assert (check.found, check.false_alarms) == (got["found"], got["false_alarms"])
    single = choose(points, got["false_alarms_per_hour"] + 1e-9)
    assert single is None or got["found"] >= round(single["recall"] * single["events"])


@pytest.mark.slow
def test_streams_choose_per_label_writes_thresholds_the_runtime_reads_back(data_dir, tmp_path, monkeypatch, capsys):
    """`edgekd train streams choose --per-label` on validation streams writes an operating point with a
    threshold per target label, which the runtime reads back."""
    from edgekd_train.streams.build import STREAM_FORMAT, Stream
    from tests.cli_in_process import run

    audio, events = speech_with_keywords(data_dir, ("yes", "no"), 4)
    stream = Stream(audio, RATE, events, {"format": STREAM_FORMAT, "part": "val"})
    write_stream(stream, tmp_path / "val", "s0")
    model = Path(__file__).resolve().parents[2] / "models" / "wav2tiny-keyword.onnx"
    code, out, err = run(monkeypatch, capsys, "train", "streams", "choose", model, "--streams", tmp_path / "val",
                         "--max-fa-per-hour", "2000", "--per-label", "--write", tmp_path / "chosen.onnx")
    assert code == 0, err
    op = Model(tmp_path / "chosen.onnx").meta.operating_point
    targets = [label for label in Model(model).meta.labels if label not in ("_unknown_", "_silence_")]
    assert sorted(op.thresholds) == sorted(targets) and op.threshold == max(op.thresholds.values())
    assert "thresholds yes" in out and "written to" in out

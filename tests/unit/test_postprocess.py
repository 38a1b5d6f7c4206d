import numpy as np
import pytest

from edgekd.postprocess import PostConfig, PostProcessor

LABELS = ("cough", "speech", "silence")


def pp(**kw):
    return PostProcessor(LABELS, PostConfig(**kw))


def test_smoothing_is_the_mean_of_the_last_n_windows():
    p = pp(smoothing=3)
    d1 = p.step(np.array([1.0, 0.0, 0.0]), 0.0)
    assert d1.scores["cough"] == 1.0
    p.step(np.array([0.0, 1.0, 0.0]), 0.25)
    d3 = p.step(np.array([0.0, 1.0, 0.0]), 0.5)
    assert d3.label == "speech" and d3.scores["speech"] == pytest.approx(2 / 3) and d3.scores["cough"] == pytest.approx(1 / 3)
    d4 = p.step(np.array([0.0, 1.0, 0.0]), 0.75)  # the first window has left the average
    assert d4.scores["speech"] == pytest.approx(1.0)


def test_per_label_threshold_decides_detection():
    p = pp(thresholds={"cough": 0.8})
    assert not p.step(np.array([0.7, 0.2, 0.1]), 0.0).detected  # cough needs 0.8
    assert p.step(np.array([0.2, 0.7, 0.1]), 1.0).detected  # speech uses the default 0.5


def test_unknown_label_in_thresholds_is_refused():
    with pytest.raises(ValueError, match="unknown labels"):
        pp(thresholds={"sneeze": 0.5})


def test_refractory_period_suppresses_repeat_detections_of_the_same_label():
    p = pp(refractory_s=1.0)
    hit = np.array([0.9, 0.05, 0.05])
    assert p.step(hit, 0.0).detected
    assert not p.step(hit, 0.5).detected
    assert not p.step(hit, 0.99).detected
    assert p.step(hit, 1.0).detected
    # another label is not held back by cough's refractory period
    assert p.step(np.array([0.05, 0.9, 0.05]), 1.25).detected


def test_all_mode_publishes_every_window_with_its_reason():
    p = pp(threshold=0.95)
    events = [p.step(np.array(s), t).event for t, s in enumerate([[0.6, 0.3, 0.1], [0.6, 0.3, 0.1], [0.3, 0.6, 0.1], [0.0, 0.99, 0.01]])]
    assert events == ["change", "window", "change", "detection"]


def test_events_mode_publishes_only_detections_and_changes():
    p = pp(mode="events", threshold=0.9)
    out = [p.step(np.array(s), t) for t, s in enumerate([[0.6, 0.3, 0.1], [0.6, 0.3, 0.1], [0.95, 0.03, 0.02], [0.2, 0.7, 0.1], [0.2, 0.7, 0.1]])]
    assert [None if d is None else d.event for d in out] == ["change", None, "detection", "change", None]


def test_reset_forgets_smoothing_history():
    p = pp(smoothing=4)
    p.step(np.array([1.0, 0.0, 0.0]), 0)
    p.reset()
    assert p.step(np.array([0.0, 1.0, 0.0]), 1).scores["speech"] == 1.0


def test_published_scores_are_python_floats_clipped_as_min_max_would() -> None:
    """score and scores are min(1.0, max(0.0, v)) of the smoothed scores, bit for bit (NaN and -0.0 give 0.0)."""
    labels = tuple("abcdef")
    post = PostProcessor(labels, PostConfig(smoothing=2))
    rng = np.random.default_rng(3)
    specials = [np.nan, np.inf, -np.inf, -0.0, 1.0 + 1e-7, -1e-9]
    with np.errstate(invalid="ignore"):
        for i in range(400):
            s = rng.random(len(labels)) * 1.2 - 0.1
            if i % 7 == 0:
                s[i % len(labels)] = specials[i % len(specials)]
                post.reset()
            d = post.step(s, i * 0.25)
            assert d is not None
            filled = post._filled
            raw = np.asarray(post._sum) / filled
            want = [float(min(1.0, max(0.0, v))) for v in raw]
            assert [repr(v) for v in d.scores.values()] == [repr(v) for v in want]
            assert all(type(v) is float for v in d.scores.values())
            assert repr(d.score) == repr(d.scores[d.label])

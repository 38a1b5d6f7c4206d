"""Hostile inputs against the results themselves: nothing captured is lost, nothing false is published.

- A disk that fills while the broker is away, or is full at start: `serve` keeps classifying,
  holds the newest results in memory within a bound, counts what it drops, moves them back to
  the disk when space returns and says so. A real full disk: a small tmpfs (needs root to mount;
  skipped otherwise), filled with a file, the file deleted to "return space".
- An outbox path that points at another program's SQLite file: refused, the file untouched.
- Result ids: unique across the same model loaded twice, two [[models]] tables, a copy of the
  file, two daemons on one device id, and restarts. Two daemons on one device id are named in the
  log (real mosquitto).
- A model that outputs NaN or infinite scores publishes nothing false; integer outputs are
  refused at load.

Each case checks the message names the thing and the fix, the exit code where there is one, and
that no traceback reaches the user.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import edgekd
from edgekd.contract import ModelContractError, ModelMetadata
from edgekd.model import Model
from edgekd.mqtt import outbox_disk
from edgekd.mqtt.outbox import OutboxError, SqliteOutbox
from edgekd.payloads import ResultPayload, StatsPayload
from edgekd.pipeline import ModelRunner, Pipeline, RunnerSpec
from edgekd.postprocess import PostConfig
from edgekd.sink import MemorySink
from integration.conftest import Mosquitto, free_port, mosquitto, mosquitto_factory  # noqa: F401 (fixtures)

CLIP = Path(edgekd.__file__).parent / "assets" / "YAF_bar_angry.flac"  # real speech, 2.1 s, 16 kHz
RATE = 16000
WINDOW = 4000
LABELS = ("angry", "calm", "happy")
# <device>/<model-hash>/<instance>/<run>-<seq>, as docs/reliability.md says
ID_RE = re.compile(r"^(?P<device>[^/]+)/(?P<hash>[0-9a-f]{12})/(?P<instance>[0-9a-f]{8})/(?P<run>[0-9]+)-(?P<seq>[0-9]+)$")


# -- models built for these cases -------------------------------------------------------------


def mean_model(
    path: Path,
    *,
    bias: tuple[float, ...] = (0.0, 0.5, -0.5),
    sqrt: bool = False,
    multi_label: bool = False,
    out_type: int = TensorProto.FLOAT,
    name: str = "mean-test",
) -> Path:
    """logits = mean(window) * w + bias: a real ONNX graph. `sqrt`: logits from sqrt(mean), NaN
    for a window whose mean is negative; `bias` with NaN or inf gives non-finite logits always."""
    n = len(bias)
    w = np.linspace(1.0, -1.0, n, dtype=np.float32)[None, :]
    nodes = [helper.make_node("ReduceMean", ["audio"], ["mean"], axes=[1], keepdims=1)]
    src = "mean"
    if sqrt:
        nodes.append(helper.make_node("Sqrt", ["mean"], ["root"]))
        src = "root"
    nodes += [helper.make_node("Mul", [src, "w"], ["wx"]), helper.make_node("Add", ["wx", "b"], ["z"])]
    if out_type == TensorProto.FLOAT:
        nodes.append(helper.make_node("Identity", ["z"], ["logits"]))
    else:
        nodes.append(helper.make_node("Cast", ["z"], ["logits"], to=out_type))
    graph = helper.make_graph(
        nodes,
        "mean",
        [helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["batch", "samples"])],
        [helper.make_tensor_value_info("logits", out_type, ["batch", n])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array(bias, dtype=np.float32), "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    meta = ModelMetadata(
        task="emotion", labels=LABELS[:n] if n <= 3 else tuple(f"l{i}" for i in range(n)), sample_rate=RATE,
        window_samples=WINDOW, multi_label=multi_label, name=name, version="1",
    )
    for k, v in meta.to_props().items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, path)
    return path


def feed(model: Model, chunks: list[np.ndarray], smoothing: int = 1) -> tuple[ModelRunner, MemorySink]:
    runner = ModelRunner(model, RunnerSpec(WINDOW, PostConfig(smoothing=smoothing), gate_db=None))
    sink = MemorySink()
    pipe = Pipeline([runner], RATE, sink, "dev")
    for c in chunks:
        pipe.feed(c.astype(np.float32))
    return runner, sink


def dc(level: float, windows: int = 1) -> np.ndarray:
    return np.full(WINDOW * windows, level, dtype=np.float32)


def serve(*args: str, timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgekd", "serve", *args], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def stdout_results(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def no_traceback(*texts: str) -> None:
    for t in texts:
        assert "Traceback" not in t, t


# -- NaN and infinite scores ------------------------------------------------------------------


@pytest.mark.parametrize("multi_label", [False, True], ids=["softmax", "sigmoid"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
def test_a_model_whose_scores_are_never_finite_publishes_nothing_and_is_counted(tmp_path, caplog, bad, multi_label):
    model = Model(mean_model(tmp_path / "bad.onnx", bias=(bad, 0.0, 0.0), multi_label=multi_label, name="broken"))
    with caplog.at_level(logging.ERROR, logger="edgekd.pipeline"):
        runner, sink = feed(model, [dc(0.1, 5)])
    assert sink.results == []  # before: "angry" with every score 0 (softmax), or 1.0 (sigmoid of +inf)
    assert runner.counters.windows == 5 and runner.counters.nonfinite == 5 and runner.stats().nonfinite == 5
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1  # rate limited, not one per window
    assert "model broken" in errors[0] and "NaN or infinite" in errors[0] and "re-export" in errors[0]


def test_nan_on_some_windows_drops_only_those_and_does_not_poison_the_smoothing(tmp_path):
    """sqrt(mean): windows with a negative mean give NaN. The finite ones are published with the
    scores they would have without the bad window in between."""
    model = Model(mean_model(tmp_path / "sqrt.onnx", sqrt=True))
    runner, sink = feed(model, [dc(0.25), dc(-0.5), dc(0.25), dc(0.25)], smoothing=2)
    clean_runner, clean = feed(model, [dc(0.25), dc(0.25), dc(0.25)], smoothing=2)
    assert runner.counters.nonfinite == 1 and len(sink.results) == 3
    for got, want in zip(sink.results, clean.results):
        assert all(np.isfinite(v) for v in got.scores.values())
        assert got.scores == pytest.approx(want.scores) and got.label == want.label


def test_the_stats_payload_reports_nonfinite_windows_per_model(tmp_path):
    model = Model(mean_model(tmp_path / "sqrt.onnx", sqrt=True))
    runner, _ = feed(model, [dc(-0.5, 3), dc(0.25)])
    stats = runner.stats()
    assert (stats.windows, stats.nonfinite, stats.published) == (4, 3, 1)
    payload = StatsPayload(
        device="dev", time="2026-01-01T00:00:00Z", uptime_s=1, source="x", source_state="running", audio_seconds=1,
        dropped_audio_samples=0, results_dropped=0, queue_depth=0, broker_connected=False, cpu_percent=0, rss_mb=1,
        models=[stats],
    )
    assert json.loads(payload.to_json())["models"][0]["nonfinite"] == 3


def test_serve_with_a_nan_model_keeps_running_publishes_nothing_and_names_the_model(tmp_path):
    path = mean_model(tmp_path / "nan.onnx", bias=(float("nan"), 0.0, 0.0), name="nan-model")
    res = serve("--model", str(path), "--source", str(CLIP), "--stdout", "--device-id", "dev")
    assert res.returncode == 0, res.stderr
    assert stdout_results(res.stdout) == []
    assert "model nan-model" in res.stderr and "NaN or infinite" in res.stderr and "re-export" in res.stderr
    no_traceback(res.stderr)


def test_classify_with_a_nan_model_says_why_there_is_no_label(tmp_path):
    nan = mean_model(tmp_path / "nan.onnx", bias=(float("nan"), 0.0, 0.0), name="nan-model")
    res = subprocess.run([sys.executable, "-m", "edgekd", "classify", "--model", str(nan), str(CLIP)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "(no valid window: " in res.stdout and "gave NaN or infinite scores)" in res.stdout
    assert "all windows gated" not in res.stdout
    no_traceback(res.stderr)


def test_classify_json_counts_the_nonfinite_windows_it_left_out(tmp_path):
    sqrt = mean_model(tmp_path / "sqrt.onnx", sqrt=True)  # the clip's windows with a negative mean give NaN
    res = subprocess.run([sys.executable, "-m", "edgekd", "classify", "--json", "--model", str(sqrt), str(CLIP)],
                         capture_output=True, text=True, timeout=120)
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert res.returncode == 0 and out["nonfinite"] > 0 and out["windows"] > 0
    assert all(np.isfinite(v) for v in out["scores"].values()) and out["label"] in LABELS


def test_serve_stdout_whose_reader_goes_away_says_how_many_results_were_written(energy_onnx):
    """`edgekd serve --stdout | head -c 300`: before, exit 1 and not a word about the lost results."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgekd", "serve", "--model", str(energy_onnx), "--source", str(CLIP), "--loop",
         "--stdout", "--hop", "energy-test=0.05", "--device-id", "dev"],  # --loop: it never ends by itself
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    first = proc.stdout.read(300)
    proc.stdout.close()  # the reader goes away
    err = proc.stderr.read()
    proc.wait(timeout=60)
    assert first.startswith("{")
    assert proc.returncode == 2, err
    line = err.strip().splitlines()[-1]
    assert re.match(r"^edgekd: stdout was closed by the program reading it after \d+ results; result dev/\S+ and later", line)
    assert "let the reader read to the end (or use MQTT instead of --stdout)" in line
    no_traceback(err)


# -- outputs that are not float32 -------------------------------------------------------------


@pytest.mark.parametrize(
    "out_type,shown",
    [(TensorProto.INT64, "tensor(int64)"), (TensorProto.INT32, "tensor(int32)"), (TensorProto.INT8, "tensor(int8)"),
     (TensorProto.DOUBLE, "tensor(double)")],
    ids=["int64", "int32", "int8", "double"],
)
def test_an_output_that_is_not_float32_is_refused_at_load(tmp_path, out_type, shown):
    path = mean_model(tmp_path / "int.onnx", out_type=out_type)
    with pytest.raises(ModelContractError) as exc:
        Model(path)
    msg = str(exc.value)
    assert msg.startswith(f"model {path}: output 'logits' is {shown}")
    assert "float32" in msg and "export the model with a float32 output" in msg


def test_serve_with_an_integer_model_is_one_line_and_exit_2(tmp_path):
    path = mean_model(tmp_path / "int.onnx", out_type=TensorProto.INT64)
    res = serve("--model", str(path), "--source", str(CLIP), "--stdout")
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"edgekd: model {path}: output 'logits' is tensor(int64)")
    no_traceback(res.stderr)


# -- result ids -------------------------------------------------------------------------------


def _check_unique(results: list[dict], models: int) -> None:
    ids = [r["id"] for r in results]
    assert len(ids) == len(set(ids)), "duplicate result ids"
    for r in results:
        ResultPayload.model_validate(r)
        m = ID_RE.match(r["id"])
        assert m and m["seq"] == str(r["seq"]) and m["hash"] == r["model_hash"], r["id"]
    assert len({ID_RE.match(i)["instance"] for i in ids}) == models


def test_the_same_model_file_twice_gives_unique_ids(energy_onnx):
    res = serve("--model", str(energy_onnx), "--model", str(energy_onnx), "--source", str(CLIP), "--stdout",
                "--device-id", "dev")
    assert res.returncode == 0, res.stderr
    results = stdout_results(res.stdout)
    assert len({r["model_hash"] for r in results}) == 1 and len(results) >= 4
    _check_unique(results, models=2)


def test_two_models_tables_with_different_hops_give_unique_ids(tmp_path, energy_onnx):
    config = tmp_path / "edgekd.toml"
    config.write_text(
        f'device_id = "dev"\n[[models]]\npath = "{energy_onnx}"\nhop = 0.5\n[[models]]\npath = "{energy_onnx}"\nhop = 0.25\n'
    )
    res = serve("--config", str(config), "--source", str(CLIP), "--stdout")
    assert res.returncode == 0, res.stderr
    _check_unique(stdout_results(res.stdout), models=2)


def test_a_copy_of_the_model_file_gives_unique_ids(tmp_path, energy_onnx):
    copy = tmp_path / "copy.onnx"
    shutil.copy(energy_onnx, copy)
    res = serve("--model", str(energy_onnx), "--model", str(copy), "--source", str(CLIP), "--stdout", "--device-id", "dev")
    assert res.returncode == 0, res.stderr
    _check_unique(stdout_results(res.stdout), models=2)


def test_two_daemons_on_one_device_id_started_together_give_disjoint_ids(energy_onnx):
    argv = [sys.executable, "-m", "edgekd", "serve", "--model", str(energy_onnx), "--source", str(CLIP), "--stdout",
            "--device-id", "twin"]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    a, b = (stdout_results(o) for o, _ in outs)
    assert a and b and {r["id"] for r in a}.isdisjoint({r["id"] for r in b})
    assert {r["seq"] for r in a} == {r["seq"] for r in b}  # same seqs, same second: before, the same ids


def test_ids_of_two_runs_on_one_outbox_differ_and_the_run_grows(tmp_path, energy_onnx):
    path = tmp_path / "o.sqlite3"
    runs, ids = [], set()
    for _ in range(2):
        box = SqliteOutbox(path)
        run = box.run_id()
        box.close()
        runner = ModelRunner(Model(energy_onnx), RunnerSpec(8000, PostConfig(), gate_db=None))
        sink = MemorySink()
        pipe = Pipeline([runner], RATE, sink, "dev", run_id=run)
        pipe.feed(np.zeros(32000, dtype=np.float32))
        runs.append(int(run))
        ids |= {r.id for r in sink.results}
        assert all(ID_RE.match(r.id)["run"] == run for r in sink.results)
    assert runs[1] > runs[0] and len(ids) == 2 * len(sink.results)


# -- an outbox path that is not an outbox -----------------------------------------------------


def _foreign_users_db(path: Path) -> Path:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        db.execute("INSERT INTO users (name) VALUES ('ada')")
    return path


def _foreign_outbox_table(path: Path) -> Path:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE outbox (id INTEGER PRIMARY KEY, body TEXT)")
        db.execute("INSERT INTO outbox (body) VALUES ('theirs')")
    return path


def _foreign_application_id(path: Path) -> Path:
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA application_id = 1234")
        db.execute("CREATE TABLE outbox (key INTEGER PRIMARY KEY, topic TEXT, payload BLOB, qos INTEGER, created REAL)")
    return path


@pytest.mark.parametrize(
    "make,shown",
    [(_foreign_users_db, "tables: users"), (_foreign_outbox_table, "tables: outbox"),
     (_foreign_application_id, "application_id 0x4d2")],
    ids=["users-table", "outbox-table-of-another-shape", "another-application-id"],
)
def test_another_programs_sqlite_file_is_refused_and_left_untouched(tmp_path, make, shown):
    path = make(tmp_path / "theirs.db")
    before = path.read_bytes()
    with pytest.raises(OutboxError) as exc:
        SqliteOutbox(path)
    msg = str(exc.value)
    assert msg.startswith(f"outbox {path} is a SQLite database of another program") and shown in msg
    assert "set mqtt.outbox_path to a file of edgekd's own" in msg
    assert path.read_bytes() == before and not Path(f"{path}-wal").exists()
    SqliteOutbox(tmp_path / "mine.sqlite3").close()  # the lock was released: the next try can go on


def test_a_directory_as_outbox_path_is_named_with_the_fix(tmp_path):
    with pytest.raises(OutboxError, match=rf"^outbox {re.escape(str(tmp_path))} is a directory; set mqtt.outbox_path to a file in it"):
        SqliteOutbox(tmp_path)


def test_an_outbox_of_an_earlier_edgekd_still_opens_with_its_results(tmp_path):
    """Outboxes written before the application_id was set are recognised by their tables."""
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE outbox (key INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, "
                   "payload BLOB NOT NULL, qos INTEGER NOT NULL, created REAL NOT NULL)")
        db.execute("CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL)")
        db.execute("INSERT INTO outbox (topic, payload, qos, created) VALUES ('t', x'7b7d', 1, ?)", (time.time(),))
    box = SqliteOutbox(path)
    assert [e.payload for e in box.after(0, 10)] == [b"{}"]
    box.close()


def test_serve_with_another_programs_database_as_outbox_is_one_line_and_exit_2(tmp_path, energy_onnx):
    theirs = _foreign_users_db(tmp_path / "app.db")
    config = tmp_path / "edgekd.toml"
    config.write_text(f'[mqtt]\nurl = "mqtt://127.0.0.1:{free_port()}"\noutbox_path = "{theirs}"\n')
    res = serve("--config", str(config), "--model", str(energy_onnx), "--source", str(CLIP), timeout=60)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"edgekd: outbox {theirs} is a SQLite database of another program")
    no_traceback(res.stderr)


# -- a disk that fills ------------------------------------------------------------------------


class SmallDisk:
    """A real tmpfs of `size`; `fill()` takes all its space with a file, `free()` deletes it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.filler = root / "filler"

    def fill(self) -> None:
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError:
            pass
        finally:
            os.close(fd)

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)

    def remount(self, mode: str) -> None:
        """"ro" or "rw": a disk the kernel turns read-only after errors (an SD card), and back."""
        subprocess.run(["mount", "-o", f"remount,{mode}", str(self.root)], check=True, capture_output=True)


@pytest.fixture
def small_disk(tmp_path) -> Iterator[SmallDisk]:
    root = tmp_path / "disk"
    root.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(root)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill (needs root): {res.stderr.strip()}")
    try:
        yield SmallDisk(root)
    finally:
        subprocess.run(["umount", "-l", str(root)], capture_output=True)


@pytest.fixture
def retry_at_once(monkeypatch):
    monkeypatch.setattr(outbox_disk, "DISK_RETRY_S", 0.0)


def result_bytes(n: int) -> bytes:
    return json.dumps({"seq": n, "pad": "x" * 400}).encode()


def seqs(box: SqliteOutbox) -> list[int]:
    return [json.loads(e.payload)["seq"] for e in box.after(0, 1_000_000)]


@pytest.mark.usefixtures("retry_at_once")
def test_a_disk_that_fills_keeps_the_newest_in_memory_counts_drops_and_recovers(small_disk, caplog):
    box = SqliteOutbox(small_disk.root / "o.sqlite3", memory_items=50)
    for n in range(20):
        assert box.put("t", result_bytes(n), 1)
    small_disk.fill()
    with caplog.at_level(logging.INFO, logger="edgekd.mqtt.outbox_disk"):
        for n in range(20, 300):
            box.put("t", result_bytes(n), 1)  # never raises
        kept = seqs(box)
        assert kept[-50:] == list(range(250, 300))  # the newest 50, in order, after what was on disk
        assert box.in_memory == 50 and box.dropped_memory == len(range(20, 300)) - 50 - (len(kept) - 70)
        small_disk.free()
        box.put("t", result_bytes(300), 1)
    assert box.in_memory == 0 and seqs(box) == kept + [300]
    text = caplog.text
    assert f"outbox {box.path}: cannot write results to the disk (the disk is full" in text
    assert "Free space on the disk that holds it, or set mqtt.outbox_path to another disk" in text
    assert f"outbox {box.path}: the disk takes results again: 50 results moved from memory to it" in text
    box.close()
    again = SqliteOutbox(box.path)
    assert seqs(again) == kept + [300]  # on disk for real
    again.close()


@pytest.mark.usefixtures("retry_at_once")
def test_acknowledged_results_are_not_sent_again_when_the_disk_cannot_delete_them(small_disk):
    box = SqliteOutbox(small_disk.root / "o.sqlite3")
    for n in range(30):
        box.put("t", result_bytes(n), 1)
        box.sync()  # as the publisher's sender does: the WAL is checkpointed and reused
    on_disk = len(box)
    assert on_disk == 30 and box.in_memory == 0
    small_disk.fill()
    first = box.after(0, 10)
    box.remove(e.key for e in first)  # the broker acknowledged them; the DELETE may fail on a full disk
    assert len(box) == on_disk - 10 and [e.key for e in box.after(0, 10)][0] == first[-1].key + 1
    small_disk.free()
    box.put("t", result_bytes(999), 1)
    box.close()
    again = SqliteOutbox(box.path)
    assert len(again) == on_disk - 10 + 1 and seqs(again)[0] == 10
    again.close()


@pytest.mark.usefixtures("retry_at_once")
def test_a_disk_full_at_start_is_named_as_full_not_as_a_corrupt_database(small_disk, caplog):
    small_disk.fill()
    path = small_disk.root / "state" / "outbox-dev.sqlite3"
    with caplog.at_level(logging.INFO, logger="edgekd.mqtt.outbox_disk"):
        box = SqliteOutbox(path)
        run = box.run_id()
        for n in range(5):
            assert box.put("t", result_bytes(n), 1)
        assert seqs(box) == [0, 1, 2, 3, 4] and int(run) > 0
        small_disk.free()
        box.put("t", result_bytes(5), 1)
    assert "not a usable SQLite database" not in caplog.text and "corrupt" not in caplog.text
    assert "cannot write results to the disk (the disk is full" in caplog.text
    assert "the disk takes results again: 5 results moved from memory" in caplog.text
    box.close()
    again = SqliteOutbox(path)
    assert seqs(again) == [0, 1, 2, 3, 4, 5]
    again.close()


@pytest.mark.usefixtures("retry_at_once")
def test_a_read_only_disk_at_start_is_named_and_results_wait_in_memory_until_it_is_writable(small_disk, caplog):
    """A state directory on a file system mounted read-only (a Raspberry Pi's root after SD card
    errors): named as read-only, not as a permission or database problem; results wait in memory."""
    path = small_disk.root / "o.sqlite3"
    box = SqliteOutbox(path)
    box.put("t", result_bytes(0), 1)
    box.close()
    small_disk.remount("ro")
    try:
        with caplog.at_level(logging.INFO, logger="edgekd.mqtt.outbox_disk"):
            box = SqliteOutbox(path)
            for n in range(1, 6):
                assert box.put("t", result_bytes(n), 1)
            assert box.in_memory == 5
    finally:
        small_disk.remount("rw")
    with caplog.at_level(logging.INFO, logger="edgekd.mqtt.outbox_disk"):
        box.put("t", result_bytes(6), 1)
    assert box.in_memory == 0 and seqs(box) == list(range(7))  # the earlier run's result first
    assert "cannot write results to the disk (the file system is read-only)" in caplog.text
    assert "check permissions" not in caplog.text and "not a usable SQLite database" not in caplog.text
    assert "the disk takes results again: 5 results moved from memory" in caplog.text
    box.close()


def test_results_of_an_earlier_run_survive_a_start_on_a_full_disk(small_disk, caplog):
    path = small_disk.root / "o.sqlite3"
    box = SqliteOutbox(path)
    for n in range(3):
        box.put("t", result_bytes(n), 1)
    box.close()
    small_disk.fill()
    with caplog.at_level(logging.WARNING, logger="edgekd.mqtt.outbox_disk"):
        box = SqliteOutbox(path)
        box.put("t", result_bytes(100), 1)
        box.close()
    assert "lost at exit" in caplog.text  # the one held in memory: said, not hidden
    small_disk.free()
    again = SqliteOutbox(path)
    assert seqs(again)[:3] == [0, 1, 2]
    again.close()


def test_closing_while_the_disk_is_full_counts_what_only_memory_held(small_disk, caplog):
    from edgekd.mqtt.publisher import MqttPublisher
    from edgekd.mqtt.settings import MqttSettings

    settings = MqttSettings(url=f"mqtt://127.0.0.1:{free_port()}", device_id="dev",
                            outbox_path=small_disk.root / "o.sqlite3", reconnect_max=1)
    pub = MqttPublisher(settings)
    small_disk.fill()
    payload = ResultPayload.model_validate(json.loads(_sample_result()))
    for _ in range(7):
        pub.publish_result(payload)
    assert pub.queue_depth == 7 and pub.outbox.in_memory > 0
    with caplog.at_level(logging.WARNING):
        pub.close(timeout=0.5)
    small_disk.free()
    again = SqliteOutbox(settings.outbox_path)
    kept = len(again)
    again.close()
    assert pub.dropped > 0 and pub.dropped + kept == 7  # each result either kept on disk or counted
    assert f"{pub.dropped} results were not delivered" in caplog.text and "counted as dropped" in caplog.text
    assert f"{pub.dropped} results held in memory while the disk failed are lost at exit" in caplog.text


def _sample_result() -> str:
    return json.dumps({
        "id": "dev/0123456789ab/0badc0de/1-0", "device": "dev", "model": "m", "model_version": "1",
        "model_hash": "0123456789ab", "task": "emotion", "label": "calm", "score": 0.5,
        "scores": {"calm": 0.5, "angry": 0.5}, "detected": False, "event": "window", "seq": 0,
        "window_start": "2026-01-01T00:00:00Z", "window_end": "2026-01-01T00:00:01Z",
        "latency_ms": {"inference": 1.0, "pipeline": 2.0},
    })


@pytest.mark.slow
@pytest.mark.integration
def test_serve_keeps_classifying_through_a_full_disk_and_delivers_when_space_and_broker_return(
    small_disk, mosquitto_factory, energy_onnx, tmp_path
):
    """The whole daemon: the broker is away, the outbox's disk fills mid-run, then space and the
    broker return. Every seq arrives (no gap: nothing captured before, during or after is lost),
    the process exits 0 on SIGTERM, and the log says what happened without a traceback."""
    broker = mosquitto_factory(persistence=True)
    sub = broker.subscribe("edgekd/full/loudness", count=100_000, timeout=120, qos=1, client_id="checker")
    broker.stop()  # the subscriber's session waits for the broker's return
    config = tmp_path / "edgekd.toml"
    config.write_text(f'device_id = "full"\n[mqtt]\nurl = "{broker.url}"\nreconnect_max = 1\n')
    log_path = tmp_path / "serve.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edgekd", "serve", "--config", str(config), "--model", str(energy_onnx),
             "--source", str(CLIP), "--loop", "--realtime", "--hop", "energy-test=0.1"],
            stdout=subprocess.DEVNULL, stderr=log, env={**os.environ, "STATE_DIRECTORY": str(small_disk.root)},
        )
    try:
        _wait_for(lambda: "serving" in log_path.read_text(), 60, log_path)
        time.sleep(1.5)  # results go to the outbox on disk
        small_disk.fill()
        _wait_for(lambda: "cannot write results to the disk (the disk is full" in log_path.read_text(), 30, log_path)
        time.sleep(2.0)  # results pile up in memory
        small_disk.free()
        _wait_for(lambda: "the disk takes results again" in log_path.read_text(), 30, log_path)
        broker.start()
        got = sub.wait_until(lambda m: len({json.loads(x.payload)["seq"] for x in m}) >= 50, 60)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    text = log_path.read_text()
    sub.stop()
    assert proc.returncode == 0, text
    no_traceback(text)
    seqs_got = sorted({json.loads(m.payload)["seq"] for m in got})
    assert seqs_got == list(range(len(seqs_got))) and len(seqs_got) >= 50, seqs_got
    moved = int(re.search(r"the disk takes results again: (\d+) results moved", text)[1])
    assert moved >= 5  # results that only memory held while the disk was full, delivered too


def _wait_for(predicate, timeout: float, log_path: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out; log:\n{log_path.read_text()[-4000:]}")


# -- two daemons on one device id -------------------------------------------------------------


def _twin_publishers(url: str, protocol: str):
    from edgekd.mqtt.outbox import MemoryOutbox
    from edgekd.mqtt.publisher import MqttPublisher
    from edgekd.mqtt.settings import MqttSettings

    settings = MqttSettings(url=url, device_id="kitchen", protocol=protocol)
    return [MqttPublisher(settings, outbox=MemoryOutbox()) for _ in range(2)]


@pytest.mark.integration
@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_two_publishers_with_one_device_id_are_named_in_the_log(mosquitto, caplog, protocol):
    a, b = _twin_publishers(mosquitto.url, protocol)
    with caplog.at_level(logging.ERROR, logger="edgekd.mqtt.publisher"):
        a.start()
        assert a.wait_connected(5)
        b.start()
        deadline = time.monotonic() + 20
        while not (a.clash or b.clash) and time.monotonic() < deadline:
            time.sleep(0.1)
    a.close(0.5)
    b.close(0.5)
    clash = a.clash or b.clash
    assert clash, caplog.text
    assert "client id 'edgekd-kitchen'" in clash and "device_id 'kitchen'" in clash
    assert "Give each device its own device_id (or mqtt.client_id)" in clash
    assert clash in caplog.text


@pytest.mark.integration
@pytest.mark.slow
def test_broker_restarts_are_not_taken_for_two_daemons(mosquitto, caplog):
    from edgekd.mqtt.outbox import MemoryOutbox
    from edgekd.mqtt.publisher import MqttPublisher
    from edgekd.mqtt.settings import MqttSettings

    pub = MqttPublisher(MqttSettings(url=mosquitto.url, device_id="solo", reconnect_max=1), outbox=MemoryOutbox())
    pub.start()
    with caplog.at_level(logging.WARNING, logger="edgekd.mqtt.publisher"):
        for _ in range(4):
            assert pub.wait_connected(10)
            mosquitto.stop()
            time.sleep(1.5)  # paho's reconnect finds no broker: an outage
            mosquitto.start()
        assert pub.wait_connected(10)
    pub.close(1)
    assert pub.clash is None and "keeps dropping client id" not in caplog.text


@pytest.mark.integration
@pytest.mark.slow
def test_two_serve_daemons_on_one_device_id_name_the_clash_and_keep_their_ids_apart(mosquitto, energy_onnx, tmp_path):
    """Two devices configured with one device id (two state directories, as on two machines)."""
    sub = mosquitto.subscribe("edgekd/twin/loudness", count=100_000, timeout=120, qos=1)
    procs, logs = [], []
    for name in ("a", "b"):
        state = tmp_path / f"state-{name}"
        log_path = tmp_path / f"serve-{name}.log"
        logs.append(log_path)
        with open(log_path, "w") as log:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "edgekd", "serve", "--model", str(energy_onnx), "--source", str(CLIP), "--loop",
                 "--realtime", "--broker", mosquitto.url, "--device-id", "twin", "--hop", "energy-test=0.25"],
                stdout=subprocess.DEVNULL, stderr=log, env={**os.environ, "STATE_DIRECTORY": str(state)},
            ))
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any("keeps dropping client id" in p.read_text() for p in logs):
            time.sleep(0.2)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=60)
    texts = [p.read_text() for p in logs]
    time.sleep(1.0)  # the last acknowledged results reach the subscriber
    got = sub.messages()
    sub.stop()
    assert [p.returncode for p in procs] == [0, 0], texts
    for t in texts:
        no_traceback(t)
    clash = next(line for t in texts for line in t.splitlines() if "keeps dropping client id" in line)
    assert "client id 'edgekd-twin'" in clash and "device_id 'twin'" in clash and "Give each device its own device_id" in clash
    bodies = [json.loads(m.payload) for m in got]
    instances = {ID_RE.match(b["id"])["instance"] for b in bodies}
    assert len(instances) == 2  # both daemons' results arrived, told apart by their ids
    assert len({(b["id"], b["seq"]) for b in bodies}) == len({b["id"] for b in bodies})

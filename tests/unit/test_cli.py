import json
from pathlib import Path

import pytest

import edgekd
from edgekd import cli
from tests.cli_in_process import run, run_subprocess

CLIP = Path(edgekd.__file__).parent / "assets" / "YAF_bar_angry.flac"


def test_info_json(monkeypatch, capsys, energy_onnx):
    code, out, _ = run(monkeypatch, capsys, "info", energy_onnx, "--json")
    d = json.loads(out)
    assert code == 0 and d["task"] == "loudness" and d["labels"] == ["quiet", "loud"] and len(d["sha256"]) == 64


def test_a_file_that_is_not_a_model_is_one_line_and_exit_2(monkeypatch, capsys, tmp_path):
    bad = tmp_path / "x.onnx"
    bad.write_text("hello")
    code, out, err = run(monkeypatch, capsys, "info", bad)
    assert code == 2 and str(bad) in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_classify_json_lines_and_a_bad_file_does_not_stop_the_others(monkeypatch, capsys, energy_onnx, tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio" * 20)
    code, out, err = run(monkeypatch, capsys, "classify", "--model", energy_onnx, "--json", bad, CLIP)
    lines = [json.loads(l) for l in out.splitlines()]
    assert code == 1 and "bad.wav" in err
    assert lines[0]["file"] == str(bad) and "error" in lines[0]
    good = lines[1]
    assert good["file"] == str(CLIP) and good["label"] in ("quiet", "loud") and good["windows"] > 0
    assert set(good["scores"]) == {"quiet", "loud"} and good["score"] == max(good["scores"].values())


def test_serve_a_file_to_stdout(monkeypatch, capsys, energy_onnx):
    code, out, _ = run(monkeypatch, capsys, "serve", "-m", energy_onnx, "--source", CLIP, "--stdout", "--hop", "loudness=0.5")
    results = [json.loads(l) for l in out.splitlines()]
    assert code == 0 and len(results) == 3 and [r["seq"] for r in results] == [0, 1, 2]


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--mode", "sometimes"], "defaults.mode"),
        (["--broker", "ftp://x"], "mqtt.url"),
        (["--device-id", "a/b"], "device_id"),
        (["--hop", "nomodel=1"], "hops.nomodel"),
        (["--hop", "loudness"], "NAME=SECONDS"),
        (["--gate-db", "loud"], "--gate-db"),
        (["--source", "/nonexistent.wav"], "no such file"),
    ],
)
def test_serve_user_errors_are_one_line_exit_2(monkeypatch, capsys, energy_onnx, args, needle):
    code, out, err = run(monkeypatch, capsys, "serve", "-m", energy_onnx, *args)
    assert code == 2 and needle in err and "Traceback" not in err


def test_unknown_config_key(monkeypatch, capsys, tmp_path, energy_onnx):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[audio]\nsource = 'x'\nvolume = 3\n")
    code, _, err = run(monkeypatch, capsys, "serve", "--config", cfg, "-m", energy_onnx)
    assert code == 2 and "audio.volume: unknown key" in err


def test_no_model_is_a_user_error(monkeypatch, capsys):
    code, _, err = run(monkeypatch, capsys, "serve", "--source", CLIP, "--stdout")
    assert code == 2 and "--model" in err


def test_schema_prints_every_payload(monkeypatch, capsys):
    code, out, _ = run(monkeypatch, capsys, "schema")
    schemas = json.loads(out)
    assert code == 0 and {"result", "stats"} <= set(schemas)


def test_missing_train_extra_is_one_line_and_exit_2(monkeypatch, capsys):
    def boom(*a, **k):
        raise ModuleNotFoundError("No module named 'torch'", name="torch")

    monkeypatch.setattr(cli, "app", boom)
    code, _, err = run(monkeypatch, capsys, "serve")
    assert code == 2 and err.strip() == cli.TRAIN_MISSING


def test_help_lists_bench_and_train(monkeypatch, capsys):
    code, out, _ = run(monkeypatch, capsys, "--help")
    assert code == 0 and " bench " in out and " train " in out and " serve " in out


def test_runtime_imports_and_serves_with_torch_unavailable(energy_onnx):
    proc = run_subprocess("serve", "-m", energy_onnx, "--source", CLIP, "--stdout",
                          prelude="import sys; sys.modules['torch'] = None; sys.modules['transformers'] = None\n")
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 5 and '"task":"loudness"' in proc.stdout


def test_demo_finds_emotion_models_first_through_edgekd_models(monkeypatch, tmp_path, energy_onnx):
    from edgekd import demo

    models = tmp_path / "models"
    models.mkdir()
    (models / "a-cough.onnx").write_bytes(energy_onnx.read_bytes())
    monkeypatch.setenv("EDGEKD_MODELS", str(models))
    assert demo.find_demo_models() == [models / "a-cough.onnx"]  # no *-emotion.onnx: any model
    (models / "wav2tiny-emotion.onnx").write_bytes(energy_onnx.read_bytes())
    assert demo.find_demo_models() == [models / "wav2tiny-emotion.onnx"]


def test_demo_without_edgekd_models_runs_the_shipped_emotion_models():
    from edgekd import catalog, demo

    found = demo.find_demo_models(environ={})
    assert [f.name for f in found] == ["wav2small-emotion.onnx", "wav2tiny-emotion.onnx"]
    assert all(f.parent == catalog.SHIPPED_DIR for f in found)


def test_demo_without_any_model_says_what_to_do(monkeypatch, capsys, tmp_path):
    from edgekd import catalog, demo

    monkeypatch.setattr(demo, "places", lambda environ=None: [catalog.Place(tmp_path, "$EDGEKD_MODELS")])
    code, _, err = run(monkeypatch, capsys, "demo")
    assert code == 2 and "--model" in err and "EDGEKD_MODELS" in err

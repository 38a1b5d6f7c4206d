"""`edgekd bench` end to end on real ONNX files, run as a user would (a child process)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from onnx_models import energy_model
from unit.test_bench_graphcount import TINY_MACS, TINY_PARAMS, TINY_WINDOW, tiny_conv_model

pytestmark = pytest.mark.integration

# Short runs: these tests check fields and wiring, never speed.
QUICK = ["--windows", "40", "--warmup", "2", "--quiet"]


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgekd.bench", *args], capture_output=True, text=True, timeout=300, check=False
    )


@pytest.fixture(scope="module")
def two_models(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("bench")
    return energy_model(d / "energy.onnx"), tiny_conv_model(d / "tiny.onnx")


@pytest.fixture(scope="module")
def report(two_models) -> dict:
    done = bench(*map(str, two_models), *QUICK, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.slow
def test_json_has_device_settings_and_peak(report):
    device = report["device"]
    for key in ("cpu", "logical_cpus", "usable_cpus", "memory_bytes", "os", "python", "onnxruntime"):
        assert device[key], key
    assert "CPUExecutionProvider" in device["onnxruntime_providers"]
    assert report["settings"]["threads"] == 1 and report["settings"]["windows"] == 40
    assert report["peak"]["fp32_gflops"] > 0 and report["peak"]["int8_gops"] > 0
    assert "GEMM" in report["peak"]["method"]


@pytest.mark.slow
def test_every_model_has_sane_figures(report):
    assert [m["name"] for m in report["models"]] == ["energy-test", "tiny-conv"]
    for m in report["models"]:
        lat = m["latency_ms"]
        assert 0 < lat["min"] <= lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
        assert lat["mean"] > 0
        assert m["windows"] == 40 and m["warmup_windows"] == 2
        assert m["load_s"] > 0 and m["file_bytes"] > 0 and len(m["sha256"]) == 12
        assert m["windows_per_s"] > 0 and m["rtf"] > 0 and m["cpu_ms_per_window"] > 0
        assert m["models_per_core"] > 0
        assert m["providers_used"] == ["CPUExecutionProvider"] and m["provider_note"] == "as requested"
        mem = m["memory"]
        assert mem["peak_rss_bytes"] >= mem["baseline_rss_bytes"] > 0
        assert mem["session_peak_bytes"] == mem["peak_rss_bytes"] - mem["baseline_rss_bytes"] > 0  # a session costs memory
        assert m["achieved_gflops"] > 0 and 0 < m["peak_fraction"]


@pytest.mark.slow
def test_macs_and_params_equal_the_hand_count(report):
    tiny = report["models"][1]
    assert tiny["window_samples"] == TINY_WINDOW
    assert tiny["graph"]["macs"] == TINY_MACS
    assert tiny["graph"]["params"] == TINY_PARAMS


@pytest.mark.slow
def test_two_models_give_a_ratio_to_the_first(report):
    energy, tiny = report["models"]
    assert report["baseline"] == "energy-test"
    assert energy["ratios"]["speedup_p50"] == 1.0
    expected = energy["latency_ms"]["p50"] / tiny["latency_ms"]["p50"]
    assert tiny["ratios"]["speedup_p50"] == pytest.approx(expected)
    assert tiny["ratios"]["macs"] == pytest.approx(TINY_MACS / 2)


@pytest.mark.slow
def test_baseline_option_moves_the_ratios(two_models):
    energy, tiny = two_models
    done = bench(str(energy), str(tiny), "--baseline", str(tiny), *QUICK, "--json", "--no-memory", "--no-peak")
    assert done.returncode == 0, done.stderr
    rep = json.loads(done.stdout)
    assert rep["baseline"] == "tiny-conv"
    assert rep["models"][1]["ratios"]["speedup_p50"] == 1.0
    assert rep["models"][0]["memory"] is None and rep["peak"] is None


def test_table_plot_and_saved_json(two_models, tmp_path):
    pytest.importorskip("matplotlib")  # the bench extra
    png, saved = tmp_path / "bench.png", tmp_path / "bench.json"
    done = bench(*map(str, two_models), *QUICK, "--no-memory", "--no-peak", "--plot", str(png), "--save", str(saved))
    assert done.returncode == 0, done.stderr
    assert "energy-test" in done.stdout and "tiny-conv" in done.stdout and "latency p99" in done.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [m["name"] for m in json.loads(saved.read_text())["models"]] == ["energy-test", "tiny-conv"]


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"this is not an onnx file", "onnxruntime cannot load it"),
        (b"", "the file is empty"),
        (None, "no such file"),
    ],
)
def test_an_unreadable_model_fails_with_one_clear_line(tmp_path, content, expected):
    path = tmp_path / "broken.onnx"
    if content is not None:
        path.write_bytes(content)
    done = bench(str(path), *QUICK)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert str(path) in done.stderr and expected in done.stderr


def test_a_model_without_the_contract_metadata_is_refused(tmp_path):
    path = energy_model(tmp_path / "nometa.onnx", props_override={"edgekd.labels": None})
    done = bench(str(path), *QUICK)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "edgekd.labels" in done.stderr


def test_unknown_provider_is_refused(two_models):
    done = bench(str(two_models[0]), "--provider", "npu", *QUICK)
    assert done.returncode == 2 and "npu" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
def test_e2e_gives_audio_to_subscriber_latency_through_mosquitto(two_models, mosquitto):
    energy = two_models[0]  # a 1 s window: the first result comes a second after the clip starts
    done = bench(
        str(energy), "--e2e", "--broker", mosquitto.url, "--e2e-seconds", "2", "--windows", "20",
        "--warmup", "1", "--no-memory", "--no-peak", "--json", "--quiet",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    e2e = json.loads(done.stdout)["models"][0]["e2e"]
    assert e2e["broker"] == mosquitto.url
    assert e2e["results"] >= 4  # 2 s of audio at a 250 ms hop, less the edges
    lat = e2e["audio_to_subscriber_ms"]
    assert 0 < lat["p50"] <= lat["p99"] <= lat["max"]
    assert e2e["pipeline_ms"]["p50"] > 0 and e2e["inference_ms"]["p50"] > 0
    assert e2e["cpu_s_per_audio_s"] > 0
    assert e2e["kept_up"] is True and e2e["results"] <= e2e["results_expected"] + 1
    assert e2e["exit_code"] == 0 and e2e["stopped"] == "clean exit on SIGTERM"


@pytest.mark.slow
def test_e2e_with_an_unreachable_broker_fails_in_one_line(two_models):
    done = bench(str(two_models[0]), "--e2e", "--broker", "mqtt://127.0.0.1:9", "--windows", "5", "--no-memory",
                 "--no-peak", "--quiet")  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "mqtt://127.0.0.1:9" in done.stderr.strip().splitlines()[-1]


def test_e2e_with_a_missing_clip_is_refused_before_measuring(two_models, tmp_path):
    done = bench(str(two_models[0]), "--e2e", "--clip", str(tmp_path / "nope.flac"), *QUICK)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == f"edgekd bench: --clip {tmp_path / 'nope.flac'}: no such file"


def _bench_without(modules: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run the bench command with `modules` made unimportable (as on a device without them)."""
    blocked = "; ".join(f"sys.modules[{m!r}] = None" for m in modules)
    code = f"import sys; {blocked}\nimport typer\nfrom edgekd.bench.command import bench\ntyper.run(bench)\n"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300, check=False)


def test_every_bench_module_imports_without_torch():
    names = ["command", "device", "e2e", "graphcount", "measure", "memory", "peak", "plot", "progress",
             "report", "results", "run"]  # fmt: skip
    code = "import sys, importlib; sys.modules['torch'] = None\n" + "".join(
        f"importlib.import_module('edgekd.bench.{n}')\n" for n in names
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr


def test_without_onnx_latency_still_works_and_macs_say_how_to_get_them(two_models):
    done = _bench_without(["onnx", "torch"], str(two_models[0]), *QUICK, "--json", "--no-memory")
    assert done.returncode == 0, done.stderr
    rep = json.loads(done.stdout)
    m = rep["models"][0]
    assert m["latency_ms"]["p50"] > 0 and m["graph"] is None and m["achieved_gflops"] is None
    assert rep["peak"] is None
    assert any('pip install "edgekd[bench]"' in n and "MACs" in n for n in rep["notes"])


def test_plot_without_matplotlib_fails_before_measuring(two_models, tmp_path):
    done = _bench_without(["matplotlib"], str(two_models[0]), *QUICK, "--plot", str(tmp_path / "x.png"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "matplotlib" in done.stderr and 'pip install "edgekd[bench]"' in done.stderr
    assert not (tmp_path / "x.png").exists()


@pytest.mark.slow
def test_e2e_through_the_embedded_broker(two_models):
    done = bench(str(two_models[0]), "--e2e", "--e2e-seconds", "2", "--windows", "20", "--warmup", "1",
                 "--no-memory", "--no-peak", "--json", "--quiet")  # fmt: skip
    assert done.returncode == 0, done.stderr
    e2e = json.loads(done.stdout)["models"][0]["e2e"]
    assert e2e["broker"] == "embedded" and e2e["kept_up"] is True
    assert 0 < e2e["audio_to_subscriber_ms"]["p50"] <= e2e["audio_to_subscriber_ms"]["p99"]

"""The two wheels built from this repository, and the runtime one installed into a clean venv.

`edgekd` (pyproject.toml) is the runtime with the shipped models and clips as package data;
`edgekd-train` (train/pyproject.toml) is the training side. The runtime wheel goes into a venv of
its own (its dependencies from the package registry), outside any clone: there the training side
and torch are absent, `edgekd train` says how to add them, `edgekd models` lists the shipped
models and `edgekd demo` runs to its offline row.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from edgekd.cli import TRAIN_MISSING

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "models").glob("*.onnx"))
pytestmark = [pytest.mark.integration, pytest.mark.slow]
SOURCES = ("pyproject.toml", "README.md", "edgekd", "models", "train")
LEFTOVERS = shutil.ignore_patterns("__pycache__", "*.pyc", "build", "dist", "*.egg-info")


def _run(argv: list[str], cwd: Path, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "EDGEKD_MODELS", "PIP_REQUIRE_VIRTUALENV")}
    env.update(kw.pop("env", {}))
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, **kw)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> dict[str, Path]:
    """Both wheels, built with pip from a copy of the sources (an in-tree build leaves build/ behind)."""
    tmp = tmp_path_factory.mktemp("wheels")
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, symlinks=True, ignore=LEFTOVERS)
        else:
            shutil.copy2(path, src / name)
    out = tmp / "dist"
    res = _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--disable-pip-version-check", "-w", str(out),
                str(src), str(src / "train")], cwd=tmp)  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    built = {w.name.split("-")[0]: w for w in out.glob("*.whl")}
    assert set(built) == {"edgekd", "edgekd_train"}, sorted(built)
    return built


def test_the_runtime_wheel_holds_the_runtime_and_the_shipped_models_byte_for_byte(wheels):
    with zipfile.ZipFile(wheels["edgekd"]) as z:
        names = z.namelist()
        assert not [n for n in names if n.startswith("edgekd_train/")]
        for model in SHIPPED:
            assert _sha256(z.read(f"edgekd/models/{model.name}")) == _sha256(model.read_bytes()), model.name
            assert f"edgekd/models/{model.stem}.md" in names  # its card goes with it
        assert "edgekd/assets/YAF_search_angry.flac" in names
        metadata = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert 'Requires-Dist: edgekd-train==0.1.0; extra == "train"' in metadata
    assert "torch" not in metadata.split("Provides-Extra: train")[0]  # no training dependency outside the extra


def test_the_training_wheel_holds_the_training_side_and_its_recipes(wheels):
    with zipfile.ZipFile(wheels["edgekd_train"]) as z:
        names = z.namelist()
        metadata = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "edgekd_train/cli.py" in names and "edgekd_train/recipes/emotion.toml" in names
    assert not [n for n in names if n.startswith("edgekd/")]
    assert "Name: edgekd-train\nVersion: 0.1.0\n" in metadata
    for requirement in ("edgekd==0.1.0", "torch>=", "transformers>="):
        assert f"Requires-Dist: {requirement}" in metadata


def test_the_runtime_wheel_in_a_clean_venv_lists_the_models_and_runs_the_demo(wheels, tmp_path):
    venv = tmp_path / "venv"
    res = _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    bin_dir = venv / "bin"
    res = _run([str(bin_dir / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                str(wheels["edgekd"])], cwd=tmp_path)  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    edgekd = str(bin_dir / "edgekd")

    for module in ("edgekd_train", "torch"):
        res = _run([str(bin_dir / "python"), "-c", f"import {module}"], cwd=tmp_path)
        assert res.returncode == 1 and f"No module named '{module}'" in res.stderr, (module, res.stderr)
    res = _run([edgekd, "train", "run", "emotion"], cwd=tmp_path)
    assert res.returncode == 2 and res.stderr.strip() == TRAIN_MISSING, res.stderr

    res = _run([edgekd, "models", "--json"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    assert sorted(r["name"] for r in rows) == [m.stem for m in SHIPPED]
    assert all(Path(r["path"]).is_relative_to(venv) for r in rows), [r["path"] for r in rows]

    res = _run([edgekd, "demo"], cwd=tmp_path, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    last = res.stdout.strip().splitlines()[-1]
    arrived, _, sent = last.split(" results arrived")[0].partition(" of ")
    assert int(arrived) == int(sent) >= 10 and last.endswith("clip over, status offline."), res.stdout
    assert "wav2small-emotion" in res.stdout and "wav2tiny-emotion" in res.stdout

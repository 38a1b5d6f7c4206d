"""Two distributions from this repository: `edgekd` (pyproject.toml: the runtime and the shipped
models) and `edgekd-train` (train/pyproject.toml: the folder train/, imported as edgekd_train).
Each explicit package list names every package folder; the `train` extra asks for the training
distribution at the runtime's own version; the training side is imported as edgekd_train."""
from __future__ import annotations

from pathlib import Path

from packaging.requirements import Requirement

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = tomllib.loads((ROOT / "pyproject.toml").read_text())
TRAINING = tomllib.loads((ROOT / "train" / "pyproject.toml").read_text())
BUILD_LEFTOVERS = {"build", "dist", "__pycache__"}


def _folders(root: str, name: str) -> set[str]:
    base = ROOT / root
    return {
        ".".join([name, *p.parent.relative_to(base).parts])
        for p in base.rglob("__init__.py")
        if not BUILD_LEFTOVERS & set(p.relative_to(base).parts) and not any(x.endswith(".egg-info") for x in p.parts)
    }


def test_the_runtime_package_list_names_every_runtime_folder_and_nothing_of_the_training_side():
    setuptools = RUNTIME["tool"]["setuptools"]
    assert "package-dir" not in setuptools
    assert set(setuptools["packages"]) == _folders("edgekd", "edgekd")


def test_the_training_package_list_names_every_folder_of_train():
    setuptools = TRAINING["tool"]["setuptools"]
    assert setuptools["package-dir"] == {"edgekd_train": "."}
    assert set(setuptools["packages"]) == _folders("train", "edgekd_train")


def test_the_train_extra_and_the_training_distribution_pin_each_other_at_one_version():
    version = RUNTIME["project"]["version"]
    assert TRAINING["project"]["version"] == version
    extra = [Requirement(r) for r in RUNTIME["project"]["optional-dependencies"]["train"]]
    assert [(r.name, str(r.specifier)) for r in extra] == [("edgekd-train", f"=={version}")]
    runtime = [Requirement(r) for r in TRAINING["project"]["dependencies"] if Requirement(r).name == "edgekd"]
    assert [str(r.specifier) for r in runtime] == [f"=={version}"]


def test_the_runtime_depends_on_nothing_that_training_needs():
    runtime = {Requirement(r).name for r in RUNTIME["project"]["dependencies"]}
    assert not runtime & {"torch", "transformers", "accelerate", "edgekd-train"}


def test_the_shipped_models_are_package_data_through_the_link_to_models():
    link = ROOT / "edgekd" / "models"
    assert link.is_symlink() and link.resolve() == (ROOT / "models").resolve()
    data = RUNTIME["tool"]["setuptools"]["package-data"]["edgekd"]
    assert "models/*.onnx" in data and "models/*.md" in data
    assert sorted(link.glob("*.onnx")), "no shipped model under edgekd/models"


def test_nothing_imports_the_training_side_as_train():
    offenders = []
    for path in ROOT.glob("**/*.py"):
        if any(part in {".venv", ".git", ".bench", "node_modules"} or part.startswith(".") for part in path.relative_to(ROOT).parts[:-1]):
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            stripped = line.strip()
            if stripped.startswith(("from train.", "from train import", "import train")):
                offenders.append(f"{path.relative_to(ROOT)}:{n}: {stripped}")
    assert not offenders, "import edgekd_train, not train:\n" + "\n".join(offenders)

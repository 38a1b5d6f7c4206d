"""pyproject.toml's explicit package list names every package folder, and the training side is
imported as edgekd_train (the folder train/ is mapped to that name)."""
from __future__ import annotations

from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]


def _folders(root: str, name: str) -> set[str]:
    base = ROOT / root
    return {
        ".".join([name, *p.parent.relative_to(base).parts])
        for p in base.rglob("__init__.py")
        if "__pycache__" not in p.parts
    }


def test_package_list_names_every_package_folder():
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools["package-dir"] == {"edgekd_train": "train"}
    assert set(setuptools["packages"]) == _folders("edgekd", "edgekd") | _folders("train", "edgekd_train")


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

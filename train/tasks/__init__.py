"""The tasks: one module each (emotion, keyword, cough, covid) that states its data, labels, split,
windows, augmentation, figures and what it ships, with a typed options object and `run(options)`.

`edgekd train run TASK --recipe ...` builds the options and calls `run`. The recipe
(train/recipes/TASK.toml unless `--recipe` names another) is the single source of settings;
the options only say where the data is, where results go, and how long to spend.

No torch at import: the command line imports these modules to read their options.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

TASKS = ("emotion", "keyword", "cough", "covid")
DEFAULT_DATA = Path(os.environ.get("EDGEKD_DATA", "../shared/data"))


class TaskOptionsError(ValueError):
    """A task's options cannot work together (or name a folder that is not there); says the fix."""


def start_run(out: Path, cpu_threads: bool = True) -> None:
    """Create `out` and log to `out/run.log` as well as stderr; with `cpu_threads`, torch runs on
    $EDGEKD_THREADS threads (default 1), as the CPU tasks measure themselves."""
    out.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    form = logging.Formatter("%(asctime)s %(name)s: %(message)s")
    handlers: list[logging.Handler] = [logging.FileHandler(out / "run.log")]
    if not any(type(h) is logging.StreamHandler for h in root.handlers):
        handlers.append(logging.StreamHandler())
    for h in handlers:
        h.setFormatter(form)
        root.addHandler(h)
    root.setLevel(logging.INFO)
    if cpu_threads:
        import torch

        torch.set_num_threads(int(os.environ.get("EDGEKD_THREADS", "1")))


def require_dir(path: Path, what: str) -> None:
    if not path.is_dir():
        raise TaskOptionsError(f"no {path}: pass --data (the folder holding {what})")


@dataclass(frozen=True)
class ClipTaskOptions:
    """What `edgekd train run cough|covid` take (one window per clip, one CPU student); the recipe holds
    every training setting."""

    out: Path
    data: Path = DEFAULT_DATA
    recipe: str = ""  # the task's own recipe unless named
    assignments: tuple[str, ...] = ()  # --set KEY=VALUE overrides of the recipe's [distill]
    student: str | None = None
    epochs: int | None = None
    minutes: float = 10.0  # no new epoch starts after this
    export: Path | None = None
    score: tuple[Path, ...] = ()  # train nothing: measure these ONNX files on the task's windows

    def __post_init__(self) -> None:
        require_dir(self.data, "the recipe's corpora and noise/")
        missing = [str(p) for p in self.score if not p.is_file()]
        if missing:
            raise TaskOptionsError(f"--score: no such ONNX file(s) {missing}")

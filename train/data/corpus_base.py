"""What every corpus loader shares: its error, file discovery, skip accounting."""

from __future__ import annotations

import csv
import json
import logging
from collections import Counter
from pathlib import Path

from edgekd_train.data.audio import find_audio_files as find_audio

log = logging.getLogger(__name__)

# Individual warnings per loader call before the rest are only summed up.
MAX_SKIP_WARNINGS = 5


class CorpusError(ValueError):
    """A corpus folder is missing or laid out unlike the loader expects.

    The message names the folder, what was expected there, and what was found.
    """

    def __init__(self, corpus: str, root: str | Path, problem: str, expected: str) -> None:
        self.corpus = corpus
        self.root = str(root)
        super().__init__(f"{corpus} corpus at {self.root}: {problem}. Expected {expected}")


def require_dir(corpus: str, root: str | Path, expected: str) -> Path:
    root = Path(root)
    if not root.exists():
        raise CorpusError(corpus, root, "the folder does not exist", expected)
    if not root.is_dir():
        raise CorpusError(corpus, root, "this is a file, not a folder", expected)
    return root


def describe_contents(root: Path, limit: int = 8) -> str:
    """A short listing of what a folder holds, for error messages."""
    try:
        names = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())
    except OSError as exc:
        return f"(unreadable: {exc})"
    if not names:
        return "nothing (the folder is empty)"
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def read_metadata_csv(corpus: str, root: Path, path: Path, required: set[str], expected: str) -> list[dict[str, str]]:
    """The rows of a corpus's metadata CSV, refusing one that lacks a required column."""
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = required - set(reader.fieldnames or [])
        if missing:
            rel = path.relative_to(root) if path.is_relative_to(root) else path
            raise CorpusError(corpus, root, f"{rel} lacks columns {sorted(missing)}", expected)
        return list(reader)


def read_metadata_json(corpus: str, root: Path, name: str, kind: type, expected: str):
    """The JSON file `name` in a corpus's `root`, refusing one that is missing, not JSON or not a `kind`."""
    path = root / name
    if not path.is_file():
        raise CorpusError(corpus, root, f"{name} is missing (it holds {describe_contents(root)})", expected)
    try:
        value = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CorpusError(corpus, root, f"{name} is not JSON ({exc})", expected) from None
    if not isinstance(value, kind):
        raise CorpusError(corpus, root, f"{name} is not a {kind.__name__}", expected)
    return value


class Skips:
    """Counts files a loader leaves out, warning a few times and then summing up."""

    def __init__(self, corpus: str) -> None:
        self.corpus = corpus
        self.reasons: Counter[str] = Counter()

    def skip(self, path: str | Path, reason: str) -> None:
        self.reasons[reason] += 1
        if sum(self.reasons.values()) <= MAX_SKIP_WARNINGS:
            log.warning("%s: skipping %s: %s", self.corpus, path, reason)

    @property
    def total(self) -> int:
        return sum(self.reasons.values())

    def summarize(self) -> None:
        if self.total > MAX_SKIP_WARNINGS:
            log.warning(
                "%s: skipped %d files in all (%s)",
                self.corpus,
                self.total,
                ", ".join(f"{n} {r}" for r, n in self.reasons.most_common()),
            )

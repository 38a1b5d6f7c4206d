"""The record every corpus loader returns."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable


@dataclass(frozen=True)
class Clip:
    """One labelled audio file.

    `group` is the unit that must never cross splits: the TESS word, the
    RAVDESS actor, the Speech Commands speaker, the cough recording.
    """

    path: Path
    label: str
    group: str
    corpus: str
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


def label_counts(clips: Iterable[Clip]) -> dict[str, int]:
    """Clips per label, sorted by label."""
    return dict(sorted(Counter(c.label for c in clips).items()))

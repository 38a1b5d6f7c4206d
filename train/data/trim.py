"""Find where the sound is in a clip: leading and trailing silence, judged on short frames."""

from __future__ import annotations

import numpy as np

FRAME_S = 0.02  # silence is judged on 20 ms frames


def speech_span(x: np.ndarray, rate: int, floor_db: float = 40.0, margin_s: float = 0.15) -> tuple[int, int]:
    """[start, end) of `x` without the leading/trailing frames quieter than
    `floor_db` below the loudest frame, widened by `margin_s` each side."""
    frame = max(1, int(FRAME_S * rate))
    n = len(x) // frame
    if n == 0:
        return 0, len(x)
    energy = np.mean(np.square(x[: n * frame], dtype=np.float64).reshape(n, frame), axis=1)
    db = 10 * np.log10(energy + 1e-12)
    loud = np.nonzero(db > db.max() - floor_db)[0]
    margin = int(margin_s * rate)
    return max(0, int(loud[0]) * frame - margin), min(len(x), (int(loud[-1]) + 1) * frame + margin)

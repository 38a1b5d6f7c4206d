"""What a serving process carries: modules imported only for a figure or a check stay out of it.

numpy.random (the load checks' probe noise) and numpy.ma (which numpy.percentile imports, for the
stats' latency percentiles) add about 3 MiB of private memory to `serve`; both have their own
replacements (edgekd.probe.seeded_normal, edgekd.stats.percentile_of_sorted).
"""

from __future__ import annotations

import json

import numpy as np

from edgekd.demo import DEMO_CLIP
from edgekd.probe import seeded_normal
from tests.cli_in_process import run_subprocess

REPO_MODEL = "wav2tiny-keyword"  # shipped, with stream parts: the split path and its load check


def test_serve_imports_neither_numpy_random_nor_numpy_ma():
    hook = (
        "import atexit, json, sys\n"
        "atexit.register(lambda: print(json.dumps(sorted(m for m in ('numpy.random', 'numpy.ma') if m in sys.modules)), file=sys.stderr))\n"
    )
    proc = run_subprocess("serve", "-m", REPO_MODEL, "--source", DEMO_CLIP, "--stdout", "--log-level", "info",
                          prelude=hook, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert '"task":"keyword"' in proc.stdout  # a result (the model's defaults publish events only)
    assert "inference p50" in proc.stderr  # the stats at the stop took the latency percentiles
    assert json.loads(proc.stderr.strip().splitlines()[-1]) == []


def test_seeded_normal_is_standard_normal_and_fixed_by_its_seed():
    x = seeded_normal("a", 200_000)
    assert abs(float(x.mean())) < 0.01 and abs(float(x.std()) - 1) < 0.01
    assert np.isfinite(x).all()
    assert np.array_equal(seeded_normal("a", 1000), seeded_normal("a", 1000))
    assert not np.array_equal(seeded_normal("a", 1000), seeded_normal("b", 1000))
    # the tails of a normal: about 4.6% beyond 2 sigma
    assert 0.04 < float((np.abs(x) > 2).mean()) < 0.052

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

try:
    from hypothesis import HealthCheck, settings
except ModuleNotFoundError:  # hypothesis comes with the dev extra
    pass
else:
    # Property tests check what the code does, never how fast: no deadline, and no failure when a
    # busy machine makes drawing inputs slow.
    settings.register_profile("edgekd", deadline=None, suppress_health_check=[HealthCheck.too_slow])
    settings.load_profile("edgekd")


def shared_data_dir() -> Path | None:
    env = os.environ.get("EDGEKD_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(ROOT.parent / "shared" / "data")
    for c in candidates:
        if (c / "README.md").is_file():
            return c
    return None


@pytest.fixture
def energy_onnx(tmp_path):
    from onnx_models import energy_model

    return energy_model(tmp_path / "energy.onnx")


@pytest.fixture
def data_dir():
    d = shared_data_dir()
    if d is None:
        pytest.skip("needs ../shared/data or EDGEKD_DATA")
    return d


@pytest.fixture(autouse=True)
def _state_directory(tmp_path_factory, monkeypatch):
    """Every test (and every `edgekd serve` it starts) keeps its MQTT outbox in a temp dir, never
    in ~/.local/state/edgekd; a test that restarts a daemon reuses the same directory."""
    state = tmp_path_factory.mktemp("state")
    monkeypatch.setenv("STATE_DIRECTORY", str(state))
    return state


@pytest.fixture
def torch_one_thread():
    """Tiny models train fastest on one thread; two spin against each other on a busy 2-core machine.
    Use with `pytest.mark.usefixtures("torch_one_thread")` in tests that need torch."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

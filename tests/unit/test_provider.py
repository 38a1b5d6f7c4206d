"""`provider = cuda|tensorrt` asks onnxruntime for a GPU provider and falls back to the CPU, saying so."""

import logging

import numpy as np
import onnxruntime as ort
import pytest

from edgekd.config import ConfigError, load_settings
from edgekd.model import CPU, PROVIDER_CHOICES, Model, ModelRuntimeOptions


@pytest.mark.parametrize("choice", ["cuda", "tensorrt"])
def test_missing_gpu_provider_falls_back_to_cpu_with_a_warning(energy_onnx, caplog, choice):
    wanted = PROVIDER_CHOICES[choice][0]
    if wanted in ort.get_available_providers():
        pytest.skip(f"this onnxruntime has {wanted}")
    with caplog.at_level(logging.WARNING, logger="edgekd.model"):
        m = Model(energy_onnx, ModelRuntimeOptions(providers=PROVIDER_CHOICES[choice]))
    assert m.providers == (CPU,)
    assert any(wanted in r.getMessage() and "onnxruntime-gpu" in r.getMessage() for r in caplog.records)
    assert m.scores(np.zeros((1, 16000), np.float32)).shape == (1, 2)


def test_cpu_provider_says_nothing(energy_onnx, caplog):
    with caplog.at_level(logging.WARNING, logger="edgekd.model"):
        Model(energy_onnx, ModelRuntimeOptions(providers=PROVIDER_CHOICES["cpu"]))
    assert not caplog.records


def test_unknown_provider_is_a_config_error_naming_the_choices():
    with pytest.raises(ConfigError, match="provider.*'cpu', 'cuda' or 'tensorrt'"):
        load_settings(overrides={"provider": "gpu"}, environ={})

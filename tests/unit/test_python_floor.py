"""The package installs on Python 3.10 (`requires-python`): nothing imports what 3.10 lacks.

Python 3.10 has no `tomllib`; there the same parser is the `tomli` package, a runtime dependency
below 3.11. On a newer Python this test takes `tomllib` away (and gives `tomli` its module, the
same code) and imports every runtime module, then reads a config and a recipe through them.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

# Modules of optional extras: a runtime module may need them (bench: onnx, metrics: prometheus_client).
OPTIONAL = {"onnx", "matplotlib", "prometheus_client", "pyaudio"}

IMPORT_ALL = """
import importlib, json, pkgutil, sys
if sys.version_info >= (3, 11):
    import tomllib
    sys.modules["tomli"] = tomllib
    sys.modules["tomllib"] = None
for name in ("torch", "transformers", "accelerate"):
    sys.modules[name] = None
import edgekd
failed = {}
for info in pkgutil.walk_packages(edgekd.__path__, "edgekd."):
    if info.name.endswith("__main__"):
        continue
    try:
        importlib.import_module(info.name)
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in OPTIONAL:
            failed[info.name] = repr(exc)
    except Exception as exc:
        failed[info.name] = repr(exc)
print(json.dumps(failed))
"""


def _run(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1]


def test_every_runtime_module_imports_without_tomllib_and_torch():
    assert _run(f"OPTIONAL = {sorted(OPTIONAL)!r}\n" + IMPORT_ALL) == "{}"


def test_config_and_recipe_parse_without_tomllib(tmp_path):
    config = tmp_path / "edgekd.toml"
    config.write_text('threads = 3\n[mqtt]\nurl = "mqtt://broker.local:1884"\n')
    code = (
        "import sys\n"
        "if sys.version_info >= (3, 11):\n"
        "    import tomllib; sys.modules['tomli'] = tomllib; sys.modules['tomllib'] = None\n"
        "from edgekd.config import load_settings\n"
        f"c = load_settings({str(config)!r}, environ={{}})\n"
        "try:\n"
        "    from edgekd_train.recipe import load_recipe\n"
        "except ModuleNotFoundError:\n"
        "    recipe = None\n"
        "else:\n"
        "    recipe = load_recipe('emotion').task.window_samples\n"
        "print(c.threads, c.mqtt['url'], recipe)\n"
    )
    threads, url, window = _run(code).split()
    assert (threads, url) == ("3", "mqtt://broker.local:1884")
    assert window in ("48000", "None")  # None: a runtime install without the train package


@pytest.mark.skipif(sys.version_info >= (3, 11), reason="runs on the floor itself, Python 3.10")
def test_on_python_3_10_toml_comes_from_tomli():
    import edgekd.config

    assert edgekd.config.tomllib.__name__ == "tomli"

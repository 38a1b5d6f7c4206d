"""edgekd: tiny distilled audio classifiers on the device, results over MQTT."""

import os as _os

# onnxruntime (1.32 from PyPI, at least) records telemetry from the moment it is imported: a
# device id and a ProcessInfo event (OS, executable path, network type) in
# ~/.cache/Microsoft/DeveloperTools/.onnxruntime/, a session file $TMPDIR/.ses, and an uploader to
# mobile.events.data.microsoft.com. A device in a home or a clinic must not do that, so it is off
# unless the user explicitly sets ORT_DISABLE_TELEMETRY=0. Set here, before any edgekd module can
# import onnxruntime. tests/integration/test_security.py checks that serve writes nothing of it.
_os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

__version__ = "0.1.0"

"""The runtime works under MemoryDenyWriteExecute, as the systemd unit enables it.

systemd's MemoryDenyWriteExecute=yes refuses memory that is writable and executable, and
refuses making writable memory executable. Linux 6.3+ offers the same rule to any process
through prctl(PR_SET_MDWE); this test turns it on in a child process, proves that it is in force
(a W+X mapping is refused), and then loads a real ONNX model, runs inference, decodes and
resamples audio, and imports the MQTT and PortAudio bindings.
"""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
TESTS = Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent(
    """
    import ctypes, mmap, sys
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(65, 1, 0, 0, 0) != 0:   # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
        print("NO-MDWE", ctypes.get_errno()); sys.exit(0)
    try:
        mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        print("MDWE-NOT-IN-FORCE"); sys.exit(1)
    except OSError:
        pass
    sys.path.insert(0, sys.argv[1])
    import numpy as np, soundfile, soxr, paho.mqtt.client
    from onnx_models import energy_model
    from edgekd.model import Model
    m = Model(energy_model(sys.argv[2]))
    loud = m.scores(0.3 * np.sin(np.linspace(0, 2000, 16000, dtype=np.float32))[None, :])
    y = soxr.resample(np.zeros(44100, np.float32), 44100, 16000)
    try:
        import pyaudio  # the mic extra; optional
    except ImportError:
        pass
    print("OK", m.meta.labels[int(loud.argmax())], len(y))
    """
)


@pytest.mark.slow
def test_runtime_runs_with_memory_deny_write_execute(tmp_path):
    res = subprocess.run(
        [sys.executable, "-c", CHILD, str(TESTS), str(tmp_path / "m.onnx")],
        capture_output=True, text=True, timeout=120,
    )
    if res.stdout.startswith("NO-MDWE"):
        pytest.skip("this kernel has no PR_SET_MDWE (Linux < 6.3)")
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.strip() == "OK loud 16000", res.stdout + res.stderr

"""What native audio libraries write straight to the process's stderr, caught and summarised.

libmpg123 (under libsndfile) prints a line for every damaged MP3 frame, and ALSA and JACK (under
PortAudio) print dozens of lines each time PortAudio starts on a machine without a sound card.
None of it goes through Python, so `captured()` points file descriptor 2 at a temporary file for
the duration of one native call, then keeps the lines those libraries write and writes every
other line (a log line from another thread, say) back to the real stderr: nothing is lost, the
library's lines are summarised by the caller instead of flooding the terminal and the journal.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator

STDERR_FD = 2
_LOCK = threading.Lock()  # one redirection at a time: fd 2 is process-wide

# Lines these libraries write (anything else is passed through untouched).
_NATIVE = re.compile(
    r"^(\[[^\]]*\.c:[^\]]*\]"  # libmpg123: [src/libmpg123/layer3.c:INT123_do_layer3():1850] error: ...
    r"|(Note|Warning|Error): "  # libmpg123: Note: Illegal Audio-MPEG-Header ... / Trying to resync...
    r"|ALSA lib "  # alsa-lib
    r"|Expression '.*' failed in '"  # PortAudio's ALSA host API
    r"|Cannot connect to server|jack server|Jack|JackShm"  # JACK's client library
    r"|bt_audio_service_open|Cannot lock down"
    r")"
)


def is_native(line: str) -> bool:
    return not line.strip() or bool(_NATIVE.match(line))  # PulseAudio's ALSA plugin adds empty lines


@contextlib.contextmanager
def captured() -> Iterator[list[str]]:
    """Collect the native libraries' stderr lines written inside the block into the list yielded
    (filled when the block ends). Without a usable fd 2 it captures nothing and changes nothing."""
    lines: list[str] = []
    with _LOCK:
        try:
            sys.stderr.flush()
            tmp = tempfile.TemporaryFile()  # O_TMPFILE where it can: no name ever appears on disk
        except (OSError, ValueError, AttributeError):
            yield lines
            return
        try:
            saved = os.dup(STDERR_FD)
        except OSError:
            tmp.close()
            yield lines
            return
        try:
            os.dup2(tmp.fileno(), STDERR_FD)
            yield lines
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, STDERR_FD)
            os.close(saved)
            tmp.seek(0)
            _sort(tmp.read().decode("utf-8", errors="surrogateescape"), lines)
            tmp.close()


def _sort(text: str, native: list[str]) -> None:
    """Native lines into `native`; the rest back to the real stderr, in order."""
    passed = []
    for line in text.splitlines(keepends=True):
        if is_native(line):
            native.append(line.rstrip("\r\n"))
        else:
            passed.append(line)
    if passed:
        with contextlib.suppress(OSError):
            os.write(STDERR_FD, "".join(passed).encode("utf-8", errors="surrogateescape"))  # byte for byte

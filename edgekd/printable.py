"""Text from outside (a model's metadata, another publisher's payload, a file name) made safe to
show on a terminal or in a log line.

Control characters (ANSI escape sequences begin with one), line and paragraph separators, the
bidirectional overrides that reorder what is shown, and the raw bytes of a file name that is not
UTF-8 are written as Python escapes (`\\x1b`, `\\n`, `\\u202e`, `\\udcff`): they can neither
recolour, move the cursor, nor forge a second log line.
"""

from __future__ import annotations

import json
import logging
import unicodedata
from typing import Any

_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})  # Cs: bytes of a name that is not UTF-8


def _unsafe(c: str) -> bool:
    return c in _BIDI or unicodedata.category(c) in _ESCAPED_CATEGORIES


def printable(text: object) -> str:
    """`text` with every control character, line separator and bidi override escaped."""
    s = str(text)
    if s.isprintable():  # the common case: nothing to escape
        return s
    return "".join(repr(c)[1:-1] if _unsafe(c) else c for c in s)


def terminal_json(obj: Any, **kwargs: Any) -> str:
    """JSON for a terminal: everything outside printable ASCII as a \\u escape (DEL included, which
    json.dumps leaves raw)."""
    return json.dumps(obj, ensure_ascii=True, **kwargs).replace("\x7f", "\\u007f")


class PrintableFormatter(logging.Formatter):
    """A log formatter that escapes the message (a traceback, added after it, keeps its lines)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return printable(super().formatMessage(record))

"""The /proc readers: smaps_rollup parsing on a real kernel's text, and on this process."""

from __future__ import annotations

import sys

import pytest

from edgekd.bench.procfs import Footprint, footprint, parse_smaps_rollup

# /proc/self/smaps_rollup of a shell on Linux 6.18, as the kernel writes it
ROLLUP = """\
555da869d000-7ffe80fdc000 ---p 00000000 00:00 0                          [rollup]
Rss:                1700 kB
Pss:                 353 kB
Pss_Dirty:           112 kB
Pss_Anon:            112 kB
Pss_File:            241 kB
Pss_Shmem:             0 kB
Shared_Clean:       1548 kB
Shared_Dirty:          0 kB
Private_Clean:        40 kB
Private_Dirty:       112 kB
Referenced:         1700 kB
Anonymous:           112 kB
Swap:                  0 kB
SwapPss:               0 kB
Locked:                0 kB
"""


def test_parse_smaps_rollup_takes_rss_pss_and_private_pages_as_uss() -> None:
    assert parse_smaps_rollup(ROLLUP) == Footprint(rss=1700 * 1024, pss=353 * 1024, uss=(40 + 112) * 1024)


def test_parse_smaps_rollup_names_the_missing_lines() -> None:
    text = "\n".join(line for line in ROLLUP.splitlines() if not line.startswith("Private_Dirty"))
    with pytest.raises(ValueError, match="Private_Dirty"):
        parse_smaps_rollup(text)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc is Linux's")
def test_footprint_of_this_process_orders_uss_pss_rss() -> None:
    f = footprint()
    assert f is not None
    assert 0 < f.uss <= f.pss <= f.rss


def test_footprint_of_a_process_that_does_not_exist_is_none() -> None:
    assert footprint(2**22 + 12345) is None

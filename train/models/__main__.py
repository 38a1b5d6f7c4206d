"""`python -m edgekd_train.models [--labels N] [--seconds S]`: parameters and MACs of every student."""

from __future__ import annotations

import argparse

from edgekd_train.models.kws import KWS_NAMES
from edgekd_train.models.macs import macs_per_second, macs_per_window
from edgekd_train.models.students import STUDENT_NAMES, count_params
from edgekd_train.student_run import build_any_student


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m edgekd_train.models", description=__doc__)
    parser.add_argument("--labels", type=int, default=7, help="output classes (7 for emotion)")
    parser.add_argument("--seconds", type=float, default=3.0, help="window length (3 s for emotion, 1 s for keywords)")
    parser.add_argument("--rate", type=int, default=16000, help="sample rate in Hz")
    args = parser.parse_args(argv)
    samples = round(args.rate * args.seconds)
    print(f"{'student':<10} {'params':>8} {'MMAC/window':>12} {'MMAC/s':>8}  front end")
    for name in (*STUDENT_NAMES, *KWS_NAMES):
        model = build_any_student(name, args.labels, args.rate)
        fe = model.frontend.cfg
        print(
            f"{name:<10} {count_params(model):>8,} {macs_per_window(model, samples) / 1e6:>12.1f} "
            f"{macs_per_second(model, args.rate, args.seconds) / 1e6:>8.1f}  "
            f"{fe.n_fft / args.rate * 1e3:.0f} ms / {fe.hop / args.rate * 1e3:.0f} ms, {fe.n_mels} mels"
        )


if __name__ == "__main__":
    main()

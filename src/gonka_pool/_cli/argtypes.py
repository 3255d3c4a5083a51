"""The command-line tools' argument types: each rejects a bad value while the
arguments are parsed, so that it ends in a usage message and exit status 2 before
minutes of measuring, not in a traceback after them."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable


def default_max_threads() -> int:
    return 2 * (os.cpu_count() or 1)


# The type= functions below reject a value while the arguments are parsed, so that a
# bad one ends in a usage message and exit status 2 before minutes of measuring, not
# in a traceback after them.


def at_least(minimum: int) -> Callable[[str], int]:
    def integer(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return integer


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive, finite number of seconds, got {text!r}")
    return value


def thread_counts(text: str) -> list[int]:
    parts = [part.strip() for part in text.split(",")]
    # int() alone would let "1,,2" (an empty part), "1,-2" and "0,1" through;
    # isascii() because str.isdigit() is true of digits int() refuses, such as "²".
    if not all(part.isascii() and part.isdigit() for part in parts):
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated list of positive integers such as 1,2,4, got {text!r}"
        )
    counts = sorted({int(part) for part in parts})
    if counts[0] < 1:
        raise argparse.ArgumentTypeError(f"thread counts must be at least 1, got {text!r}")
    if counts[0] != 1:
        raise argparse.ArgumentTypeError(
            f"the thread counts must include 1 (every ratio is to one thread), got {text!r}"
        )
    return counts

"""The reliability suite; `tally` counts what it proved, printed at the end of the run (conftest)."""

from collections import Counter

COUNTS: Counter = Counter()


def tally(what: str, n: int = 1) -> None:
    COUNTS[what] += n

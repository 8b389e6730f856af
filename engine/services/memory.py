"""Out-of-memory handling: a batch that does not fit is split in halves and the work goes on."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")


def is_out_of_memory(error: BaseException) -> bool:
    """A GPU or CPU allocation failure (not any other RuntimeError)."""
    if isinstance(error, torch.cuda.OutOfMemoryError | MemoryError):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def adaptive_batches(items: Sequence[T], batch_size: int, work: Callable[[list[T]], R],
                     on_smaller: Callable[[int, BaseException], None] | None = None) -> Iterator[tuple[list[T], R]]:
    """(batch, work(batch)) over `items` in order; when work runs out of memory the batch size is halved (down
    to 1, then the error stands) for this batch and the following ones, after on_smaller(new_size, error)."""
    start, size = 0, max(1, int(batch_size))
    while start < len(items):
        batch = list(items[start:start + size])
        try:
            result = work(batch)
        except BaseException as error:  # only out-of-memory is handled; the rest re-raised
            if not is_out_of_memory(error) or size == 1:
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            size = max(1, size // 2)
            if on_smaller is not None:
                on_smaller(size, error)
            continue
        yield batch, result
        start += len(batch)


def limit_memory(gigabytes: float) -> None:
    """Cap this process's address space (RLIMIT_AS) so that a CPU run over budget gets allocation errors, which
    the batch loops answer by halving, instead of the machine's OOM killer ending it (or something else)."""
    import resource
    limit = int(gigabytes * 1024 ** 3)
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))

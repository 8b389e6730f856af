"""Process-wide torch settings that the entry points doing CPU work apply before their first tensor operation."""

from __future__ import annotations

import torch


def flush_denormals() -> bool:
    """Treat subnormal floats as zero (x86 FTZ/DAZ; a no-op elsewhere), against their slow arithmetic; a run trained
    with them flushed equals one trained without, byte for byte, and the speed-up is not established (docs/lab-notes.md).
    Returns whether the CPU supports it."""
    return torch.set_flush_denormal(True)

"""Process-wide torch settings that the entry points doing CPU work apply before their first tensor operation."""

from __future__ import annotations

import functools
import time

import torch


def flush_denormals() -> bool:
    """Treat subnormal floats as zero (x86 FTZ/DAZ; a no-op elsewhere), against their slow arithmetic; a run trained
    with them flushed equals one trained without, byte for byte, and the speed-up is not established (docs/lab-notes.md).
    Returns whether the CPU supports it."""
    return torch.set_flush_denormal(True)


def cpu_supports_bf16() -> bool:
    """Whether the CPU has native bf16 instructions (avx512_bf16 or AMX)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


@functools.lru_cache(maxsize=1)
def cpu_bf16_speedup() -> float:
    """fp32 time over bf16-autocast time of a SmolLM2-sized linear layer's forward and backward on this CPU
    (the best of 8 interleaved timings of each).

    The flags do not say which is faster: on a 2-core AMD EPYC with avx512_bf16 a joint step took 5.1 s in bf16 against
    6.7 s in fp32, on a 2-core Intel Xeon with avx512_bf16 9.5 s against 7.5 s (docs/lab-notes.md)."""
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(1536, 576, generator=generator, requires_grad=True)  # [out,in]
    x = torch.randn(1024, 576, generator=generator)  # [tokens,in]

    def once(bf16: bool) -> float:
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            y = torch.nn.functional.linear(x, weight)  # [tokens,out]
        y.float().sum().backward()
        weight.grad = None
        return time.perf_counter() - started

    once(False)  # warm-up
    once(True)
    fp32, bf16 = [], []
    for _ in range(8):  # interleaved, so a competing load slows both alike (in blocks it once made 0.56× read 1.39×)
        fp32.append(once(False))
        bf16.append(once(True))
    return min(fp32) / min(bf16)


def cpu_bf16_pays(threshold: float = 1.1) -> bool:
    """Whether bf16 autocast is worth it here: native bf16 and measured at least `threshold`× faster than fp32."""
    return cpu_supports_bf16() and cpu_bf16_speedup() >= threshold


def resolve_precision(precision: str, device_type: str) -> str:
    """The LLM's inference precision that 'auto' stands for here: 'mixed' on a CPU where bf16 autocast measures
    faster than fp32 (cpu_bf16_pays), else 'float32' (GPUs hold the LLM in bf16 already); other values unchanged."""
    if precision != "auto":
        return precision
    return "mixed" if device_type == "cpu" and cpu_bf16_pays() else "float32"

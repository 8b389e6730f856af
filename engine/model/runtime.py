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
    """fp32 time over bf16-autocast time of a SmolLM2-sized linear layer's forward and backward on this CPU (best of 5).

    The flags do not say which is faster: on a 2-core AMD EPYC with avx512_bf16 a joint step took 5.1 s in bf16 against
    6.7 s in fp32, on a 2-core Intel Xeon with avx512_bf16 9.5 s against 7.5 s (docs/lab-notes.md)."""
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(1536, 576, generator=generator, requires_grad=True)  # [out,in]
    x = torch.randn(1024, 576, generator=generator)  # [tokens,in]

    def best(bf16: bool) -> float:
        times = []
        for _ in range(6):
            started = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                y = torch.nn.functional.linear(x, weight)  # [tokens,out]
            y.float().sum().backward()
            times.append(time.perf_counter() - started)
        weight.grad = None
        return min(times[1:])  # the first is a warm-up

    return best(False) / best(True)


def cpu_bf16_pays(threshold: float = 1.1) -> bool:
    """Whether bf16 autocast is worth it here: native bf16 and measured at least `threshold`× faster than fp32."""
    return cpu_supports_bf16() and cpu_bf16_speedup() >= threshold

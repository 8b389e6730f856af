"""The bf16-vs-fp32 figures of docs/lab-notes.md ("bf16 is slower on the Intel machine"): a bare SmolLM2-sized matmul's
GFLOP/s in each precision, the training probe's ratio (`cpu_bf16_speedup`, interleaved) and the ratio of its first
form (six fp32 passes, then six bf16 ones). Usage: python scripts/measure/bf16_speed.py [repeats]"""
import sys
import time

import torch

from engine.model.runtime import cpu_bf16_speedup


def matmul_gflops(dtype: torch.dtype) -> float:
    a, b = torch.randn(1280, 576, dtype=dtype), torch.randn(576, 1536, dtype=dtype)
    for _ in range(3):
        a @ b
    started = time.perf_counter()
    for _ in range(50):
        a @ b
    return 2 * 1280 * 576 * 1536 / ((time.perf_counter() - started) / 50) / 1e9


def blocked_ratio() -> float:
    """The probe's first form: the best of 5 fp32 passes (after a warm-up), then of 5 bf16 ones."""
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(1536, 576, generator=generator, requires_grad=True)
    x = torch.randn(1024, 576, generator=generator)

    def best(bf16: bool) -> float:
        times = []
        for _ in range(6):
            started = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                y = torch.nn.functional.linear(x, weight)
            y.float().sum().backward()
            times.append(time.perf_counter() - started)
        weight.grad = None
        return min(times[1:])
    return best(False) / best(True)


print(f"matmul 1280x576x1536: fp32 {matmul_gflops(torch.float32):.0f} GFLOP/s, bf16 {matmul_gflops(torch.bfloat16):.0f} GFLOP/s")
for _ in range(int(sys.argv[1]) if len(sys.argv) > 1 else 3):
    cpu_bf16_speedup.cache_clear()
    print(f"probe (interleaved) {cpu_bf16_speedup():.2f}×   first form (blocks) {blocked_ratio():.2f}×", flush=True)

"""Process-wide torch settings that the entry points doing CPU work apply before their first tensor operation, and
what this machine's kernels are: bf16 speed, the precision 'auto' stands for, a fingerprint of what they compute."""

from __future__ import annotations

import functools
import hashlib
import time

import torch


def flush_denormals() -> bool:
    """Treat subnormal floats as zero (x86 FTZ/DAZ; a no-op elsewhere), against their slow arithmetic; a run trained
    with them flushed equals one trained without, byte for byte, and the speed-up is not established (docs/lab-notes.md).
    Returns whether the CPU supports it."""
    return torch.set_flush_denormal(True)


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> str:
    """/proc/cpuinfo's text, read once ('' where it cannot be read)."""
    try:
        with open("/proc/cpuinfo") as f:
            return f.read()
    except OSError:
        return ""


def cpu_name() -> str:
    """The CPU's model name as /proc/cpuinfo gives it ('cpu' where it cannot be read)."""
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "cpu"


def cpu_supports_bf16() -> bool:
    """Whether the CPU has native bf16 instructions (avx512_bf16 or AMX)."""
    flags = _cpuinfo()
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


KERNEL_PROBE = 2  # kernel_fingerprint's inputs; hashes of another probe are not compared (1: 2026-12-05, a 1024-row
#                   linear that oneDNN's AMX path rounds otherwise with 1 and 2 threads though the texts do not change)


def kernel_fingerprint(device: str = "cpu") -> dict:
    """Short hashes of what this machine's float32 and bf16-autocast kernels compute, with this process's threads, on
    fixed SmolLM2-sized inputs (the MLP's linear layers at a prompt pass's and a decoding step's row counts, causal
    attention, RMSNorm, SiLU): machines with equal hashes write a run's texts alike. The bf16 ones differ between
    oneDNN's AMX, avx512_bf16 and older paths, which changes mixed-precision texts (docs/inference.md)."""
    return dict(_kernel_fingerprint(device, torch.get_num_threads()))


@functools.lru_cache(maxsize=4)
def _kernel_fingerprint(device: str, threads: int) -> tuple:
    """kernel_fingerprint's items for `threads` intra-op threads (cached: under a second on a 2-core CPU)."""
    generator = torch.Generator().manual_seed(0)
    up = (torch.randn(1536, 576, generator=generator) * 0.05).to(device)  # [out,in]
    down = (torch.randn(576, 1536, generator=generator) * 0.05).to(device)  # [out,in]
    rows = torch.randn(4096, 576, generator=generator).to(device)  # [tokens,in]: 30 prompts of 137 tokens
    wide = torch.randn(4096, 1536, generator=generator).to(device)  # [tokens,in]
    heads = torch.randn(1, 9, 128, 64, generator=generator).to(device)  # [B,heads,L,head_dim]
    out = {"probe": KERNEL_PROBE, "device": cpu_name() if device == "cpu" else torch.cuda.get_device_name(),
           "capability": torch.backends.cpu.get_cpu_capability() if device == "cpu" else device, "threads": threads}
    for name, dtype in (("float32", None), ("bfloat16", torch.bfloat16)):
        digest = hashlib.sha256()
        with torch.no_grad(), torch.autocast(device, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            for part in (torch.nn.functional.linear(rows, up),  # [4096,1536]
                         torch.nn.functional.linear(rows[:48], up),  # [48,1536]: one decoding step of 48 users
                         torch.nn.functional.linear(wide, down),  # [4096,576]
                         torch.nn.functional.linear(wide[:48], down),  # [48,576]
                         torch.nn.functional.scaled_dot_product_attention(heads, heads, heads, is_causal=True),
                         rows * torch.rsqrt(rows.pow(2).mean(-1, keepdim=True) + 1e-5),  # [4096,576]
                         torch.nn.functional.silu(rows)):
                digest.update(part.float().cpu().numpy().tobytes())
        out[name] = digest.hexdigest()[:16]
    return tuple(out.items())


def kernel_drift(recorded: dict | None, precision: str, now: dict) -> str | None:
    """What differs between the kernels that wrote a run's texts (`recorded`, None for runs from before the record)
    and this machine's (`now`) in the parts the run's resolved `precision` uses; None when nothing does or the two
    come from different probes."""
    if not recorded or recorded.get("probe") != now.get("probe"):  # before the record, or another probe's hashes
        return None
    parts = ("float32",) if precision == "float32" else ("float32", "bfloat16")
    changed = [part for part in parts if recorded.get(part) != now.get(part)]
    if not changed:
        return None
    def where(kernels: dict) -> str:
        return f"{kernels.get('capability')}, {kernels.get('threads')} threads, {kernels.get('device')}"
    return (f"this machine's {' and '.join(changed)} kernels compute otherwise than those that wrote the run's texts "
            f"({where(now)} now; {where(recorded)} then): texts and lists computed now may differ from the run's "
            f"cached ones")

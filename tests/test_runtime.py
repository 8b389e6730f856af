"""The CPU's bf16 choice for joint training: taken where bf16 measures faster, not from the flags alone."""
import pytest
import torch

from engine.model import runtime
from train.deftrec import make_accelerator


@pytest.fixture
def fresh_accelerate_state():
    """Accelerate keeps one process-wide state; each case starts and leaves it unset."""
    from accelerate.state import AcceleratorState
    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def test_bf16_speedup_is_a_measured_ratio():
    runtime.cpu_bf16_speedup.cache_clear()
    ratio = runtime.cpu_bf16_speedup()
    assert 0.05 < ratio < 20
    assert runtime.cpu_bf16_speedup() == ratio  # measured once per process


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU path only")
@pytest.mark.parametrize(("native", "speedup", "asked", "expected"), [
    (True, 1.3, True, "bf16"),   # the AMD EPYC case
    (True, 0.6, True, "no"),     # the Intel Xeon case: native bf16, slower than fp32
    (True, 1.05, True, "no"),    # within the margin: fp32
    (False, 1.3, True, "no"),    # no native bf16
    (True, 1.3, False, "no"),    # the profile does not ask
])
def test_accelerator_uses_bf16_only_where_it_pays(monkeypatch, fresh_accelerate_state, native, speedup, asked, expected):
    monkeypatch.setattr(runtime, "cpu_supports_bf16", lambda: native)
    monkeypatch.setattr(runtime, "cpu_bf16_speedup", lambda: speedup)
    assert make_accelerator(asked).mixed_precision == expected


def test_auto_precision_resolves_by_the_probe(monkeypatch):
    from engine.model import runtime
    assert runtime.resolve_precision("float32", "cpu") == "float32"
    assert runtime.resolve_precision("mixed", "cuda") == "mixed"
    monkeypatch.setattr(runtime, "cpu_bf16_pays", lambda: True)
    assert runtime.resolve_precision("auto", "cpu") == "mixed"
    assert runtime.resolve_precision("auto", "cuda") == "float32"  # the LLM is held in bf16 there already
    monkeypatch.setattr(runtime, "cpu_bf16_pays", lambda: False)
    assert runtime.resolve_precision("auto", "cpu") == "float32"


def test_kernel_fingerprint_is_stable_in_a_process_and_across_threads():
    # probe 1's 1024-row linear rounded otherwise with 1 and 2 threads under AMX, though a run's texts did not change
    first = runtime.kernel_fingerprint()
    assert set(first) == {"probe", "device", "capability", "threads", "float32", "bfloat16"}
    assert all(len(first[part]) == 16 and int(first[part], 16) >= 0 for part in ("float32", "bfloat16"))
    assert runtime.kernel_fingerprint() == first
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1 if threads > 1 else 2)
        other = runtime.kernel_fingerprint()
    finally:
        torch.set_num_threads(threads)
    assert (other["float32"], other["bfloat16"]) == (first["float32"], first["bfloat16"])


@pytest.mark.skipif(not runtime.cpu_supports_bf16(), reason="oneDNN's bf16 path has nothing to step down from here")
def test_kernel_fingerprint_notices_other_bf16_kernels():
    # oneDNN held to AVX2 stands for a CPU without native bf16: its bf16 matmuls round otherwise, its float32 ones
    # (MKL) are untouched; the CI machine of 2026-12-05 has avx512_bf16 and AMX
    import json
    import os
    import subprocess
    import sys
    code = (f"import json, torch; torch.set_num_threads({torch.get_num_threads()}); "
            "from engine.model.runtime import kernel_fingerprint; print(json.dumps(kernel_fingerprint()))")
    other = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                      env={**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}).stdout)
    here = runtime.kernel_fingerprint()
    assert other["float32"] == here["float32"]
    assert other["bfloat16"] != here["bfloat16"]
    assert "bfloat16 kernels" in runtime.kernel_drift(here, "mixed", other)
    assert runtime.kernel_drift(here, "float32", other) is None


def test_kernel_drift_names_what_differs():
    then = {"probe": 2, "device": "A", "capability": "AVX512", "threads": 2, "float32": "a" * 16, "bfloat16": "b" * 16}
    assert runtime.kernel_drift(None, "mixed", then) is None  # a run from before the record
    assert runtime.kernel_drift(then, "mixed", dict(then)) is None
    now = {**then, "device": "B", "threads": 1, "bfloat16": "c" * 16}
    text = runtime.kernel_drift(then, "bfloat16", now)
    assert text.startswith("this machine's bfloat16 kernels") and "1 threads, B now" in text and "2 threads, A then" in text
    assert runtime.kernel_drift(then, "float32", now) is None
    assert "float32 and bfloat16" in runtime.kernel_drift(then, "mixed", {**now, "float32": "d" * 16})
    assert runtime.kernel_drift({**then, "probe": 1}, "mixed", now) is None  # another probe's hashes: not comparable

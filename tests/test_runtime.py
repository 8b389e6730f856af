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

"""The refinement loop's options: the weight average its checks can read, and a freshly initialized start."""

from __future__ import annotations

import numpy as np
import pytest
import torch


def _setup():
    from engine.model.config import config_from_v1
    from engine.model.diffusion import Denoiser
    config = config_from_v1({"llm": "tiny", "num_inference_steps": 10})
    torch.manual_seed(0)
    denoiser = Denoiser(config.diffusion)
    users = np.repeat(np.arange(6), 4)
    items = np.arange(24) % 10
    conditions = torch.randn(6, config.diffusion.cond_dim)  # [U,D]
    item_q = torch.randn(10, config.diffusion.item_dim)  # [n,d]
    return config, denoiser, conditions, users, items, item_q


def _refine(ema_decay: float, epochs: int = 3):
    """Refine a seeded denoiser; (the states its checks saw, its weights afterwards)."""
    from engine.model.refine import refine_epochs
    config, denoiser, conditions, users, items, item_q = _setup()
    seen = []

    def check(epoch: int) -> int:
        seen.append({k: v.clone() for k, v in denoiser.state_dict().items()})
        return epoch

    refine_epochs(denoiser, config, conditions, users, items, item_q, epochs, 0, check, np.random.default_rng(1),
                  torch.Generator().manual_seed(1), "cpu", ema_decay=ema_decay)
    return seen, {k: v.clone() for k, v in denoiser.state_dict().items()}


def test_the_weight_average_changes_what_checks_see_not_the_training():
    plain_seen, plain = _refine(0.0)
    averaged_seen, trained = _refine(0.9)
    assert all(torch.equal(plain[k], trained[k]) for k in plain)  # the same steps, the trained weights put back
    assert all(torch.equal(plain_seen[-1][k], plain[k]) for k in plain)  # without it a check sees the trained weights
    changed = [k for k in plain if k.endswith("weight") and not torch.allclose(averaged_seen[-1][k], trained[k])]
    assert changed  # with it, the average
    nearly_none_seen, _ = _refine(1e-12)  # an average that forgets at once is the trained weights
    assert all(torch.allclose(nearly_none_seen[-1][k], plain[k], atol=1e-6) for k in plain)


def test_a_fresh_denoiser_is_a_newly_built_one_seeded_by_the_run():
    from engine.model.diffusion import Denoiser
    from train.deftrec import fresh_denoiser
    config, denoiser, *_ = _setup()
    with torch.no_grad():
        for p in denoiser.parameters():
            p.add_(1.0)  # as if trained
    before = torch.get_rng_state()
    fresh_denoiser(denoiser, seed=5)
    assert torch.equal(torch.get_rng_state(), before)  # the global generator is left as it was
    torch.manual_seed(7)
    expected = Denoiser(config.diffusion).state_dict()
    assert all(torch.equal(denoiser.state_dict()[k], expected[k]) for k in expected)


def test_refine_init_accepts_joint_and_fresh_only():
    from engine.model.config import DeftRecConfig
    assert DeftRecConfig().training.refine_init == "joint"
    assert DeftRecConfig().updated({"training.refine_init": "fresh"}).training.refine_init == "fresh"
    with pytest.raises(ValueError, match="refine_init must be one of joint, fresh"):
        DeftRecConfig().updated({"training.refine_init": "warm"})



def test_the_refinement_stops_at_its_first_check_past_its_time_bound():
    """seconds: a check past the bound ends the refinement and says so; without one it runs every epoch."""
    import time

    from engine.model.refine import refine_epochs
    config, denoiser, conditions, users, items, item_q = _setup()
    seen = []

    def slow_check(epoch: int) -> int:
        time.sleep(0.05)
        return epoch  # always a new best: patience never stops it

    def run(seconds: float) -> str:
        seen.clear()
        return refine_epochs(denoiser, config, conditions, users, items, item_q, 12, 1, slow_check,
                             np.random.default_rng(1), torch.Generator().manual_seed(1), "cpu",
                             lambda epoch, checked, stopping: seen.append((epoch, checked, stopping)), seconds=seconds)

    assert run(0.01) == "time" and seen[-1] == (3, True, True)  # the first check is already past 10 ms
    assert run(0.0) == "epochs" and len(seen) == 12 and not any(stopping for *_, stopping in seen)
    assert run(3600.0) == "epochs" and len(seen) == 12

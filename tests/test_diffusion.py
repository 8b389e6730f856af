"""Numbers of the DDPM schedule, the respaced sampler, the denoiser and the losses of Eq. 10 and Eq. 13."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from engine.model.diffusion import (
    DDPMSchedule,
    Denoiser,
    DiffusionConfig,
    RegressionHead,
    contrastive_diffusion_losses,
    diffusion_loss,
    negative_loss,
)

T = 1000


def hand_alphas_cumprod() -> list[float]:
    """ᾱ_t = Π_{i<=t} (1 − β_i), β_i = 1e-4 + (0.02 − 1e-4)·i/999, in Python float64."""
    out, prod = [], 1.0
    for i in range(T):
        prod *= 1.0 - (1e-4 + (0.02 - 1e-4) * i / (T - 1))
        out.append(prod)
    return out


def dummy_eps(x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    """A deterministic stand-in for ε_θ."""
    return 0.1 * x + 0.01 * t[:, None].float() / 1000


def test_alphas_cumprod_pinned():
    sched = DDPMSchedule()
    hand = hand_alphas_cumprod()
    literals = {0: 0.9999, 9: 0.998105205, 499: 0.0785872429, 999: 4.03582977e-05}
    assert sched.betas.dtype == sched.alphas_cumprod.dtype == torch.float32
    assert sched.alphas_cumprod.shape == (T,)
    for t, lit in literals.items():
        assert hand[t] == pytest.approx(lit, rel=1e-6)
        assert float(sched.alphas_cumprod[t]) == pytest.approx(hand[t], rel=1e-6)
    assert float(sched.betas[0]) == pytest.approx(1e-4) and float(sched.betas[-1]) == pytest.approx(0.02)
    assert torch.allclose(sched.alphas, 1 - sched.betas)


def test_add_noise_matches_eq8_by_hand():
    sched = DDPMSchedule()
    x0 = torch.tensor([[1.0, -2.0], [0.5, 3.0]])
    noise = torch.tensor([[0.3, 0.1], [-1.0, 2.0]])
    t = torch.tensor([0, 499])
    out = sched.add_noise(x0, noise, t)
    hand = hand_alphas_cumprod()
    for b, tb in enumerate((0, 499)):
        for j in range(2):
            want = math.sqrt(hand[tb]) * float(x0[b, j]) + math.sqrt(1 - hand[tb]) * float(noise[b, j])
            assert float(out[b, j]) == pytest.approx(want, rel=1e-5)
    # t=0: sqrt(0.9999)·1 + sqrt(1e-4)·0.3 = 0.99995 + 0.003
    assert float(out[0, 0]) == pytest.approx(1.0029499875, rel=1e-6)


def test_respaced_timesteps_and_betas():
    sched = DDPMSchedule()
    steps = sched.timesteps(100)
    assert steps[:3] == [990, 980, 970] and steps[-2:] == [10, 0] and len(steps) == 100
    assert sched.timesteps(10) == [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]
    hand = hand_alphas_cumprod()
    rb = sched.respaced_betas(100)
    assert rb.shape == (100,)
    for i in (1, 50, 99):
        assert float(rb[i]) == pytest.approx(1 - hand[10 * i] / hand[10 * (i - 1)], rel=1e-9)
    literals = {0: 1e-4, 1: 0.00209363686, 50: 0.0953467745, 99: 0.18068233}
    for i, lit in literals.items():
        assert float(rb[i]) == pytest.approx(lit, rel=1e-6)
    # the respaced chain keeps ᾱ: Π (1 − β'_i) up to s_i equals ᾱ_{s_i}
    assert float(torch.prod(1 - rb)) == pytest.approx(hand[990], rel=1e-9)


def test_step_is_eq11_mean_plus_posterior_noise():
    sched = DDPMSchedule(item_dim=3)
    x_t = torch.tensor([[0.2, -1.0, 0.7]])
    eps = torch.tensor([[0.5, 0.1, -0.3]])
    hand = hand_alphas_cumprod()
    t, tp = 500, 490
    beta = 1 - hand[t] / hand[tp]
    mean = (x_t.double() - beta / math.sqrt(1 - hand[t]) * eps.double()) / math.sqrt(1 - beta)  # Ho Eq. 11
    var = (1 - hand[tp]) / (1 - hand[t]) * beta
    z = torch.randn(1, 3, generator=torch.Generator().manual_seed(7)).double()
    out = sched.step(eps, t, tp, x_t, torch.Generator().manual_seed(7))
    assert torch.allclose(out.double(), mean + math.sqrt(var) * z, atol=1e-6)
    # the last step returns x̂_0 and draws nothing
    g = torch.Generator().manual_seed(7)
    final = sched.step(eps, 0, -1, x_t, g)
    x0_hat = (x_t.double() - math.sqrt(1 - hand[0]) * eps.double()) / math.sqrt(hand[0])
    assert torch.allclose(final.double(), x0_hat, atol=1e-6)
    assert torch.equal(torch.randn(1, generator=g), torch.randn(1, generator=torch.Generator().manual_seed(7)))


def reference_loop(seed: int, batch: int, dim: int) -> torch.Tensor:
    """The 100-step sampler written independently in float64 (Ho et al. Eq. 11 with respaced β')."""
    hand = hand_alphas_cumprod()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, dim, generator=g).double()
    steps = list(range(990, -1, -10))
    for i, t in enumerate(steps):
        abar_prev = hand[steps[i + 1]] if i + 1 < len(steps) else 1.0
        beta = 1 - hand[t] / abar_prev
        eps = 0.1 * x + 0.01 * t / 1000
        if i + 1 == len(steps):
            x = (x - math.sqrt(1 - hand[t]) * eps) / math.sqrt(hand[t])
        else:
            mean = (x - beta / math.sqrt(1 - hand[t]) * eps) / math.sqrt(1 - beta)
            var = (1 - abar_prev) / (1 - hand[t]) * beta
            x = mean + math.sqrt(var) * torch.randn(batch, dim, generator=g).double()
    return x


def test_full_reverse_loop_pinned_checksum():
    sched = DDPMSchedule(item_dim=4)
    cond = torch.zeros(3, 5)
    traj = sched.sample(dummy_eps, cond, torch.Generator().manual_seed(0))
    assert traj.shape == (101, 3, 4) and traj.dtype == torch.float32
    y = traj[-1]
    assert float(y.sum()) == pytest.approx(-171.234344, rel=1e-5)
    assert y[0].tolist() == pytest.approx([34.2845993, 78.8778381, -86.5821152, 3.52303457], rel=1e-5)
    assert float(traj.sum()) == pytest.approx(-8395.36035, rel=1e-5)
    assert torch.allclose(y.double(), reference_loop(0, 3, 4), rtol=1e-4, atol=1e-4)
    again = sched.sample(dummy_eps, cond, torch.Generator().manual_seed(0))
    assert torch.equal(traj, again)


def test_trajectory_starts_at_first_draw_and_depends_on_seed():
    sched = DDPMSchedule(item_dim=4)
    cond = torch.zeros(2, 5)
    traj = sched.sample(dummy_eps, cond, torch.Generator().manual_seed(3), num_inference_steps=10)
    assert traj.shape == (11, 2, 4)
    assert torch.equal(traj[0], torch.randn(2, 4, generator=torch.Generator().manual_seed(3)))
    same = sched.sample(dummy_eps, cond, torch.Generator().manual_seed(3), num_inference_steps=10)
    other = sched.sample(dummy_eps, cond, torch.Generator().manual_seed(4), num_inference_steps=10)
    assert torch.equal(traj, same)
    assert not torch.allclose(traj[-1], other[-1])


def test_oracle_eps_recovers_x0():
    sched = DDPMSchedule(item_dim=4)
    x0 = torch.tensor([[0.5, -0.2, 1.0, 0.0], [-1.0, 0.3, 0.2, 0.8]])
    abar = sched.alphas_cumprod

    def oracle(x, t, cond):
        a = abar[t][:, None]
        return (x - a.sqrt() * x0) / (1 - a).sqrt()

    traj = sched.sample(oracle, torch.zeros(2, 3), torch.Generator().manual_seed(1), num_inference_steps=20)
    assert torch.allclose(traj[-1], x0, atol=1e-4)


def test_diffusion_loss_is_hand_mse():
    pred = torch.tensor([[1.0, 2.0], [0.0, -1.0]])
    eps = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    assert float(diffusion_loss(pred, eps)) == pytest.approx((1 + 4 + 1 + 4) / 4)


def test_negative_loss_sign_value_and_per_sample():
    eps = torch.zeros(3, 4)
    neg = torch.ones(3, 4)
    equal = negative_loss(torch.ones(3, 4), neg, eps)
    assert float(equal) == pytest.approx(math.log(2))
    better = negative_loss(0.5 * torch.ones(3, 4), neg, eps)
    assert float(better) < float(equal)
    # by hand, Eq. 13's squared norms (sums over d = 4): ‖ε̂⁺−ε‖² = 4·0.25 = 1, ‖ε̂⁻−ε‖² = 4 -> −log σ(3)
    assert float(better) == pytest.approx(-math.log(1 / (1 + math.exp(-3.0))))
    # the mean over d divides the logit by d: −log σ(0.75)
    mean = negative_loss(0.5 * torch.ones(3, 4), neg, eps, norm="mean")
    assert float(mean) == pytest.approx(-math.log(1 / (1 + math.exp(-0.75))))
    with pytest.raises(ValueError):
        negative_loss(neg, neg, eps, norm="max")
    per = negative_loss(0.5 * torch.ones(3, 4), neg, eps, reduction="none")
    neg2 = neg.clone()
    neg2[1] = 3.0
    per2 = negative_loss(0.5 * torch.ones(3, 4), neg2, eps, reduction="none")
    assert per.shape == (3,)
    assert torch.equal(per[[0, 2]], per2[[0, 2]]) and float(per2[1]) < float(per[1])


def test_contrastive_losses_and_gradient_flow():
    torch.manual_seed(0)
    cfg = DiffusionConfig(cond_dim=8, item_dim=4, hidden_dim=16, time_embed_dim=8, dropout=0.0)
    den = Denoiser(cfg)
    sched = DDPMSchedule.from_config(cfg)
    x_pos, x_neg, cond = torch.randn(5, 4), torch.randn(5, 4), torch.randn(5, 8)
    l_diff, l_neg = contrastive_diffusion_losses(den, sched, x_pos, x_neg, cond, torch.Generator().manual_seed(2))
    again = contrastive_diffusion_losses(den, sched, x_pos, x_neg, cond, torch.Generator().manual_seed(2))
    assert torch.equal(l_diff, again[0]) and torch.equal(l_neg, again[1])
    # recompute by hand with the same draws (t first, then ε)
    g = torch.Generator().manual_seed(2)
    t = torch.randint(0, T, (5,), generator=g)
    eps = torch.randn(5, 4, generator=g)
    with torch.no_grad():
        pred_pos = den(sched.add_noise(x_pos, eps, t), t, cond)
        pred_neg = den(sched.add_noise(x_neg, eps, t), t, cond)
    assert l_diff.item() == pytest.approx(float(((pred_pos - eps) ** 2).mean()), rel=1e-5)
    assert l_neg.item() == pytest.approx(float(negative_loss(pred_pos, pred_neg, eps)), rel=1e-5)
    (l_diff + 0.1 * l_neg).backward()
    for name, p in den.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_denoiser_and_head_shapes():
    cfg = DiffusionConfig(cond_dim=8, item_dim=4, hidden_dim=16, time_embed_dim=8, n_layers=3)
    den = Denoiser(cfg).eval()
    out = den(torch.randn(2, 4), torch.tensor([0, 999]), torch.randn(2, 8))
    assert out.shape == (2, 4)
    assert sum(isinstance(m, torch.nn.Linear) for m in den.net) == 4
    assert RegressionHead(cfg)(torch.randn(2, 8)).shape == (2, 4)
    assert DiffusionConfig(cond_dim=576).num_inference_steps == 100


def test_temperature_scales_start_and_step_noise():
    sched = DDPMSchedule(item_dim=3)
    x_t = torch.tensor([[0.2, -1.0, 0.7]])
    eps = torch.tensor([[0.5, 0.1, -0.3]])
    mean = sched.step(eps, 500, 490, x_t, torch.Generator().manual_seed(7), temperature=0.0)
    full = sched.step(eps, 500, 490, x_t, torch.Generator().manual_seed(7))
    half = sched.step(eps, 500, 490, x_t, torch.Generator().manual_seed(7), temperature=0.5)
    assert torch.allclose(half, mean + 0.5 * (full - mean), atol=1e-6)
    hand = hand_alphas_cumprod()
    beta = 1 - hand[500] / hand[490]
    hand_mean = (x_t.double() - beta / math.sqrt(1 - hand[500]) * eps.double()) / math.sqrt(1 - beta)
    assert torch.allclose(mean.double(), hand_mean, atol=1e-6)
    cond = torch.zeros(2, 5)
    g = torch.Generator().manual_seed(3)
    traj = sched.sample(dummy_eps, cond, g, num_inference_steps=10, temperature=0.0)
    assert torch.equal(traj[0], torch.zeros(2, 3))  # x_T at the mean of N(0, I)
    assert torch.equal(traj, sched.sample(dummy_eps, cond, torch.Generator().manual_seed(9), num_inference_steps=10,
                                          temperature=0.0))  # no randomness left
    assert torch.equal(torch.randn(1, generator=g), torch.randn(1, generator=torch.Generator().manual_seed(3)))
    scaled = sched.sample(dummy_eps, cond, torch.Generator().manual_seed(3), num_inference_steps=10, temperature=0.5)
    assert torch.equal(scaled[0], 0.5 * torch.randn(2, 3, generator=torch.Generator().manual_seed(3)))
    with pytest.raises(ValueError):
        sched.sample(dummy_eps, cond, g, temperature=1.5)


def test_condition_standardizer_uses_batch_then_running_statistics():
    cfg = DiffusionConfig(cond_dim=3, item_dim=2, hidden_dim=8, time_embed_dim=4, cond_standardize=True)
    den = Denoiser(cfg)
    cond = torch.tensor([[0.9, 0.1, 0.5], [0.7, 0.3, 0.5], [0.8, 0.2, 0.5]])
    out = den.cond_norm(cond)
    assert torch.allclose(out[:, 0], torch.tensor([1.2247, -1.2247, 0.0]), atol=1e-3)  # (x − mean)/biased std
    assert den.cond_norm.running_mean.tolist() == pytest.approx([0.08, 0.02, 0.05])  # momentum 0.1 from 0
    den(torch.randn(1, 2), torch.tensor([5]), cond[:1])  # a training batch of one uses the running statistics
    den.eval()
    single = den.cond_norm(cond[:1])
    rm, rv = den.cond_norm.running_mean, den.cond_norm.running_var
    assert torch.allclose(single, (cond[:1] - rm) / (rv + 1e-5).sqrt(), atol=1e-6)
    assert "cond_norm.running_mean" in den.state_dict()
    assert "cond_norm.running_mean" not in Denoiser(DiffusionConfig(cond_dim=3, item_dim=2,
                                                                    cond_standardize=False)).state_dict()


def test_refinement_pairs_keep_each_users_latest_n_items_tiled():
    from engine.model.refine import refinement_pairs
    users = np.array([0, 0, 0, 0, 1, 1, 2])  # per user in time order
    items = np.array([10, 11, 12, 13, 20, 21, 30])
    u, i = refinement_pairs("recent", users, items, 2)
    assert list(zip(u[:5], i[:5])) == [(0, 12), (0, 13), (1, 20), (1, 21), (2, 30)]
    assert len(u) == 5  # 7 pairs // 5 kept = 1 tile
    u, i = refinement_pairs("recent", users, items, 1)
    assert list(zip(u, i)) == [(0, 13), (1, 21), (2, 30)] * 2  # 7 // 3 = 2 tiles
    u, i = refinement_pairs("random", users, items, 1)
    assert list(i) == list(items)  # history 'random': every pair, whatever n

"""L_align (not the paper, --align-weight): a ridge probe of c, refitted each step on the latest (c, user vector) pairs,
predicts the user's LightGCN vector. Its value is hand-computed, the probe equals brute-force ridge, it reaches the
LLM through c, and a weight of 0 leaves Eq. 15 as it was (no probe, no term)."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch


def test_alignment_loss_hand_computed():
    from train.objective import alignment_loss

    target = torch.tensor([[1.0, 1.0], [0.0, 1.0]])  # mean square 3/4
    predicted = torch.tensor([[1.0, 0.0], [0.0, 0.0]])  # squared errors 0, 1, 0, 1: mean 1/2
    assert float(alignment_loss(predicted, target)) == pytest.approx(0.5 / 0.75)
    assert float(alignment_loss(torch.zeros(2, 2), target)) == pytest.approx(1.0)  # predicting zero
    assert float(alignment_loss(target.clone(), target)) == 0.0


def _objective(align_weight: float):
    from engine.model.config import config_from_v1
    from engine.model.recommender import build_model
    from train.deftrec import PROFILES, JointSampler
    from train.objective import JointObjective

    torch.manual_seed(0)
    config = config_from_v1({"llm": "tiny", "llm_hidden": 64}).updated({"training.align_weight": align_weight})
    n_users, n_items = 4, 12
    histories = [np.arange(u, u + 6) % n_items for u in range(n_users)]
    model = build_model(config, ([f"item {i}" for i in range(n_items)], ["A|B"] * n_items, histories),
                        torch.randn(n_users, config.diffusion.item_dim), torch.randn(n_items, config.diffusion.item_dim),
                        seed=0)
    users = np.repeat(np.arange(n_users), 6)
    split = SimpleNamespace(n_items=n_items, n_users=n_users,
                            train_pairs=lambda: (users, np.concatenate(histories)))
    sampler = JointSampler(model, split, replace(PROFILES["tiny"], max_history=4), np.random.default_rng(0))
    return JointObjective(model.llm, model.heads, config, model.ct_id), sampler.batch(4)


def test_the_probe_exists_and_its_term_counts_only_with_a_weight():
    generator = torch.Generator().manual_seed(0)
    plain, batch = _objective(0.0)
    assert plain.probe is None and "l_align" not in plain(batch, generator)

    aligned, batch = _objective(2.0)
    parts = aligned(batch, torch.Generator().manual_seed(0))
    assert float(parts["l_align"]) == 0.0  # the probe's bank holds 4 pairs: too few to fit
    for _ in range(8):
        parts = {k: float(v.detach()) for k, v in aligned(batch, torch.Generator().manual_seed(0)).items()}
    assert parts["l_align"] > 0
    training = aligned.config.training
    rest = parts["l_diff"] + training.gamma1 * parts["l_llm"] + training.gamma2 * parts["l_neg"]
    assert parts["loss"] == pytest.approx(rest + 2.0 * parts["l_align"], rel=1e-5)


def test_the_alignment_gradient_reaches_the_llm_through_c():
    aligned, batch = _objective(1.0)
    with torch.no_grad():
        for _ in range(8):
            aligned(batch, torch.Generator().manual_seed(0))
    aligned(batch, torch.Generator().manual_seed(0))["l_align"].backward()
    lora = [p for n, p in aligned.llm.named_parameters() if "lora_" in n and p.requires_grad]
    assert lora and any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in lora)
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0 for p in aligned.heads.denoiser.parameters())


def test_train_records_the_weight_and_logs_the_term(tmp_path):
    import json

    from typer.testing import CliRunner

    from deftrec_tui.cli import app
    from tests.conftest import write_clustered_csv

    write_clustered_csv(tmp_path / "data")
    result = CliRunner().invoke(app, ["train", "--dataset", f"csv:{tmp_path / 'data'}", "--out", str(tmp_path / "runs"),
                                      "--name", "aligned", "--llm", "tiny", "--profile", "tiny", "--cf-epochs", "2",
                                      "--threads", "1", "--align-weight", "0.5"])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "runs" / "aligned" / "config.json").read_text())["deftrec"]
    assert record["config"]["training"]["align_weight"] == 0.5
    assert record["loss_log"] and all(np.isfinite(row["l_align"]) for row in record["loss_log"])


def _numpy_ridge(x: np.ndarray, y: np.ndarray, lam: float, new: np.ndarray) -> np.ndarray:
    """Brute-force ridge (primal form, float64): x standardized with its own mean and unbiased std, y centred."""
    mean, std = x.mean(0), x.std(0, ddof=1)
    z = (x - mean) / std
    w = np.linalg.solve(z.T @ z + lam * np.eye(x.shape[1]), z.T @ (y - y.mean(0)))
    return ((new - mean) / std) @ w + y.mean(0)


def test_ridge_probe_equals_brute_force_ridge_on_its_bank_and_keeps_the_latest_pairs():
    from train.objective import RidgeProbe

    rng = np.random.default_rng(0)
    c = rng.normal(size=(40, 6)).astype(np.float32)
    u = (c @ rng.normal(size=(6, 3)) + 0.1 * rng.normal(size=(40, 3))).astype(np.float32)
    probe = RidgeProbe(6, 3, size=24, lam=2.0, min_pairs=8)
    assert probe(torch.from_numpy(c[:4]), torch.from_numpy(u[:4])) is None
    assert probe(torch.from_numpy(c[4:8]), torch.from_numpy(u[4:8])) is None  # 4 pairs seen before this batch
    for start in range(8, 32, 4):  # 32 pairs seen: the bank of 24 keeps pairs 8..31
        probe(torch.from_numpy(c[start:start + 4]), torch.from_numpy(u[start:start + 4]))
    new = torch.from_numpy(c[32:40]).requires_grad_()
    predicted = probe(new, torch.from_numpy(u[32:40]))
    expected = _numpy_ridge(c[8:32].astype(np.float64), u[8:32].astype(np.float64), 2.0, c[32:40].astype(np.float64))
    np.testing.assert_allclose(predicted.detach().numpy(), expected, rtol=1e-4, atol=1e-4)
    predicted.sum().backward()
    assert new.grad is not None and float(new.grad.abs().sum()) > 0  # differentiable in c, not in the bank
    assert int(probe.running_count) == 40


def test_the_probe_bank_is_part_of_the_resume_state():
    from train.deftrec import trainable_state

    aligned, batch = _objective(1.0)
    with torch.no_grad():
        aligned(batch, torch.Generator().manual_seed(0))
    state = trainable_state(aligned)
    assert {"probe.running_conditions", "probe.running_users", "probe.running_count"} <= set(state)
    assert int(state["probe.running_count"]) == 4

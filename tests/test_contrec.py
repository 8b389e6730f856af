"""ContRec's options beside DeftRec's: the σ-VAE tokenizer, the dispersive loss, x0-prediction with classifier-free
guidance, --variant, and a tiny ContRec run end to end."""

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from deftrec_tui.cli import app
from engine.model.diffusion import (
    DDPMSchedule,
    DenoisingObjective,
    Denoiser,
    DiffusionConfig,
    contrastive_diffusion_losses,
    denoising_losses,
    dispersive_loss,
    guided,
)
from engine.model.tokenizer import ContinuousTokenizer, SigmaVAE, TokenizerConfig, draw_sigma
from engine.model.variants import variant_config, variant_label, variant_of

# ---------------------------------------------------------------- σ-VAE


def sigma_vae(**overrides) -> SigmaVAE:
    torch.manual_seed(0)
    config = TokenizerConfig(**{"out_dim": 16, "in_dim": 8, "k": 2, "kind": "sigma-vae", "mask_ratio": 0.0,
                                "dropout": 0.0, "sigma_scale": 0.5, **overrides})
    return SigmaVAE(config)


def test_sigma_is_drawn_from_a_fixed_distribution_not_learned():
    vae = sigma_vae()
    assert not any("sigma" in name or "logvar" in name for name, _ in vae.named_parameters())
    draws = draw_sigma(200_000, 0.5, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert draws.min() >= 0
    assert float(draws.mean()) == pytest.approx(0.5 * math.sqrt(2 / math.pi), rel=0.01)  # E|N(0, C²)|
    q = torch.randn(5, 8)
    vae.train()
    _, _, sigma_a = vae.encode(q, torch.Generator().manual_seed(1))
    _, _, sigma_b = vae.encode(q, torch.Generator().manual_seed(2))
    assert sigma_a.shape == (5,) and not torch.equal(sigma_a, sigma_b)  # per example, from the generator
    vae.eval()
    z, mu, sigma = vae.encode(q)
    assert torch.equal(z, mu) and torch.all(sigma == 0)  # inference reads μ
    assert torch.equal(vae(q), vae(q))


def test_zero_sigma_scale_is_a_plain_autoencoder():
    vae = sigma_vae(sigma_scale=0.0).train()
    z, mu, _ = vae.encode(torch.randn(4, 8))
    assert torch.equal(z, mu)


def toy_embeddings(n=256, seed=0) -> torch.Tensor:
    """Four clusters in 8 dims."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(4, 8, generator=g)
    return centers[torch.arange(n) % 4] + 0.3 * torch.randn(n, 8, generator=g)  # [n, 8]


def test_reconstruction_improves_and_latent_variance_stays_above_a_floor():
    q = toy_embeddings()
    vae = sigma_vae(sigma_scale=0.5)
    optimizer = torch.optim.Adam(vae.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    vae.eval()
    with torch.no_grad():
        before = float(torch.nn.functional.mse_loss(vae.decode(vae.encode(q)[0]), q))
    noise_variances = []
    for _ in range(300):
        vae.train()
        z, mu, sigma = vae.encode(q, generator)
        loss = torch.nn.functional.mse_loss(vae.decode(z), q)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        # the latent's variance around its mean, per example over the K·D entries, averaged over the batch
        noise_variances.append(float((z - mu).detach().pow(2).mean()))
    vae.eval()
    with torch.no_grad():
        after = float(torch.nn.functional.mse_loss(vae.decode(vae.encode(q)[0]), q))
    assert after < 0.5 * before
    # E[σ²]·out_scale² = C_σ² = 0.25; the encoder cannot shrink it, however long it trains
    floor = 0.5 * 0.5 ** 2
    assert min(noise_variances) > floor
    assert noise_variances[-1] == pytest.approx(0.25, rel=0.3)
    # and the means stay spread out: tokens of different clusters are not one point
    with torch.no_grad():
        mu = vae.encode(q)[1].flatten(1)  # [n, K*D]
    assert float(mu.var(0).mean()) > 0.1


def test_tokenizer_reconstruction_loss_skips_an_empty_side():
    torch.manual_seed(0)
    tokenizer = ContinuousTokenizer(TokenizerConfig(out_dim=16, in_dim=8, kind="sigma-vae"))
    q = torch.randn(3, 8)
    assert tokenizer.has_decoder
    assert torch.isfinite(tokenizer.reconstruction_loss(q[:0], q))
    assert not ContinuousTokenizer(TokenizerConfig(out_dim=16, in_dim=8)).has_decoder


# ---------------------------------------------------------------- dispersive loss


def test_dispersive_loss_hand_computed_for_two_points():
    h = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    # mean squared distance over the 2 dims = 1; pairs (i, j) over all four, two of them at distance 0
    expected = math.log((2 * 1.0 + 2 * math.exp(-1.0 / 0.5)) / 4)
    assert float(dispersive_loss(h, tau=0.5)) == pytest.approx(expected, abs=1e-6)


def test_dispersive_loss_falls_as_a_batch_spreads_out():
    base = torch.randn(16, 32, generator=torch.Generator().manual_seed(0))
    values = [float(dispersive_loss(scale * base)) for scale in (0.0, 0.1, 0.3, 1.0, 3.0)]
    assert values[0] == pytest.approx(0.0, abs=1e-7)
    assert all(a > b for a, b in zip(values, values[1:]))
    assert values[-1] == pytest.approx(math.log(1 / 16), abs=1e-3)  # only the 16 i = j pairs remain


def test_dispersive_loss_of_a_batch_of_one_is_zero_with_zero_gradient():
    h = torch.randn(1, 8, requires_grad=True)
    loss = dispersive_loss(h)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(h.grad, torch.zeros_like(h))
    twins = torch.ones(2, 4, requires_grad=True)  # identical points: finite gradient (no sqrt at 0)
    dispersive_loss(twins).backward()
    assert torch.isfinite(twins.grad).all()


def test_dispersive_loss_equals_the_pairwise_definition_and_its_gradient():
    h = torch.randn(12, 20, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 0.3
    h.requires_grad_(True)
    reference = h.detach().clone().requires_grad_(True)
    sq_dist = (reference[:, None, :] - reference[None, :, :]).pow(2).mean(-1)  # [B, B] by differences
    expected = torch.log(torch.exp(-sq_dist / 0.5).mean())
    expected.backward()
    value = dispersive_loss(h, tau=0.5)
    value.backward()
    assert value.item() == pytest.approx(expected.item(), abs=1e-5)
    torch.testing.assert_close(h.grad.double(), reference.grad, atol=1e-5, rtol=1e-4)


def test_dispersive_gradient_pushes_points_apart():
    h = torch.tensor([[0.0, 0.0], [0.1, 0.0]], requires_grad=True)
    dispersive_loss(h).backward()
    assert h.grad[0, 0] > 0 > h.grad[1, 0]  # a gradient step moves them away from each other


# ---------------------------------------------------------------- x0-prediction and guidance


def test_x0_step_equals_the_eps_step_of_the_same_prediction():
    eps_schedule = DDPMSchedule(item_dim=3)
    x0_schedule = DDPMSchedule(item_dim=3, prediction="x0")
    x_t = torch.tensor([[0.5, -1.0, 2.0]])
    x0 = torch.tensor([[0.2, 0.1, -0.3]])
    t, t_prev = 500, 490
    abar = float(eps_schedule.alphas_cumprod[t])
    eps = (x_t - math.sqrt(abar) * x0) / math.sqrt(1 - abar)
    g = torch.Generator().manual_seed(0)
    a = eps_schedule.step(eps, t, t_prev, x_t, g, temperature=0.0)
    b = x0_schedule.step(x0, t, t_prev, x_t, g, temperature=0.0)
    assert torch.allclose(a, b, atol=1e-6)
    # the final step of the x0 schedule returns the model's x̂_0 itself
    assert torch.equal(x0_schedule.step(x0, 9, -1, x_t, g), x0)
    # pinned: the posterior mean sqrt(ᾱ')β'/(1−ᾱ)·x0 + sqrt(1−β')(1−ᾱ')/(1−ᾱ)·x_t, ᾱ = 0.077797, ᾱ' = 0.085996
    assert b.tolist()[0] == pytest.approx([0.47740, -0.93964, 1.87626], abs=1e-5)


def tiny_denoiser(**overrides) -> Denoiser:
    torch.manual_seed(0)
    return Denoiser(DiffusionConfig(**{"cond_dim": 6, "item_dim": 4, "hidden_dim": 16, "time_embed_dim": 8,
                                       "dropout": 0.0, **overrides})).eval()


def test_guidance_combines_conditional_and_null_predictions():
    den = tiny_denoiser(cond_dropout=0.1, prediction="x0")
    with torch.no_grad():
        den.null_cond.normal_()
    x, t, c = torch.randn(3, 4), torch.tensor([10, 500, 990]), torch.randn(3, 6)
    cond = den(x, t, c)
    null = den(x, t, c, torch.ones(3, dtype=torch.bool))
    assert not torch.allclose(cond, null)
    assert torch.allclose(guided(den, 1.0)(x, t, c), cond)
    assert torch.allclose(guided(den, 0.0)(x, t, c), null, atol=1e-6)
    assert torch.allclose(guided(den, 2.0)(x, t, c), 2 * cond - null, atol=1e-6)
    with pytest.raises(ValueError, match="condition dropout"):
        guided(tiny_denoiser(), 2.0)


@pytest.mark.parametrize("neg_norm", ["sum", "mean"])
def test_paper_setting_is_exactly_the_contrastive_losses(neg_norm):
    """denoising_losses' general path (no shortcut) equals the paper's own function, values and gradients."""
    den = tiny_denoiser()
    sched = DDPMSchedule(item_dim=4)
    x_pos, x_neg, cond = torch.randn(5, 4), torch.randn(5, 4), torch.randn(5, 6)
    a = contrastive_diffusion_losses(den, sched, x_pos, x_neg, cond, torch.Generator().manual_seed(3), neg_norm)
    grads_a = torch.autograd.grad(a[0] + a[1], list(den.parameters()), allow_unused=True)
    b = denoising_losses(den, sched, x_pos, x_neg, cond, torch.Generator().manual_seed(3),
                         DenoisingObjective("bpr", neg_norm=neg_norm))
    grads_b = torch.autograd.grad(b[0] + b[1], list(den.parameters()), allow_unused=True)
    assert [v.item() for v in a] == [v.item() for v in b]
    assert all((ga is None and gb is None) or torch.equal(ga, gb) for ga, gb in zip(grads_a, grads_b))
    # a different draw gives different losses, so the equality above is not two reads of one number
    c = denoising_losses(den, sched, x_pos, x_neg, cond, torch.Generator().manual_seed(4),
                         DenoisingObjective("bpr", neg_norm=neg_norm))
    assert [v.item() for v in c] != [v.item() for v in a]


def test_x0_losses_target_the_clean_vectors():
    den = tiny_denoiser(prediction="x0", cond_dropout=0.5)
    sched = DDPMSchedule(item_dim=4, prediction="x0")
    x_pos, x_neg, cond = torch.randn(8, 4), torch.randn(8, 4), torch.randn(8, 6)
    l_diff, l_neg = denoising_losses(den, sched, x_pos, x_neg, cond, torch.Generator().manual_seed(0),
                                     DenoisingObjective("bpr"))
    # redo by hand with the same draws
    g = torch.Generator().manual_seed(0)
    t = torch.randint(0, 1000, (8,), generator=g)
    eps = torch.randn(8, 4, generator=g)
    uncond = torch.rand(8, generator=g) < 0.5
    pred = den(torch.cat([sched.add_noise(x_pos, eps, t), sched.add_noise(x_neg, eps, t)]), torch.cat([t, t]),
               torch.cat([cond, cond]), torch.cat([uncond, uncond]))
    assert l_diff.item() == pytest.approx((pred[:8] - x_pos).pow(2).mean().item(), rel=1e-6)
    expected_neg = torch.nn.functional.softplus((pred[:8] - x_pos).pow(2).sum(1) - (pred[8:] - x_neg).pow(2).sum(1))  # Eq. 13: ‖·‖² sums over d
    assert l_neg.item() == pytest.approx(expected_neg.mean().item(), rel=1e-6)


def test_dispersive_objective_reads_the_middle_block_and_is_finite():
    den = tiny_denoiser(n_layers=3)
    sched = DDPMSchedule(item_dim=4)
    out, hidden = den(torch.randn(4, 4), torch.tensor([1, 2, 3, 4]), torch.randn(4, 6), return_hidden=True)
    assert out.shape == (4, 4) and hidden.shape == (4, 16)
    l_diff, l_disp = denoising_losses(den, sched, torch.randn(4, 4), torch.randn(4, 4), torch.randn(4, 6),
                                      torch.Generator().manual_seed(0), DenoisingObjective("dispersive"))
    assert torch.isfinite(l_diff) and l_disp.item() < 0
    one = denoising_losses(den, sched, torch.randn(1, 4), torch.randn(1, 4), torch.randn(1, 6),
                           torch.Generator().manual_seed(0), DenoisingObjective("dispersive"))[1]
    assert one.item() == 0.0


# ---------------------------------------------------------------- variants and the CLI


def test_variant_names():
    from engine.model.config import DeftRecConfig
    assert variant_of(DeftRecConfig()) == "deftrec"
    contrec = DeftRecConfig().updated({"tokenizer.kind": "sigma-vae", "diffusion.aux_loss": "dispersive",
                                       "diffusion.prediction": "x0", "diffusion.cond_dropout": 0.1,
                                       "tokenizer.pretrain_epochs": 50, "diffusion.guidance": 2.0})
    assert variant_of(contrec) == "contrec" and variant_of(variant_config("contrec")) == "contrec"
    assert variant_of(contrec.updated({"tokenizer.kind": "kway"})) == "custom"
    assert variant_label(contrec) == "contrec: σ-VAE tokenizer · dispersive x0-diffusion, CFG w=2"
    no_bpr = DeftRecConfig().updated({"diffusion.aux_loss": "none"})
    assert variant_label(no_bpr) == "deftrec: K-way tokenizer · plain eps-diffusion"


@pytest.mark.parametrize("args, message", [
    (["--variant", "nope"], "unknown variant"),
    (["--tokenizer", "vq"], "unknown --tokenizer"),
    (["--aux-loss", "mse"], "unknown --aux-loss"),
    (["--prediction", "v"], "unknown --prediction"),
    (["--refine-init", "warm"], "unknown --refine-init"),
    (["--guidance", "2"], "needs a denoiser trained with condition dropout"),
    (["--variant", "contrec", "--guidance", "-1"], "bad --guidance"),
])
def test_bad_variant_options_fail_in_one_line(tmp_path, args, message):
    result = CliRunner().invoke(app, ["train", "--dataset", "ml-100k", "--out", str(tmp_path), *args])
    assert result.exit_code == 2
    assert message in result.output
    assert not any(tmp_path.iterdir())


@pytest.fixture(scope="module")
def contrec_run(tmp_path_factory):
    from tests.conftest import train_tiny_run
    return train_tiny_run(tmp_path_factory.mktemp("contrec"), name="contrec", extra=("--variant", "contrec", "--dispersive-tau", "2"))


def test_contrec_run_records_every_choice_and_reloads_identically(contrec_run):
    import sqlite3

    from engine.services.export import test_history
    from engine.services.loading import open_deftrec
    from engine.services.run import Run

    config = json.loads((contrec_run / "config.json").read_text())["deftrec"]
    settings = config["config"]
    assert settings["variant"] == "contrec"
    tokenizer, diffusion = settings["tokenizer"], settings["diffusion"]
    assert (tokenizer["kind"], diffusion["aux_loss"], diffusion["prediction"], diffusion["cond_dropout"],
            tokenizer["sigma_scale"], settings["training"]["dispersive_weight"], tokenizer["pretrain_epochs"]) == (
        "sigma-vae", "dispersive", "x0", 0.1, 0.5, 0.5, 50)
    assert diffusion["dispersive_tau"] == 2.0  # a hyper-parameter of the loss, not of the variant
    assert diffusion["guidance"] in (1.0, 2.0) and {c["guidance"] for c in config["refine"]["checks"]} == {1.0, 2.0}
    tokenizer = config["tokenizer"]
    assert tokenizer["reconstruction_after"] < tokenizer["reconstruction_before"]
    assert tokenizer["user_effective_rank"] > 1 and 0 <= tokenizer["item_mean_abs_cosine"] <= 1
    assert {"l_disp", "l_rec"} <= set(config["loss_log"][-1]) and "l_neg" not in config["loss_log"][-1]

    run = Run.open(contrec_run)
    model = open_deftrec(run)
    assert model.config.diffusion.guidance == diffusion["guidance"] and model.heads.denoiser.null_cond is not None
    history, _ = test_history(run)
    db = sqlite3.connect(contrec_run / "catalog.sqlite")
    for result in model.recommend(list(range(8)), history, k=20):
        cached = db.execute("select item_idx from recommendations where model = 'deftrec' and user_idx = ? "
                            "order by rank", (result.preference.user_idx,)).fetchall()
        assert [r.item_idx for r in result.items] == [c[0] for c in cached]


def test_eval_puts_deftrec_and_contrec_side_by_side(tiny_run, contrec_run):
    result = CliRunner().invoke(app, ["eval", str(tiny_run), str(contrec_run), "--json"])
    assert result.exit_code == 0, result.output
    settings = json.loads(result.output)["settings"]
    assert settings["deftrec.config.variant"] == ["deftrec", "contrec"]
    assert settings["deftrec.config.tokenizer.kind"] == ["kway", "sigma-vae"]
    assert settings["deftrec.config.diffusion.aux_loss"] == ["bpr", "dispersive"]
    assert not any(key.startswith("deftrec.tokenizer.") for key in settings)
    paired = json.loads(result.output)["paired_test"]
    assert paired["users"] == 60 and sum(paired[k] for k in ("hit by A only", "hit by both")) == round(
        60 * paired["HR@10 A"])
    tokenizer = json.loads(result.output)["tokenizer"]
    recorded = json.loads((contrec_run / "config.json").read_text())["deftrec"]["tokenizer"]
    assert tokenizer["item_effective_rank"][1] == recorded["item_effective_rank"]
    assert tokenizer["reconstruction_after"][1] == recorded["reconstruction_after"]
    table = CliRunner().invoke(app, ["eval", str(tiny_run), str(contrec_run)])
    assert table.exit_code == 0 and "item_effective_rank" in table.output and "reconstruction_after" in table.output


def test_explorer_names_the_variant_and_steps_its_trajectory(contrec_run):
    import asyncio

    from deftrec_tui.app import create_app
    from deftrec_tui.widgets.trajectory import TrajectoryPanel
    from engine.services.session import RunSession

    session = RunSession(contrec_run)

    async def run() -> tuple:
        app_ = create_app(session)
        async with app_.run_test(size=(140, 44)) as pilot:
            await pilot.pause()
            await app_.workers.wait_for_complete()
            await pilot.pause()
            screen = app_.screen
            label = str(screen.query_one("#traj-variant").render())
            await pilot.press("2")  # the trajectory tab, stepped back to the start
            panel = screen.query_one(TrajectoryPanel)
            await pilot.press("comma", "comma")
            cached = session.cached(screen.user_idx)
            return (screen.sub_title, label, len(panel.explanation.steps), [panel.step],
                    [i.item_idx for i in screen.explanation.items], [i.item_idx for i in cached.items],
                    str(screen.query_one("#traj-stats").render()))
    sub_title, label, n_steps, step, shown, cached, stats = asyncio.run(run())
    assert sub_title.startswith("contrec: σ-VAE tokenizer · dispersive x0-diffusion, CFG w=")
    assert label == sub_title
    assert n_steps == 101 and step == [98] and "‖x_t‖" in stats  # the x0-parameterized chain, every step kept
    assert shown == cached

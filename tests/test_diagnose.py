"""`deftrec diagnose`: the ridge R² checked against its population value, the text counts on a hand-made table,
the CLI on the tiny run (agreeing with the metrics training stored), the ceiling with a small budget, and the
stored diagnostics in `deftrec eval --json` and the explorer's run summary."""

import json
import shutil
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from deftrec_tui.cli import app
from engine.services.diagnostics import _ridge, diagnose_run, ridge_r2, text_stats
from engine.services.evaluation import stored_metrics
from engine.services.run import Run

runner = CliRunner()
KEYS = {"run", "seed", "cf", "condition_r2", "recent_items_r2", "recent_items_cosine", "lightgcn_dot", "lightgcn_cosine", "text", "pi", "ceiling"}


def test_r2_of_a_noisy_copy_is_its_signal_share():
    """c = [u + N(0, σ²) | pure noise]: the best linear predictor of u has R² = 1/(1+σ²) (0.5 for σ = 1)."""
    rng = np.random.default_rng(1)
    u = rng.standard_normal((4000, 4))  # [U,d]
    c = np.hstack([u + rng.standard_normal(u.shape), rng.standard_normal((4000, 8))])  # [U,12]
    result = ridge_r2(c, u, seed=0)
    assert result["r2"] == pytest.approx(0.5, abs=0.03)
    assert result["train_users"] == 3200 and result["held_out_users"] == 800
    assert set(result["inner_r2"]) == {"0.1", "1", "10", "100", "1000"} and result["lambda"] in (0.1, 1, 10, 100, 1000)


def test_r2_of_a_linear_map_plus_noise_matches_its_population_value():
    """c = u·A + N(0, σ²I), u ~ N(0, I): population R² = 1 − tr((I + A·Aᵀ/σ²)⁻¹)/d (posterior covariance of u)."""
    rng = np.random.default_rng(2)
    d, dim, sigma = 6, 20, 2.0
    a = rng.standard_normal((d, dim)) * 0.5  # [d,D]
    expected = 1.0 - np.trace(np.linalg.inv(np.eye(d) + a @ a.T / sigma**2)) / d
    u = rng.standard_normal((6000, d))  # [U,d]
    c = torch.from_numpy(u @ a + sigma * rng.standard_normal((6000, dim))).float()  # [U,D] tensors are accepted
    assert 0.2 < expected < 0.8
    assert ridge_r2(c, torch.from_numpy(u), seed=3)["r2"] == pytest.approx(expected, abs=0.03)


def test_r2_of_independent_noise_is_about_zero():
    rng = np.random.default_rng(3)
    result = ridge_r2(rng.standard_normal((1000, 30)), rng.standard_normal((1000, 8)), seed=0)
    assert result["r2"] < 0.02


def test_r2_is_the_same_with_a_condition_scaled_per_dimension():
    """c is standardized with the training users' statistics first, so a per-dimension rescaling changes nothing."""
    rng = np.random.default_rng(4)
    u = rng.standard_normal((500, 3))
    c = np.hstack([u, rng.standard_normal((500, 5))]) + 0.3 * rng.standard_normal((500, 8))
    scaled = c * np.array([1e3, 1e-3, 5, 1, 1, 20, 0.1, 7]) + 4.0
    assert ridge_r2(scaled, u)["r2"] == pytest.approx(ridge_r2(c, u)["r2"], abs=1e-9)


def test_ridge_dual_form_equals_the_primal_one():
    """More dimensions than users takes the dual system; both give the same predictions."""
    rng = np.random.default_rng(5)
    x, y, new = rng.standard_normal((30, 50)), rng.standard_normal((30, 4)), rng.standard_normal((7, 50))
    z = (x - x.mean(0)) / x.std(0)
    primal = np.linalg.solve(z.T @ z + 10 * np.eye(50), z.T @ (y - y.mean(0)))  # [D,d]
    expected = ((new - x.mean(0)) / x.std(0)) @ primal + y.mean(0)
    np.testing.assert_allclose(_ridge(x, y, 10.0)(new), expected, atol=1e-9)


def test_text_counts_on_a_hand_made_table():
    texts = ["likes Action", "likes Action", "likes Drama", "likes Action", ""]
    categories = ["Action", "Action", None, "Drama", ""]
    stats = text_stats(texts, categories)
    assert stats == {"users": 5, "distinct_sentences": 3, "distinct_categories": 2, "top_sentence": "likes Action",
                     "top_sentence_share": 0.6, "top_category": "Action", "top_category_share": 0.4,
                     "no_category_share": 0.4}


def test_text_against_the_history_on_a_hand_made_table():
    texts = ["likes Drama|Comedy", "likes Comedy and Drama", "likes Action", "likes Drama|Comedy", None]
    leads = ["Comedy|Drama", "Comedy|Drama", "Action|War", "Horror", "Drama"]
    stats = text_stats(texts, [None] * 5, leads, ["Action", "Comedy", "Drama", "Horror", "War"])
    # exact part sets: users 0 and 1 ({Comedy, Drama} either way round); at least one part: users 0, 1, 2
    assert stats["history_match_share"] == 0.4 and stats["history_overlap_share"] == 0.6
    assert stats["history_match_constant"] == 0.4 and stats["distinct_leads"] == 4  # {Comedy, Drama} twice in five
    assert stats["history_overlap_constant"] == 0.6  # and it shares a part with users 0, 1 and 4 (Drama)


def test_diagnose_cli_json_without_ceiling(tiny_run):
    result = runner.invoke(app, ["diagnose", str(tiny_run), "--json", "--no-ceiling"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert set(out) == KEYS and out["ceiling"] is None
    config = json.loads((tiny_run / "config.json").read_text())["deftrec"]["config"]["retrieval"]
    stored = stored_metrics(Run.open(tiny_run))
    # the figures the run already knows come out the same: LightGCN by dot product, DeftRec with the run's π
    for split in ("valid", "test"):
        for metric in ("HR@10", "NDCG@10"):
            assert out["lightgcn_dot"][split][metric] == pytest.approx(stored["lightgcn"][split][metric], abs=1e-12)
            assert out["pi"][config["pi_match"]][split][metric] == pytest.approx(stored["deftrec"][split][metric],
                                                                                 abs=1e-12)
            for figure in (out["lightgcn_cosine"], out["pi"]["off"], out["pi"]["overlap"]):
                assert 0.0 <= figure[split][metric] <= 1.0
    assert out["pi"]["pi"] == config["pi"]
    assert out["text"]["users"] == 60 and 1 <= out["text"]["distinct_sentences"] <= 60
    r2 = out["condition_r2"]
    assert r2["train_users"] == 48 and r2["held_out_users"] == 12 and r2["r2"] is not None and r2["r2"] <= 1.0


def test_diagnose_cli_table(tiny_run):
    result = runner.invoke(app, ["diagnose", str(tiny_run), "--no-ceiling"])
    assert result.exit_code == 0, result.output
    for fragment in ("ridge R²", "distinct sentences", "overlap", "--no-ceiling", "a constant text"):
        assert fragment in result.output


def _assert_one_line_error(result, fragment):
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], result.output


def test_diagnose_bad_run_path_is_one_line(tmp_path):
    _assert_one_line_error(runner.invoke(app, ["diagnose", str(tmp_path / "nowhere"), "--no-ceiling"]),
                           "not a run directory")


def test_diagnose_cf_only_run_is_one_line(tmp_path, tiny_run):
    run = tmp_path / "cf"
    shutil.copytree(tiny_run, run)
    config = json.loads((run / "config.json").read_text())
    config["deftrec"] = None
    (run / "config.json").write_text(json.dumps(config))
    _assert_one_line_error(runner.invoke(app, ["diagnose", str(run), "--json"]), "no DeftRec model")


def test_ceiling_with_a_small_budget(tiny_run):
    out = diagnose_run(Run.open(tiny_run), ceiling=True, ceiling_epochs=3)
    ceiling = out["ceiling"]
    assert ceiling["refine_epochs"] == 3 and [c["epoch"] for c in ceiling["checks"]] == [0, 3]
    assert ceiling["epoch"] in (0, 3)
    best = max(ceiling["checks"], key=lambda c: (c["HR@10"], c["NDCG@10"]))
    assert ceiling["valid"] == {"HR@10": best["HR@10"], "NDCG@10": best["NDCG@10"]}  # the selected epoch's own
    assert all(0.0 <= ceiling[s][m] <= 1.0 for s in ("valid", "test") for m in ("HR@10", "NDCG@10"))
    config = json.loads((tiny_run / "config.json").read_text())["deftrec"]["config"]["diffusion"]
    assert ceiling["temperature"] == config["sampling_temperature"] and ceiling["guidance"] == config["guidance"]


@pytest.fixture(scope="module")
def run_with_diagnostics(tmp_path_factory, tiny_run):
    """The tiny run with the cheap diagnostics stored in config.json, as the training pipeline stores them."""
    run = tmp_path_factory.mktemp("diag") / "run"
    shutil.copytree(tiny_run, run)
    diagnostics = diagnose_run(Run.open(run), ceiling=False)
    config = json.loads((run / "config.json").read_text())
    config["deftrec"]["diagnostics"] = {k: v for k, v in diagnostics.items() if k not in ("run", "seed", "ceiling")}
    (run / "config.json").write_text(json.dumps(config))
    return run


def test_eval_json_includes_stored_diagnostics(run_with_diagnostics, tiny_run):
    out = json.loads(runner.invoke(app, ["eval", str(run_with_diagnostics), "--json"]).stdout)
    assert set(out["diagnostics"]) == KEYS - {"run", "seed", "ceiling"}
    stored = json.loads(runner.invoke(app, ["eval", str(tiny_run), "--json"]).stdout)["diagnostics"]  # by training
    assert set(stored) == KEYS - {"run", "seed", "cf", "ceiling"}
    both = json.loads(runner.invoke(app, ["eval", str(tiny_run), str(run_with_diagnostics), "--json"]).stdout)
    assert not [k for k in both["settings"] if "diagnostics" in k]  # measurements, not settings


async def test_run_summary_shows_stored_diagnostics(run_with_diagnostics):
    from textual.app import App
    from textual.widgets import Static

    from deftrec_tui.widgets.summary import RunSummary
    config = json.loads((run_with_diagnostics / "config.json").read_text())
    session = SimpleNamespace(config=config, path=run_with_diagnostics,
                              metrics=pd.DataFrame(columns=["model", "split", "metric", "value"]))

    class Harness(App):
        def compose(self):
            yield RunSummary(session)

    harness = Harness()
    async with harness.run_test(size=(140, 40)) as pilot:
        await pilot.pause()
        text = str(harness.query_one("#diagnostics-text", Static).render())
    assert "ridge R²" in text and "distinct sentences" in text and "overlap" in text and "exact" in text


def test_cheap_diagnostics_in_memory_equal_the_run_directory_ones(tiny_run):
    """What the training pipeline stores (cheap_diagnostics on its split's Evaluator and in-memory tensors) equals
    what `deftrec diagnose --no-ceiling` computes from the run directory."""
    from data.protocol import prepare
    from data.registry import load_dataset
    from engine.services.diagnostics import cheap_diagnostics, read_run
    from train.cf import Evaluator
    config = json.loads((tiny_run / "config.json").read_text())
    split = prepare(load_dataset(config["dataset"]["spec"]), min_count=config["min_count"], seed=config["seed"])
    inputs = read_run(Run.open(tiny_run))
    stored = cheap_diagnostics(inputs.conditions, inputs.user_q, inputs.item_q, split.items["category"].tolist(),
                               inputs.texts, inputs.categories, inputs.heads, Evaluator(split), config["seed"])
    from_run = diagnose_run(Run.open(tiny_run), ceiling=False)
    assert stored == {k: v for k, v in from_run.items() if k not in ("run", "seed", "cf", "ceiling")}

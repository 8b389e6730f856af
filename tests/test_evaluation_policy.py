"""Metrics under the two history-masking policies, DeftRec re-ranked from cached conditions, and the paper's
Table 2 beside a run."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from deftrec_tui.cli import app


def test_train_valid_policy_is_what_training_stored_and_heads_only_reranking_reproduces_it(tiny_run):
    from engine.services.contract import recommender
    from engine.services.evaluation import run_metrics, stored_metrics
    from engine.services.export import test_history
    from engine.model.metrics import metrics_from_ranks
    from engine.model.ranking import rank_all
    from engine.services.run import Run
    import sqlite3

    run = Run.open(tiny_run)
    assert run_metrics(run, "train+valid") == stored_metrics(run)
    history, tables = test_history(run)  # train + validation masked, as for the stored test metrics
    targets = np.array(sqlite3.connect(tiny_run / "catalog.sqlite").execute(
        "select test_item_idx from users order by user_idx").fetchall()).ravel()
    ranks = rank_all(recommender(run, "deftrec").scores, len(tables["users"]), len(tables["items"]), history, targets)
    assert metrics_from_ranks(ranks) == pytest.approx(stored_metrics(run)["deftrec"]["test"], abs=1e-9)


def test_no_masking_ranks_every_item_like_brute_force(tiny_run):
    from engine.services.evaluation import run_metrics
    from engine.services.run import Run
    import sqlite3

    run = Run.open(tiny_run)
    unmasked = run_metrics(run, "none")
    assert set(unmasked) == {"deftrec", "lightgcn", "mf", "pop"}
    weights = run.tensors("lightgcn")
    scores = (weights["user"].float() @ weights["item"].float().T).numpy()  # [U, I]
    test = np.array(sqlite3.connect(tiny_run / "catalog.sqlite").execute(
        "select test_item_idx from users order by user_idx").fetchall()).ravel()
    hits10, ndcg10 = [], []
    for user, target in enumerate(test):
        row = scores[user]
        better = int((row > row[target]).sum() + ((row == row[target]) & (np.arange(len(row)) < target)).sum())
        hits10.append(better < 10)
        ndcg10.append(1 / np.log2(better + 2) if better < 10 else 0.0)
    assert unmasked["lightgcn"]["test"]["HR@10"] == pytest.approx(np.mean(hits10))
    assert unmasked["lightgcn"]["test"]["NDCG@10"] == pytest.approx(np.mean(ndcg10))
    for model in unmasked.values():
        assert all(0.0 <= v <= 1.0 for split in model.values() for v in split.values())


def test_eval_cli_states_the_policy_and_refuses_unknown_ones(tiny_run):
    result = CliRunner().invoke(app, ["eval", str(tiny_run), "--mask-history", "none"])
    assert result.exit_code == 0, result.output
    assert "mask: none" in result.output and "nothing masked" in result.output
    as_json = json.loads(CliRunner().invoke(app, ["eval", str(tiny_run), "--json", "--mask-history", "none"]).output)
    assert as_json["mask_history"] == "none"
    bad = CliRunner().invoke(app, ["eval", str(tiny_run), "--mask-history", "all"])
    assert bad.exit_code == 2 and "unknown --mask-history 'all'" in bad.output
    no_table = CliRunner().invoke(app, ["eval", str(tiny_run), "--paper"])
    assert no_table.exit_code == 2 and "has no rows for dataset" in no_table.output


def test_paper_comparison_deltas_by_hand():
    from engine.services.evaluation import PAPER_TABLE2, paper_comparison, paper_dataset
    assert paper_dataset("paper:software") == "software" and paper_dataset("paper:LastFM") == "lastfm"
    assert paper_dataset("ml-100k") is None
    measured = {"lightgcn": {"test": {"HR@10": 0.2, "NDCG@10": 0.1, "HR@20": 0.3, "NDCG@20": 0.12}}}
    rows = paper_comparison(measured, "beauty")
    ours = [r for r in rows if r["source"] == "this run"]
    assert len(rows) == len(PAPER_TABLE2["beauty"]) + 1 and ours[0]["model"] == "lightgcn"
    assert ours[0]["delta"] == pytest.approx({"HR@10": 0.2 - 0.0400, "NDCG@10": 0.1 - 0.0219})  # Beauty: @10 only


def test_denoise_is_batch_independent(tiny_run):
    from engine.model.deftrec import DeftRecHeads
    from engine.model.recommender import denoise
    from engine.services.loading import load_heads
    from engine.services.run import Run
    run = Run.open(tiny_run)
    heads = DeftRecHeads(run.deftrec_config)
    load_heads(run, heads)
    conditions = torch.rand(5, heads.config.llm.hidden)
    together = denoise(heads, conditions, [3, 1, 4, 0, 2], seed=0, temperature=1.0)
    alone = denoise(heads, conditions[2:3], [4], seed=0, temperature=1.0)
    assert torch.allclose(together[:, 2], alone[:, 0], atol=1e-5)


def test_two_runs_side_by_side_with_their_differing_settings(tiny_run, tmp_path):
    from tests.conftest import train_tiny_run
    other = train_tiny_run(tmp_path, name="paper-sampler", extra=("--temperature", "1"))
    result = CliRunner().invoke(app, ["eval", str(tiny_run), str(other), "--json"])
    assert result.exit_code == 0, result.output
    comparison = json.loads(result.output)
    settings = comparison["settings"]
    assert settings["deftrec.config.diffusion.sampling_temperature"][1] == 1.0
    assert "deftrec.seconds.joint" not in settings  # timings are not settings
    lightgcn = [r for r in comparison["rows"] if r["model"] == "lightgcn" and r["split"] == "test"][0]
    assert lightgcn["a"] == lightgcn["b"]  # same data, same seed: the CF stage is identical
    table = CliRunner().invoke(app, ["eval", str(tiny_run), str(other)])
    assert "B − A" in table.output and "settings that differ" in table.output
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "data").mkdir(parents=True)
    import shutil
    for name in ("interactions.csv", "items.csv"):
        shutil.copy(tiny_run.parent.parent / "data" / name, elsewhere / "data" / name)
    lines = (elsewhere / "data" / "interactions.csv").read_text().splitlines()
    (elsewhere / "data" / "interactions.csv").write_text("\n".join(lines[:-1]) + "\n")  # one interaction fewer
    third = train_tiny_run(elsewhere, name="fewer")
    refused = CliRunner().invoke(app, ["eval", str(tiny_run), str(third)])
    assert refused.exit_code == 2 and "different datasets" in refused.output


def test_mcnemar_and_paired_hits_by_hand():
    from engine.services.evaluation import mcnemar_p, paired_hits
    assert mcnemar_p(0, 5) == pytest.approx(2 / 32)  # all 5 discordant users on one side: 2 · (1/2)^5
    assert mcnemar_p(3, 3) == 1.0 and mcnemar_p(0, 0) == 1.0
    assert mcnemar_p(1, 4) == pytest.approx(2 * (1 + 5) / 32)
    hits_a = np.array([1, 1, 0, 0, 0, 1], dtype=bool)
    hits_b = np.array([1, 0, 1, 1, 0, 1], dtype=bool)
    paired = paired_hits(hits_a, hits_b)
    assert (paired["hit by A only"], paired["hit by B only"], paired["hit by both"]) == (1, 2, 2)
    assert paired["HR@10 A"] == pytest.approx(0.5) and paired["B − A"] == pytest.approx(1 / 6)
    low, high = paired["ci95"]
    assert low <= 1 / 6 <= high and low >= -1 and high <= 1


def test_stored_test_hits_give_the_stored_hr(tiny_run):
    from engine.services.evaluation import stored_metrics, test_hits
    from engine.services.run import Run
    run = Run.open(tiny_run)
    hits = test_hits(run, "deftrec", 10)
    assert hits.mean() == pytest.approx(stored_metrics(run)["deftrec"]["test"]["HR@10"])
    assert test_hits(run, "deftrec", 21) is None and test_hits(run, "no-such-model") is None

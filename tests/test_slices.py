"""engine.services.slices and `deftrec eval --slices`: hand-checked pieces, pooled slices equal to the stored metrics."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from deftrec_tui.cli import app
from engine.model.metrics import metrics_from_ranks
from engine.model.ranking import MISS
from engine.services.evaluation import mcnemar_p, stored_metrics
from engine.services.run import Run
from engine.services.slices import (
    category_groups,
    generated_vs_history,
    list_stats,
    metrics_at,
    quantile_buckets,
    ranks_from_lists,
    slice_report,
)


def test_quantile_buckets_label_their_members_and_merge_equal_edges():
    bucket, labels = quantile_buckets(np.array([1, 1, 1, 2, 3, 4, 10, 20]), 4)
    assert labels == ["1", "2", "3–4", "10–20"]
    assert bucket.tolist() == [0, 0, 0, 1, 2, 2, 3, 3]
    same, labels = quantile_buckets(np.array([8] * 6), 5)  # every user with 8 train items: one bucket
    assert labels == ["8"] and set(same) == {0}


def test_metrics_at_is_engine_metrics():
    ranks = np.array([0, 3, 9, 10, 25, MISS])
    assert metrics_at(ranks, 10) == {k: v for k, v in metrics_from_ranks(ranks).items() if k.endswith("@10")}
    assert metrics_at(ranks, 10)["HR@10"] == pytest.approx(3 / 6)
    assert metrics_at(ranks, 10)["NDCG@10"] == pytest.approx((1 + 1 / np.log2(5) + 1 / np.log2(11)) / 6)


def test_ranks_from_lists():
    lists = np.array([[4, 2, 7], [1, 3, -1]])
    assert ranks_from_lists(lists, np.array([7, 9])).tolist() == [2, MISS]


def test_list_stats_by_hand():
    popularity = np.array([10, 20, 30, 40])
    # items 0: A, 1: A|B, 2: B, 3: no category
    parts = np.array([[1, 0], [1, 1], [0, 1], [0, 0]], bool)
    lists = np.array([[0, 1], [0, 2], [3, -1]])
    stats = list_stats(lists, popularity, parts)
    assert stats["coverage"] == pytest.approx(4 / 4)
    assert stats["mean_popularity"] == pytest.approx((10 + 20 + 10 + 30 + 40) / 5)
    # user 0: 1 − J({A},{A,B}) = 1/2; user 1: 1 − J({A},{B}) = 1; user 2 has no pair
    assert stats["diversity"] == pytest.approx((0.5 + 1.0) / 2)


def test_category_groups_whole_categories_and_parts():
    tests = ["Action|Comedy", "Comedy", "Drama", ""]
    whole = dict(category_groups(tests, parts=False, top=2))
    assert list(whole) == ["(none)", "Action|Comedy", "other"]
    assert whole["other"].tolist() == [False, True, True, False]
    parts = dict(category_groups(tests, parts=True, top=2))
    assert list(parts) == ["Comedy", "(none)", "other"]
    assert parts["Comedy"].tolist() == [True, True, False, False]
    assert parts["other"].tolist() == [False, False, True, False]


def test_generated_vs_history_by_hand():
    categories = ["Action", "Comedy", "Action|Drama"]
    train = np.array([[0, 0], [0, 2], [0, 1], [1, 1], [1, 1]])  # user 0: Action, Action|Drama, Comedy
    out = generated_vs_history(["Action|Drama", "Drama"], train, categories, ["Comedy", "Drama"])
    rows = {r["category"]: r for r in out["rows"]}
    assert rows["Action"]["generated"] == 0.5 and rows["Drama"]["generated"] == 1.0
    assert rows["Action"]["history_leading"] == 0.5  # user 0 leads with Action (2), then Comedy|Drama by name
    assert rows["Comedy"]["history_leading"] == 1.0
    assert rows["Comedy"]["history_items"] == pytest.approx(3 / 6)
    assert out["equals_history_leading"] == 0.0 and out["names_a_history_part"] == 0.5
    assert out["names_a_test_item_part"] == 0.5 and out["distinct_generated"] == 2


def test_pooled_slices_equal_the_stored_metrics(tiny_run):
    run = Run.open(tiny_run)
    report = slice_report(run)
    stored = stored_metrics(run)
    assert report.models == ["deftrec", "lightgcn", "mf", "pop"]
    for model in report.models:
        for metric in ("HR@10", "NDCG@10"):
            assert report.overall[model][metric] == pytest.approx(stored[model]["test"][metric], abs=1e-12)
    groups = [report.history, report.popularity] + ([report.category] if report.category_mode == "category" else [])
    for slices in groups:
        assert sum(s.users for s in slices) == report.users
        for model in report.models:
            for metric in ("HR@10", "NDCG@10"):
                pooled = sum(s.users * s.metrics[model][metric] for s in slices) / report.users
                assert pooled == pytest.approx(report.overall[model][metric], abs=1e-12)
    assert report.overlap["hit_by_a_only"] + report.overlap["hit_by_both"] == round(
        report.overall["deftrec"]["HR@10"] * report.users)
    assert sum(report.overlap[k] for k in ("hit_by_a_only", "hit_by_b_only", "hit_by_both", "hit_by_neither")) \
        == report.users
    assert 0 <= report.overlap["jaccard"] <= 1
    assert report.overlap["mcnemar_p"] == mcnemar_p(report.overlap["hit_by_a_only"], report.overlap["hit_by_b_only"])
    for stats in report.lists.values():
        assert 0 < stats["coverage"] <= 1 and 0 <= stats["diversity"] <= 1


def test_eval_slices_json_is_the_report(tiny_run):
    result = CliRunner().invoke(app, ["eval", str(tiny_run), "--slices", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == json.loads(json.dumps(slice_report(Run.open(tiny_run)).to_dict()))
    table = CliRunner().invoke(app, ["eval", str(tiny_run), "--slices"])
    assert table.exit_code == 0, table.output
    assert "all users" in table.output and "Jaccard@10" in table.output


def test_eval_slices_refuses_two_runs(tiny_run):
    result = CliRunner().invoke(app, ["eval", str(tiny_run), str(tiny_run), "--slices"])
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1 and "--slices takes one run" in result.output


def test_cf_only_run_has_no_deftrec_figures(tmp_path, tiny_run):
    import shutil
    run = tmp_path / "cf"
    shutil.copytree(tiny_run, run)
    config = json.loads((run / "config.json").read_text())
    config["models"] = [m for m in config["models"] if m != "deftrec"]
    config["deftrec"] = None
    (run / "config.json").write_text(json.dumps(config))
    report = slice_report(Run.open(run, verify=False))
    assert report.models == ["lightgcn", "mf", "pop"]
    assert report.overlap is None and report.generated is None
    assert all(set(s.metrics) == {"lightgcn", "mf", "pop"} for s in report.history)

"""`deftrec export` at scale on a tiny run: the cache, --recompute, resume after an interrupted export,
--shard i/n + --merge equal to one export, --users, parquet, and the approximate-index helpers."""

import csv
import shutil
import sqlite3

import numpy as np
import pytest
from typer.testing import CliRunner

from deftrec_tui.cli import app


@pytest.fixture
def run_copy(tiny_run, tmp_path):
    """A private copy of the shared tiny run (these tests write its cache tables)."""
    return shutil.copytree(tiny_run, tmp_path / "run")


def rows_of(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_second_export_reuses_the_cache_and_loads_no_model(run_copy, tmp_path):
    from engine.services.export import export_deftrec
    from engine.services.run import Run

    def no_model():
        raise AssertionError("the model was loaded although every list is cached")

    summary = export_deftrec(Run.open(run_copy), tmp_path / "a.csv", k=20, model_loader=no_model)
    assert summary == {"users": 60, "cached": 60, "computed": 0, "rows": 60 * 20}


def test_a_recomputed_export_describes_users_in_the_batches_training_did(run_copy, tmp_path, monkeypatch):
    """Without --batch-size the export batches as training's describe phase did (the same sizes, the same order), so a
    bf16 prompt pass, which rounds differently in another batch layout, still reproduces the cached lists."""
    from engine.services import export
    from engine.services.loading import open_deftrec
    from engine.services.run import Run
    run = Run.open(run_copy)
    model = open_deftrec(run)
    sizes = []
    real = export.compute_and_cache
    monkeypatch.setattr(export, "compute_and_cache", lambda run, model, todo, k, size, *rest:
                        sizes.append(size) or real(run, model, todo, k, size, *rest))
    export.export_deftrec(run, tmp_path / "a.csv", k=5, recompute=True, model_loader=lambda: model)
    export.export_deftrec(run, tmp_path / "b.csv", k=5, recompute=True, batch_size=7, model_loader=lambda: model)
    assert sizes == [run.deftrec_config.profile.describe_batch, 7]


def test_recompute_then_resume_after_an_interruption_gives_the_same_file(run_copy, tmp_path):
    from engine.services.export import export_deftrec
    from engine.services.loading import open_deftrec
    from engine.services.run import Run

    run = Run.open(run_copy)
    model = open_deftrec(run)
    full = export_deftrec(run, tmp_path / "full.csv", k=10, recompute=True, batch_size=8, model_loader=lambda: model)
    assert full["computed"] == 60 and full["rows"] == 600

    batches = []

    def stop_after_two(count):
        batches.append(count)
        if len(batches) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        export_deftrec(run, tmp_path / "resumed.csv", k=10, recompute=True, batch_size=8,
                       model_loader=lambda: model, on_progress=stop_after_two)
    assert not (tmp_path / "resumed.csv").exists()  # never half-written
    assert not list(tmp_path.glob(".resumed.csv.partial-*"))
    resumed = export_deftrec(run, tmp_path / "resumed.csv", k=10, batch_size=8, model_loader=lambda: model)
    assert resumed["cached"] == 16 and resumed["computed"] == 44  # the two finished batches were kept
    assert rows_of(tmp_path / "resumed.csv") == rows_of(tmp_path / "full.csv")


def test_shards_merge_into_the_single_export(run_copy, tmp_path):
    single = invoke("export", run_copy, "--out", tmp_path / "single.csv", "--k", 5)
    assert single.exit_code == 0, single.output
    parts = []
    for i in range(3):
        part = tmp_path / f"part{i}.csv"
        result = invoke("export", run_copy, "--out", part, "--k", 5, "--shard", f"{i}/3")
        assert result.exit_code == 0, result.output
        parts.append(part)
    assert sum(len(rows_of(p)) - 1 for p in parts) == 60 * 5
    merged = invoke("export", run_copy, "--out", tmp_path / "merged.csv",
                    *[x for p in reversed(parts) for x in ("--merge", p)])
    assert merged.exit_code == 0, merged.output
    assert rows_of(tmp_path / "merged.csv") == rows_of(tmp_path / "single.csv")
    twice = invoke("export", run_copy, "--out", tmp_path / "bad.csv", "--merge", parts[0], "--merge", parts[0])
    assert twice.exit_code == 2 and "two shards" in twice.output
    assert not (tmp_path / "bad.csv").exists()


def test_parquet_holds_the_csv_rows(run_copy, tmp_path):
    import pandas as pd
    assert invoke("export", run_copy, "--out", tmp_path / "a.csv", "--k", 3).exit_code == 0
    result = invoke("export", run_copy, "--out", tmp_path / "a.parquet", "--k", 3)
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(tmp_path / "a.parquet")
    text = pd.read_csv(tmp_path / "a.csv", dtype=str, keep_default_na=False)
    assert list(frame.columns) == list(text.columns) and len(frame) == len(text) == 180
    assert frame["item_id"].tolist() == text["item_id"].tolist()
    assert np.allclose(frame["score"].to_numpy(), text["score"].astype(float).to_numpy(), atol=1e-6)
    merged = invoke("export", run_copy, "--out", tmp_path / "m.csv", "--merge", tmp_path / "a.parquet")
    assert merged.exit_code == 0, merged.output
    assert rows_of(tmp_path / "m.csv") == rows_of(tmp_path / "a.csv")


def test_users_option_and_bad_selections(run_copy, tmp_path):
    db = sqlite3.connect(run_copy / "catalog.sqlite")
    ids = [r[0] for r in db.execute("select user_id from users order by user_idx limit 3")]
    (tmp_path / "users.txt").write_text(f"# wanted\n{ids[2]}\n\n{ids[0]}\n")
    result = invoke("export", run_copy, "--out", tmp_path / "u.csv", "--k", 2, "--users", f"@{tmp_path / 'users.txt'}")
    assert result.exit_code == 0, result.output
    assert [r[0] for r in rows_of(tmp_path / "u.csv")[1:]] == [ids[0], ids[0], ids[2], ids[2]]  # catalog order
    for args, message in ((["--users", "nobody"], "unknown user id 'nobody'"), (["--shard", "3/3"], "bad --shard"),
                          (["--shard", "x"], "bad --shard"), (["--users", "@missing.txt"], "user list not found"),
                          (["--format", "xlsx"], "unknown format")):
        bad = invoke("export", run_copy, "--out", tmp_path / "bad.csv", *args)
        assert bad.exit_code == 2 and message in bad.output, bad.output
        assert not (tmp_path / "bad.csv").exists()


def test_recall_at_k_by_hand_and_ivf_matches_exact_when_probing_every_cell():
    from engine.model.ann import AnnSettings, build_index, recall_at_k, search, synthetic_catalog, unit_rows
    exact = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    approx = np.array([[4, 3, 9, 1], [5, 0, 0, 0]])
    assert recall_at_k(exact, approx) == pytest.approx((3 / 4 + 1 / 4) / 2)
    items, users = synthetic_catalog(4000, 50, dim=16, n_clusters=8, seed=1)
    assert items.shape == (4000, 16) and users.shape == (50, 16) and items.dtype == np.float32
    items, queries = unit_rows(items), unit_rows(users)
    _, truth = search(build_index(items, AnnSettings(kind="exact")), queries, 10)
    brute = np.argsort(-(queries @ items.T), axis=1, kind="stable")[:, :10]
    assert recall_at_k(brute, truth) == 1.0
    ivf = build_index(items, AnnSettings(kind="ivf", nlist=16, nprobe=16, train_size=4000))
    assert recall_at_k(truth, search(ivf, queries, 10)[1]) == 1.0  # every cell visited = exact
    few = build_index(items, AnnSettings(kind="ivf", nlist=16, nprobe=1, train_size=4000))
    assert recall_at_k(truth, search(few, queries, 10)[1]) < 1.0
    hnsw = build_index(items, AnnSettings(kind="hnsw", hnsw_m=16, ef_search=64))
    assert recall_at_k(truth, search(hnsw, queries, 10)[1]) >= 0.9


def test_bench_splits_the_time_and_times_the_baseline(tiny_run, tmp_path):
    import json
    result = invoke("bench", tiny_run, "--users", 2, "--k", 5, "--batch-sizes", "1,2", "--threads", 1,
                    "--synthetic-items", 3000, "--synthetic-users", 200, "--queries", 50,
                    "--json", tmp_path / "bench.json")
    assert result.exit_code == 0, result.output
    figures = json.loads((tmp_path / "bench.json").read_text())
    run = figures["run"]
    assert sum(run["latency_share"].values()) == pytest.approx(1.0)
    assert all(run["latency_s"][s] > 0 for s in ("prefill", "generation", "denoising", "retrieval"))
    assert [row["batch_size"] for row in run["throughput"]] == [1, 2]
    assert run["prefill"]["tokens"] > 0 and run["prefill"]["ratio"] > 0
    assert run["baseline"]["seconds_per_user"] > 0 and run["speedup"] == pytest.approx(
        run["baseline"]["seconds_per_user"] / run["latency_s"]["total"])
    assert 0.0 <= figures["ann"]["recall_at_k"] <= 1.0
    assert "faster per user than the beam-search baseline" in result.output
    assert run["decoding"] == "draft" and run["latency_s"]["forwards"] >= 1  # the CLI's default decoding
    full = run["full_decoding"]  # the same users through full greedy decoding, for the ratio
    assert full["speedup"] == pytest.approx(full["latency_s"]["total"] / run["latency_s"]["total"])
    assert 0 <= full["same_lists"] <= 2
    only_full = invoke("bench", tiny_run, "--users", 1, "--batch-sizes", "1", "--no-baseline", "--decoding", "full",
                       "--json", tmp_path / "full.json")
    assert only_full.exit_code == 0, only_full.output
    assert "full_decoding" not in json.loads((tmp_path / "full.json").read_text())["run"]
    for precision in ("bfloat16", "mixed"):
        other = invoke("bench", tiny_run, "--users", 1, "--batch-sizes", "1", "--no-baseline", "--precision",
                       precision, "--json", tmp_path / f"{precision}.json")
        assert other.exit_code == 0, other.output
        assert json.loads((tmp_path / f"{precision}.json").read_text())["run"]["precision"] == precision
    bad = invoke("bench", tiny_run, "--precision", "int8")
    assert bad.exit_code == 2 and "unknown --precision" in bad.output
    bad = invoke("bench", tiny_run, "--decoding", "beam")
    assert bad.exit_code == 2 and "unknown --decoding" in bad.output
    bad = invoke("bench", tiny_run, "--batch-sizes", "0")
    assert bad.exit_code == 2 and "bad --batch-sizes" in bad.output


def test_approximate_retriever_equals_exact_when_it_sees_every_item():
    from engine.model.ann import AnnSettings
    from engine.model.ranking import HistoryIndex
    from engine.model.retriever import HybridRetriever
    rng = np.random.default_rng(0)
    items = rng.standard_normal((500, 8)).astype(np.float32)
    categories = [f"c{i % 7}" for i in range(500)]
    exact = HybridRetriever(items, categories)
    users = np.arange(20)
    history = HistoryIndex.build(20, np.repeat(users, 5), rng.integers(0, 500, 100))
    queries = rng.standard_normal((20, 8)).astype(np.float32)
    extracted = [f"c{u % 7}" if u % 3 else None for u in users]
    truth = exact.search(queries, history, users, extracted, 10, pi=0.1)
    full = exact.with_ann(AnnSettings(kind="ivf", nlist=8, nprobe=8, train_size=500))
    assert full.approximate and not exact.approximate
    got = full.search(queries, history, users, extracted, 10, pi=0.1)
    assert [[(r.item_idx, r.score, r.pi_bonus) for r in row] for row in got] == \
           [[(r.item_idx, r.score, r.pi_bonus) for r in row] for row in truth]
    narrow = exact.with_ann(AnnSettings(kind="ivf", nlist=64, nprobe=1, train_size=500))
    rough = narrow.search(queries, history, users, extracted, 10, pi=0.1)
    assert all(len(row) == 10 and len({r.item_idx for r in row}) == 10 for row in rough)  # no duplicates
    masked = [set(history.items_of(int(u)).tolist()) for u in users]
    assert all(not ({r.item_idx for r in row} & masked[u]) for u, row in enumerate(rough))


def test_export_with_an_approximate_index_prints_its_recall(run_copy, tmp_path):
    result = invoke("export", run_copy, "--out", tmp_path / "a.csv", "--k", 5, "--recompute", "--index", "hnsw",
                    "--users", ",".join(r[0] for r in sqlite3.connect(run_copy / "catalog.sqlite").execute(
                        "select user_id from users limit 6")))
    assert result.exit_code == 0, result.output
    assert "hnsw retrieval: recall@5" in result.output and "on 6 of the users computed now" in result.output
    bad = invoke("export", run_copy, "--out", tmp_path / "b.csv", "--index", "lsh")
    assert bad.exit_code == 2 and "unknown index 'lsh'" in bad.output


def test_an_export_warns_where_this_machines_kernels_differ_from_the_runs(run_copy, tmp_path):
    """The run records what its texts were written with; lists computed on kernels that compute otherwise may differ
    from the cached ones, and export says so before computing (nothing said where they agree or all is cached)."""
    import json
    config_path = run_copy / "config.json"
    config = json.loads(config_path.read_text())
    kernels = config["deftrec"]["kernels"]
    assert set(kernels) == {"probe", "device", "capability", "threads", "float32", "bfloat16"}
    quiet = invoke("export", run_copy, "--out", tmp_path / "a.csv", "-k", "5", "--users", "u1", "--recompute")
    assert quiet.exit_code == 0, quiet.output
    assert "warning" not in quiet.output
    config["deftrec"]["kernels"] = {**kernels, "float32": "0" * 16, "device": "another CPU"}
    config_path.write_text(json.dumps(config))
    warned = invoke("export", run_copy, "--out", tmp_path / "b.csv", "-k", "5", "--users", "u1", "--recompute")
    assert warned.exit_code == 0, warned.output
    assert "warning: this machine's float32 kernels compute otherwise" in " ".join(warned.output.split())
    assert "another CPU then" in " ".join(warned.output.split())
    cached = invoke("export", run_copy, "--out", tmp_path / "c.csv", "-k", "5", "--users", "u1")
    assert "warning" not in cached.output  # read from the cache: nothing computed, nothing to warn about

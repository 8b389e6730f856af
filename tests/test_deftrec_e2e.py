"""DeftRec end to end with a tiny random Llama: train two joint steps, write the run, reload it on the CPU
from its own config and get identical recommendations."""

import json
import sqlite3

import pytest
from typer.testing import CliRunner

from deftrec_tui.cli import app


def test_run_directory_holds_every_part(tiny_run):
    names = {p.name for p in tiny_run.iterdir()}
    assert {"config.json", "catalog.sqlite", "lightgcn.safetensors", "tokenizer.safetensors",
            "denoiser.safetensors", "lora", "items.faiss"} <= names
    config = json.loads((tiny_run / "config.json").read_text())
    settings = config["deftrec"]["config"]
    assert config["models"][0] == "deftrec" and settings["llm"]["name"] == "tiny"
    assert settings["tokenizer"]["k"] == 2 and settings["llm"]["hidden"] == 64
    assert config["deftrec"]["refine"]["stopped"] == "epochs"  # the tiny profile's 2 epochs, no bound reached
    modules = json.loads((tiny_run / "lora" / "adapter_config.json").read_text())["target_modules"]
    assert modules == sorted(modules) and len(modules) > 1  # peft's set order varies across processes


def test_eval_shows_deftrec_beside_the_baselines(tiny_run):
    result = CliRunner().invoke(app, ["eval", str(tiny_run), "--json"])
    metrics = json.loads(result.output)["metrics"]
    assert set(metrics) == {"deftrec", "lightgcn", "mf", "pop"}
    assert all(0 <= v <= 1 for v in metrics["deftrec"]["test"].values())


def test_eval_pairs_deftrec_with_lightgcn_on_the_same_users(tiny_run):
    from engine.services.evaluation import mcnemar_p

    out = json.loads(CliRunner().invoke(app, ["eval", str(tiny_run), "--json"]).output)
    versus, users = out["versus_reference"], 60
    assert (versus["a"], versus["b"], versus["k"]) == ("deftrec", "lightgcn", 10)
    for model, alone in (("deftrec", versus["hit_by_a_only"]), ("lightgcn", versus["hit_by_b_only"])):
        assert alone + versus["hit_by_both"] == round(out["metrics"][model]["test"]["HR@10"] * users)  # the table's HR
    assert versus["mcnemar_p"] == mcnemar_p(versus["hit_by_a_only"], versus["hit_by_b_only"])
    table = CliRunner().invoke(app, ["eval", str(tiny_run)]).output
    assert f"{versus['hit_by_a_only']} hit by deftrec only, {versus['hit_by_b_only']} by lightgcn only" in " ".join(table.split())
    unmasked = json.loads(CliRunner().invoke(app, ["eval", str(tiny_run), "--json", "--mask-history", "none"]).output)
    assert "versus_reference" not in unmasked  # the stored lists are train+valid masked


def test_catalog_caches_preferences_and_breakdown(tiny_run):
    db = sqlite3.connect(tiny_run / "catalog.sqlite")
    assert db.execute("select count(*) from preferences").fetchone()[0] == 60
    rows = db.execute("select cosine, pi_bonus, score from recommendations where model = 'deftrec'").fetchall()
    assert len(rows) == 60 * 20
    for cosine, pi_bonus, score in rows:
        assert pi_bonus in (0.0, 0.1)
        assert score == pytest.approx(cosine * (1 + pi_bonus), abs=1e-6)


def test_reloaded_run_gives_identical_recommendations(tiny_run):
    from engine.services.export import test_history
    from engine.services.loading import open_deftrec
    from engine.services.run import Run

    run = Run.open(tiny_run)
    model = open_deftrec(run)
    history, _ = test_history(run)
    users = list(range(16))  # the first describe batch of the tiny profile, as during training
    results = model.recommend(users, history, k=20)
    db = sqlite3.connect(tiny_run / "catalog.sqlite")
    for result in results:
        user = result.preference.user_idx
        cached = db.execute("select item_idx, score from recommendations where model = 'deftrec' and "
                            "user_idx = ? order by rank", (user,)).fetchall()
        assert [r.item_idx for r in result.items] == [c[0] for c in cached]
        assert [r.score for r in result.items] == pytest.approx([c[1] for c in cached], abs=1e-6)
        text = db.execute("select text from preferences where user_idx = ?", (user,)).fetchone()[0]
        assert result.preference.text == text
        assert result.trajectory.shape == (101, 64)
    again = model.recommend(users[:3], history, k=20)
    assert [[r.item_idx for r in u.items] for u in again] == [[r.item_idx for r in u.items] for u in results[:3]]


def test_draft_decoding_describes_users_as_template_decoding(tiny_run):
    import torch

    from engine.services.loading import open_deftrec
    from engine.services.run import Run

    model = open_deftrec(Run.open(tiny_run))
    users = list(range(6))
    plain = model.describe(users, decoding="template")
    drafted = [model.describe([u], decoding="draft")[0] for u in users]  # one at a time: speculative
    batched = model.describe(users, decoding="draft")
    for a, b, c in zip(plain, drafted, batched):
        assert a.text == b.text == c.text
        assert torch.allclose(a.condition, b.condition, atol=1e-5) and torch.allclose(a.condition, c.condition, atol=1e-5)


def test_a_mixed_precision_run_describes_users_as_full_decoding_does_in_one_batch(tiny_run, tmp_path):
    import torch

    from engine.model.runtime import cpu_supports_bf16
    from engine.services.loading import open_deftrec
    from engine.services.run import Run
    run = _copy_run(tiny_run, tmp_path)
    _edit_config(run, deftrec__config__llm__inference_precision="mixed")
    model = open_deftrec(Run.open(run, verify=False))
    users = list(range(6))
    full, draft = model.describe(users, decoding="full"), model.describe(users, decoding="draft")
    plain = model.describe(users, decoding="full", precision="float32")
    for a, b, c in zip(full, draft, plain):
        assert a.text == b.text and torch.allclose(a.condition, b.condition, atol=1e-5)
        if cpu_supports_bf16():  # elsewhere autocast is off and mixed is float32
            assert not torch.equal(a.condition, c.condition)


def test_export_defaults_to_deftrec_with_the_breakdown(tiny_run, tmp_path):
    import csv
    out = tmp_path / "deftrec.csv"
    result = CliRunner().invoke(app, ["export", str(tiny_run), "--out", str(out), "--k", "10"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["user_id", "rank", "item_id", "title", "category", "cosine", "weight", "pi_bonus", "score"]
    assert len(rows) == 60 * 10
    _assert_breakdown(tiny_run, rows)
    too_long = CliRunner().invoke(app, ["export", str(tiny_run), "--out", str(tmp_path / "x.csv"), "--k", "5000"])
    assert too_long.exit_code == 2 and "--k 5000 is more than the catalog's" in too_long.output
    assert not (tmp_path / "x.csv").exists()
    longer = _copy_run(tiny_run, tmp_path)  # lists longer than the cached 20 are computed and cached
    result = CliRunner().invoke(app, ["export", str(longer), "--out", str(tmp_path / "y.csv"), "--k", "25"])
    assert result.exit_code == 0 and "0 from the cache, 60 computed now" in result.output, result.output
    again = CliRunner().invoke(app, ["export", str(longer), "--out", str(tmp_path / "z.csv"), "--k", "25"])
    assert "60 from the cache, 0 computed now" in again.output
    assert (tmp_path / "y.csv").read_bytes() == (tmp_path / "z.csv").read_bytes()


def _assert_breakdown(run, rows):
    """Each row's score is cosine × weight × (1 + π) and its weight the run's ‖q_j‖^α (1 when α = 0)."""
    import numpy as np
    config = json.loads((run / "config.json").read_text())["deftrec"]["config"]
    alpha = config["retrieval"]["item_norm"]
    from engine.services.run import Run
    opened = Run.open(run)
    vectors = opened.tensors(opened.cf_weights)["item"].double().numpy()  # [n, d]
    from data.catalog import Catalog
    with Catalog.open(opened.catalog_path, readonly=True) as catalog:
        norm = {str(item["item_id"]): float(np.linalg.norm(vectors[i])) for i, item in enumerate(catalog.items())}
    for row in rows:
        weight = float(row["weight"])
        assert weight == pytest.approx(norm[row["item_id"]] ** alpha, rel=1e-5)
        assert float(row["score"]) == pytest.approx(
            float(row["cosine"]) * weight * (1 + float(row["pi_bonus"])), abs=1e-5)


def test_export_writes_the_item_weight_of_a_run_ranked_with_one(tiny_run, tmp_path):
    import csv
    run = _copy_run(tiny_run, tmp_path)
    _edit_config(run, deftrec__config__retrieval__item_norm=0.5)
    out = tmp_path / "weighted.csv"
    result = CliRunner().invoke(app, ["export", str(run), "--out", str(out), "--k", "5", "--users", "u1,u2,u3",
                                      "--recompute"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 15 and any(abs(float(row["weight"]) - 1) > 1e-3 for row in rows)
    _assert_breakdown(run, rows)


def _copy_run(tiny_run, tmp_path):
    import shutil
    target = tmp_path / "copy"
    shutil.copytree(tiny_run, target)
    return target


def _edit_config(run, **changes):
    """Replace values of config.json by path, parts joined by '__' (deftrec__config__llm__fingerprint=…)."""
    config = json.loads((run / "config.json").read_text())
    for key, value in changes.items():
        *parents, field = key.split("__")
        target = config
        for part in parents:
            target = target[part]
        target[field] = value
    (run / "config.json").write_text(json.dumps(config))


def test_recommend_streams_one_user_and_refuses_an_unknown_id(tiny_run):
    result = CliRunner().invoke(app, ["recommend", str(tiny_run), "--user", "u3", "--k", "5"])
    assert result.exit_code == 0, result.output
    assert "preference:" in result.output and "cosine" in result.output
    weighted = json.loads((tiny_run / "config.json").read_text())["deftrec"]["config"]["retrieval"]["item_norm"] > 0
    assert ("w = ‖q‖^α" in result.output) == weighted  # the weight column only where the run ranks with one
    result = CliRunner().invoke(app, ["recommend", str(tiny_run), "--user", "nobody"])
    assert result.exit_code == 2
    assert "unknown user id 'nobody'" in result.output and len(result.output.strip().splitlines()) == 1


def test_recommend_on_other_kernels_warns_and_still_answers(tiny_run, tmp_path):
    assert "warning" not in CliRunner().invoke(app, ["recommend", str(tiny_run), "--user", "u3"]).output
    run = _copy_run(tiny_run, tmp_path)
    _edit_config(run, deftrec__kernels__float32="0" * 16)
    result = CliRunner().invoke(app, ["recommend", str(run), "--user", "u3"])
    assert result.exit_code == 0, result.output
    assert "warning: this machine's float32 kernels compute otherwise" in " ".join(result.output.split())


def test_run_trained_on_another_llm_is_refused(tiny_run, tmp_path):
    run = _copy_run(tiny_run, tmp_path)
    _edit_config(run, deftrec__config__llm__fingerprint="0123456789abcdef")
    result = CliRunner().invoke(app, ["recommend", str(run), "--user", "u3"])
    assert result.exit_code == 2
    assert "trained on another LLM" in result.output


def test_catalog_of_another_dataset_is_refused(tiny_run, tmp_path):
    run = _copy_run(tiny_run, tmp_path)
    config = json.loads((run / "config.json").read_text())
    config["dataset"]["checksum"] = "not-this-data"
    (run / "config.json").write_text(json.dumps(config))
    result = CliRunner().invoke(app, ["recommend", str(run), "--user", "u3"])
    assert result.exit_code == 2
    assert "another dataset" in result.output


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_missing_or_corrupt_deftrec_weights(tiny_run, tmp_path, damage):
    run = _copy_run(tiny_run, tmp_path)
    target = run / "denoiser.safetensors"
    if damage == "missing":
        target.unlink()
    else:
        target.write_bytes(b"\0" * 64)
    before = {p.name: p.stat().st_mtime for p in run.iterdir()}
    result = CliRunner().invoke(app, ["recommend", str(run), "--user", "u3"])
    assert result.exit_code == 2
    assert "denoiser.safetensors" in result.output
    assert ("missing" in result.output) if damage == "missing" else ("checksum mismatch" in result.output)
    assert {p.name: p.stat().st_mtime for p in run.iterdir()} == before  # nothing written


def test_llm_that_is_not_a_causal_lm_is_refused_before_training(tmp_path):
    folder = tmp_path / "bert"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["BertForMaskedLM"]}))
    result = CliRunner().invoke(app, ["train", "--llm", str(folder), "--out", str(tmp_path / "runs"),
                                      "--name", "x"])
    assert result.exit_code == 2
    assert "not a causal language model" in result.output
    assert not (tmp_path / "runs" / "x").exists()


def test_qlora_without_cuda_is_refused(tmp_path):
    result = CliRunner().invoke(app, ["train", "--qlora", "--out", str(tmp_path / "runs"), "--name", "x"])
    assert result.exit_code == 2
    assert "--qlora needs a CUDA GPU" in result.output


def test_repeated_items_stay_in_the_prompt_and_are_masked_once(tiny_run):
    import numpy as np

    from engine.model.ranking import HistoryIndex
    from engine.services.loading import open_deftrec
    from engine.services.run import Run
    model = open_deftrec(Run.open(tiny_run))
    model.histories[0] = np.array([3, 5, 3, 7, 3])  # item 3 bought three times
    history = model.inference_history(0)
    assert sorted(history.tolist()) == [3, 3, 3, 5, 7]
    prompt, _kept = model.build_prompts([0], [history], [0])
    assert prompt[0].count(model.titles[3]) == 3
    index = HistoryIndex.build(1, np.zeros(5, np.int64), model.histories[0])
    assert index.items_of(0).tolist() == [3, 5, 7]  # masked once


def test_a_run_trained_with_categories_shows_them_after_each_title(tiny_run):
    from engine.services.loading import open_deftrec
    from engine.services.run import Run
    model = open_deftrec(Run.open(tiny_run))  # trained with the default, --item-text title-category
    assert model.config.prompt.item_text == "title-category"  # saved with the run, rebuilt from it
    history = model.inference_history(0)
    prompt, kept = model.build_prompts([0], [history], [0])
    assert len(kept[0]) == len(history) > 0
    for item in history:
        assert f"{model.titles[item]} ({model.categories[item]}) <ct>" in prompt[0]


def test_condition_pooled_with_the_user_tokens_adds_the_prompts_user_states(tiny_run, tmp_path):
    import torch

    from engine.model.deftrec import masked_mean, user_token_mask
    from engine.model.llm.forward import lm_forward
    from engine.services.loading import open_deftrec
    from engine.services.run import Run
    run = _copy_run(tiny_run, tmp_path)
    _edit_config(run, deftrec__config__condition__pool="response+user")  # the heads' weights do not depend on it
    pooled = open_deftrec(Run.open(run, verify=False))
    plain = open_deftrec(Run.open(tiny_run))
    assert pooled.config.condition.pool == "response+user" and plain.config.condition.pool == "response"
    users = [0, 3, 5]
    with_user, response_only = pooled.describe(users), plain.describe(users)
    for user, a, b in zip(users, with_user, response_only):
        assert a.text == b.text  # the same response; only c differs
        prompts, kept = pooled.build_prompts([user], [pooled.inference_history(user)], [0])
        ids = pooled.tokenizer(prompts, add_special_tokens=False, return_tensors="pt")["input_ids"]  # [1,P]
        with torch.no_grad():  # the prompt's states, as a training pass over prompt + response has them (causal)
            hidden = lm_forward(pooled.llm, pooled.embed([user], kept, [0], ids), torch.ones_like(ids)).last_hidden
        user_part = masked_mean(hidden, user_token_mask(ids, pooled.ct_id, pooled.config.tokenizer.k, [0]))  # [1,D]
        expected = torch.sigmoid((torch.logit(b.condition.double()).float() + user_part[0]) / 2)  # [D]
        assert torch.allclose(a.condition, expected, atol=1e-4)
        assert not torch.allclose(a.condition, b.condition, atol=1e-3)


def test_a_run_trained_with_the_user_pool_rebuilds_it_and_repeats_its_conditions(tmp_path):
    import torch

    from engine.services.contract import cached_preferences
    from engine.services.loading import open_deftrec
    from engine.services.run import Run
    from tests.conftest import train_tiny_run
    path = train_tiny_run(tmp_path, name="pool", extra=("--condition-pool", "response+user"))
    run = Run.open(path)
    assert run.deftrec_config.condition.pool == "response+user"  # saved with the run, rebuilt from it
    cached = cached_preferences(run)
    fresh = open_deftrec(run).describe([0, 1, 2])
    for user, preference in enumerate(fresh):
        assert preference.text == cached.texts[user]
        assert torch.allclose(preference.condition, cached.conditions[user].float(), atol=1e-4)


def test_opening_a_run_flushes_denormals(tiny_run):
    import torch

    from engine.services.loading import open_deftrec
    from engine.services.run import Run

    try:
        torch.set_flush_denormal(False)  # an earlier test may have opened a run
        subnormal = torch.tensor([1e-40])  # below float32's 1.18e-38: stored as a subnormal
        assert (subnormal * 1.0).item() > 0
        open_deftrec(Run.open(tiny_run))
        assert (subnormal * 1.0).item() == 0.0  # read as zero: the refinement's slow path is gone
    finally:
        torch.set_flush_denormal(False)


def test_a_run_trained_with_item_norm_auto_keeps_the_alpha_chosen_on_validation(tmp_path):
    from data.catalog import Catalog
    from engine.model.runtime import resolve_precision
    from engine.services.run import Run
    from tests.conftest import train_tiny_run
    run = Run.open(train_tiny_run(tmp_path, name="auto", extra=("--item-norm", "auto", "--inference-precision", "auto")))
    assert run.deftrec_config.llm.inference_precision == resolve_precision("auto", "cpu")  # resolved and recorded
    assert run.config["deftrec"]["refine"]["stopped"] == "epochs"  # the tiny profile's 2 epochs, no bound reached
    record = run.config["deftrec"]["refine"]
    checks = record["item_norm_checks"]
    assert [c["item_norm"] for c in checks] == [0.0, 0.25, 0.5, 0.75, 1.0]
    best = max(checks, key=lambda c: (c["HR@10"], c["NDCG@10"], -c["item_norm"]))
    assert run.deftrec_config.retrieval.item_norm == best["item_norm"] == record["item_norm"]
    with Catalog.open(run.catalog_path, readonly=True) as catalog:
        metrics = catalog.metrics()
    valid = metrics[(metrics.model == "deftrec") & (metrics.split == "valid") & (metrics.metric == "HR@10")]
    assert valid.value.item() == pytest.approx(best["HR@10"])  # the run's validation figure is the chosen α's


def test_a_run_ranking_with_item_norm_rebuilds_its_weighted_retriever_everywhere(tmp_path):
    import numpy as np

    from data.catalog import Catalog
    from engine.model.retriever import HybridRetriever, item_weights
    from engine.services.contract import recommender
    from engine.services.export import test_history
    from engine.services.loading import open_deftrec
    from engine.services.run import Run
    from engine.services.session import RunSession
    from tests.conftest import train_tiny_run
    run = Run.open(train_tiny_run(tmp_path, name="norm", extra=("--item-norm", "0.75")))
    assert run.deftrec_config.retrieval.item_norm == 0.75 and "item_norm_checks" not in run.config["deftrec"]["refine"]
    history, _ = test_history(run)
    with Catalog.open(run.catalog_path, readonly=True) as catalog:
        cached = catalog.top_lists("deftrec", 20, catalog.n_users())[:30]  # [30, 20]
    items, _ = recommender(run, "deftrec").top_k(np.arange(30), history, 20)
    assert items.numpy().tolist() == cached.tolist()  # the re-rank from cached conditions uses the same α
    weights = item_weights(run.tensors(run.cf_weights)["item"].float().numpy(), 0.75)  # [n]
    state = recommender(run, "deftrec").state
    eq14 = HybridRetriever(run.tensors(run.cf_weights)["item"].float().numpy(), state.retriever.item_categories)
    unweighted = eq14.search(state.finals[:30].numpy(), history, np.arange(30), state.categories[:30], 20,
                             pi=state.pi, match=state.match)
    assert [[r.item_idx for r in row] for row in unweighted] != cached.tolist()  # the weights change some lists
    for result in open_deftrec(run).recommend(list(range(4)), history, k=5):
        assert [r.item_idx for r in result.items] == cached[result.preference.user_idx, :5].tolist()
        for r in result.items:
            assert r.weight == pytest.approx(weights[r.item_idx], rel=1e-9)
            assert r.score == pytest.approx(r.cosine * r.weight * (1 + r.pi_bonus), rel=1e-5, abs=1e-7)
    shown = RunSession(run).cached(0).items
    assert [i.weight for i in shown] == pytest.approx([weights[i.item_idx] for i in shown])
    result = CliRunner().invoke(app, ["recommend", str(run.path), "--user", "u0", "--k", "3", "--cached"])
    assert result.exit_code == 0 and "w = ‖q‖^α" in result.output, result.output
    from deftrec_tui.widgets.topk import explain_score
    first = shown[0]
    assert (f"s = cos × w × (1 + π) = {first.cosine:.4f} × {first.weight:.4f} × (1 + {first.pi_bonus:.2f}) = "
            f"{first.score:.4f}") in explain_score(first, None).plain

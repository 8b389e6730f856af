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
    assert config["models"][0] == "deftrec" and config["deftrec"]["llm"] == "tiny"
    assert config["deftrec"]["k"] == 2 and config["deftrec"]["llm_hidden"] == 64


def test_eval_shows_deftrec_beside_the_baselines(tiny_run):
    result = CliRunner().invoke(app, ["eval", str(tiny_run), "--json"])
    metrics = json.loads(result.output)["metrics"]
    assert set(metrics) == {"deftrec", "lightgcn", "mf", "pop"}
    assert all(0 <= v <= 1 for v in metrics["deftrec"]["test"].values())


def test_catalog_caches_preferences_and_breakdown(tiny_run):
    db = sqlite3.connect(tiny_run / "catalog.sqlite")
    assert db.execute("select count(*) from preferences").fetchone()[0] == 60
    rows = db.execute("select cosine, pi_bonus, score from recommendations where model = 'deftrec'").fetchall()
    assert len(rows) == 60 * 20
    for cosine, pi_bonus, score in rows:
        assert pi_bonus in (0.0, 0.1)
        assert score == pytest.approx(cosine * (1 + pi_bonus), abs=1e-6)


def test_reloaded_run_gives_identical_recommendations(tiny_run):
    from engine.recommender import open_deftrec
    from engine.run import Run
    from engine.export import test_history

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


def test_export_defaults_to_deftrec_with_the_breakdown(tiny_run, tmp_path):
    import csv
    out = tmp_path / "deftrec.csv"
    result = CliRunner().invoke(app, ["export", str(tiny_run), "--out", str(out), "--k", "10"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["user_id", "rank", "item_id", "title", "category", "cosine", "pi_bonus", "score"]
    assert len(rows) == 60 * 10
    for row in rows:
        assert float(row["score"]) == pytest.approx(float(row["cosine"]) * (1 + float(row["pi_bonus"])), abs=1e-5)
    too_long = CliRunner().invoke(app, ["export", str(tiny_run), "--out", str(tmp_path / "x.csv"), "--k", "50"])
    assert too_long.exit_code == 2 and "fewer than --k 50" in too_long.output
    assert not (tmp_path / "x.csv").exists()

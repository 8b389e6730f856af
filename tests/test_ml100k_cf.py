"""The CF stage on the embedded ML-100K reaches the issue's quality bar under the protocol (about 100 s)."""

import json

from typer.testing import CliRunner

from deftrec_tui.cli import app


def test_lightgcn_on_ml100k_beats_the_bar(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["train", "--stage", "cf", "--out", str(tmp_path), "--name", "ml"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(runner.invoke(app, ["eval", str(tmp_path / "ml"), "--json"]).output)["metrics"]
    assert metrics["lightgcn"]["test"]["HR@10"] >= 0.13
    assert metrics["lightgcn"]["test"]["NDCG@10"] >= 0.068
    assert 0.08 <= metrics["pop"]["test"]["HR@10"] <= 0.095
    assert metrics["lightgcn"]["test"]["HR@10"] > metrics["pop"]["test"]["HR@10"]

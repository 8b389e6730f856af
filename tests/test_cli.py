"""The CLI end to end on a small dataset, and its bad-input contract: one line, exit 2, nothing written."""

import csv
import gzip
import json
import math

import pytest
from typer.testing import CliRunner

from deftrec_tui.cli import app
from engine.model.metrics import metrics_from_ranks
from tests.conftest import write_clustered_csv

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def assert_one_line_error(result, *fragments):
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("cli")
    data_dir = write_clustered_csv(base / "data")
    result = invoke("train", "--dataset", f"csv:{data_dir}", "--out", base / "runs", "--name", "small",
                    "--stage", "cf", "--cf-epochs", "30", "--threads", "1")
    assert result.exit_code == 0, result.output
    return base / "runs" / "small"


def test_train_writes_a_complete_run(small_run):
    names = {p.name for p in small_run.iterdir()}
    assert {"config.json", "catalog.sqlite", "lightgcn.safetensors", "mf.safetensors"} <= names
    config = json.loads((small_run / "config.json").read_text())
    assert config["dataset"]["after"]["users"] == 60 and config["models"] == ["pop", "lightgcn", "mf"]
    assert "leave-one-out" in config["protocol"]
    assert not [p for p in small_run.parent.iterdir() if p.name.startswith(".")]  # no partial dirs left


def test_cf_batch_size_reaches_the_trainer_and_the_run(small_run, tmp_path):
    data_dir = write_clustered_csv(tmp_path / "data")
    result = invoke("train", "--dataset", f"csv:{data_dir}", "--out", tmp_path / "runs", "--name", "small-batch",
                    "--stage", "cf", "--cf-epochs", "30", "--cf-batch-size", "64", "--threads", "1")
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "small-batch"
    config = json.loads((run / "config.json").read_text())
    assert config["cf"]["batch_size"] == 64 and json.loads((small_run / "config.json").read_text())["cf"][
        "batch_size"] == 4096
    # the fixture's pairs fit one default batch; batches of 64 take several steps an epoch: another LightGCN
    assert (run / "lightgcn.safetensors").read_bytes() != (small_run / "lightgcn.safetensors").read_bytes()
    assert invoke("train", "--dataset", f"csv:{data_dir}", "--out", tmp_path / "runs", "--name", "zero",
                  "--stage", "cf", "--cf-batch-size", "0").exit_code == 2


def test_eval_json_and_table(small_run):
    result = invoke("eval", small_run, "--json")
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)["metrics"]
    assert set(metrics) == {"pop", "lightgcn", "mf"}
    assert "versus_reference" not in json.loads(result.output)  # no DeftRec: nothing to pair with LightGCN
    for model in metrics.values():
        for split in ("valid", "test"):
            assert all(0.0 <= v <= 1.0 for v in model[split].values())
    table = invoke("eval", small_run)
    assert "lightgcn" in table.output and "protocol:" in table.output


@pytest.mark.parametrize("model", ["lightgcn", "mf", "pop"])
def test_export_agrees_with_eval(small_run, tmp_path, model):
    out = tmp_path / "top.csv"
    result = invoke("export", small_run, "--model", model, "--out", out, "--k", "20")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["user_id", "rank", "item_id", "title", "category", "score"]
    assert len(rows) == 60 * 20
    # recompute test metrics from the CSV: the rank of each user's test item in their list
    import sqlite3
    db = sqlite3.connect(small_run / "catalog.sqlite")
    test_item = dict(db.execute("select u.user_id, i.item_id from users u join items i "
                                "on i.item_idx = u.test_item_idx"))
    ranks = {u: 10**9 for u in test_item}
    for row in rows:
        if test_item[row["user_id"]] == row["item_id"]:
            ranks[row["user_id"]] = int(row["rank"]) - 1
    import numpy as np
    recomputed = metrics_from_ranks(np.array(list(ranks.values())))
    stored = json.loads(invoke("eval", small_run, "--json").output)["metrics"][model]["test"]
    for name, value in recomputed.items():
        assert math.isclose(value, stored[name], abs_tol=1e-9), (name, value, stored[name])


def test_unknown_dataset(tmp_path):
    result = invoke("train", "--dataset", "nosuch", "--out", tmp_path / "runs")
    assert_one_line_error(result, "unknown dataset 'nosuch'")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "big"])
def test_bad_item_norm_is_refused_before_training(tmp_path, value):
    result = invoke("train", "--dataset", "ml-100k", "--out", tmp_path / "runs", "--item-norm", value)
    assert_one_line_error(result, f"bad --item-norm {value!r}", "use auto or a number >= 0")
    assert not (tmp_path / "runs").exists()


def test_missing_directory(tmp_path):
    assert_one_line_error(invoke("data", "info", f"csv:{tmp_path / 'absent'}"), "does not exist")


def test_csv_without_required_column(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "interactions.csv").write_text("user,item_id\n1,2\n")
    (d / "items.csv").write_text("item_id,title,category\n2,x,y\n")
    result = invoke("train", "--dataset", f"csv:{d}", "--out", tmp_path / "runs")
    assert_one_line_error(result, "interactions.csv", "user_id")
    assert not (tmp_path / "runs").exists()


def test_empty_file(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "interactions.csv").write_text("")
    (d / "items.csv").write_text("item_id,title,category\n")
    assert_one_line_error(invoke("data", "info", f"csv:{d}"), "interactions.csv")


def test_non_numeric_timestamp_names_the_line(tmp_path):
    d = write_clustered_csv(tmp_path / "d")
    lines = (d / "interactions.csv").read_text().splitlines()
    lines[7] = lines[7].rsplit(",", 1)[0] + ",yesterday"
    (d / "interactions.csv").write_text("\n".join(lines) + "\n")
    assert_one_line_error(invoke("data", "info", f"csv:{d}"), "interactions.csv:8")


def test_truncated_gz(tmp_path):
    d = tmp_path / "amazon"
    d.mkdir()
    payload = "".join(json.dumps({"reviewerID": f"u{i % 7}", "asin": f"a{i % 9}", "unixReviewTime": i}) + "\n"
                      for i in range(3000))
    blob = gzip.compress(payload.encode())
    (d / "Software_5.json.gz").write_bytes(blob[: len(blob) // 2])
    (d / "meta_Software.json").write_text("")
    assert_one_line_error(invoke("data", "info", f"amazon:{d}"), "Software_5.json.gz")


def test_dataset_empty_after_5_core(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "interactions.csv").write_text("user_id,item_id,timestamp\n1,a,1\n2,b,2\n")
    (d / "items.csv").write_text("item_id,title,category\na,A,x\nb,B,y\n")
    result = invoke("train", "--dataset", f"csv:{d}", "--out", tmp_path / "runs", "--name", "r", "--stage", "cf")
    assert_one_line_error(result, "5-core")
    runs = tmp_path / "runs"
    assert not runs.exists() or not list(runs.iterdir())  # no run and no partial directory


def test_not_a_run_directory(tmp_path):
    assert_one_line_error(invoke("eval", tmp_path), "not a run directory")
    assert_one_line_error(invoke("export", tmp_path / "nope", "--out", tmp_path / "x.csv"), "not a run directory")
    assert not (tmp_path / "x.csv").exists()


def test_corrupt_weights_are_refused(small_run, tmp_path):
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(small_run, copy)
    (copy / "lightgcn.safetensors").write_bytes(b"garbage")
    assert_one_line_error(invoke("export", copy, "--out", tmp_path / "x.csv"), "checksum mismatch")
    assert not (tmp_path / "x.csv").exists()


def test_existing_run_is_not_overwritten(small_run):
    result = invoke("train", "--dataset", "ml-100k", "--out", small_run.parent, "--name", "small")
    assert_one_line_error(result, "already exists")
    assert (small_run / "config.json").exists()

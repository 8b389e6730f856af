"""--resume: an interrupted training continues from its last checkpoint and ends with the run an uninterrupted
training writes; a checkpoint from other data or another LLM is refused."""

import os
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

import train.deftrec
from data.errors import RunError
from deftrec_tui.cli import app
from engine.model.config import config_from_v1
from tests.conftest import write_clustered_csv
from train.cf import CFTrainConfig
from train.pipeline import TrainRequest, train_run


def _request(base: Path, name: str, resume: bool = False, dataset: str | None = None, llm: str = "tiny"):
    return TrainRequest(dataset=dataset or f"csv:{base / 'data'}", out_root=base / "runs", name=name, stage="all",
                        threads=1, cf=CFTrainConfig(max_epochs=10), profile="tiny", resume=resume,
                        deftrec=config_from_v1({"llm": llm, "k": 2, "condition_source": "hidden", "diffusion": True,
                                                "negative_loss": True, "encoder": "kway", "mask_ratio": 0.2,
                                                "cf": "lightgcn"}))


def _recommendations(run: Path) -> list:
    db = sqlite3.connect(run / "catalog.sqlite")
    return db.execute("select user_idx, rank, item_idx, round(score, 6) from recommendations "
                      "where model = 'deftrec' order by user_idx, rank").fetchall()


def _texts(run: Path) -> list:
    return sqlite3.connect(run / "catalog.sqlite").execute(
        "select user_idx, text from preferences order by user_idx").fetchall()


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    base = tmp_path_factory.mktemp("resume")
    write_clustered_csv(base / "data")
    return base


def _interrupt_after_first_checkpoint(monkeypatch):
    real = train.deftrec.save_joint_checkpoint

    def save_then_stop(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt  # as if Ctrl-C arrived right after step 1 was saved

    monkeypatch.setattr(train.deftrec, "save_joint_checkpoint", save_then_stop)


def test_resumed_training_equals_an_uninterrupted_one(base, monkeypatch):
    whole = train_run(_request(base, "whole"))
    with monkeypatch.context() as patch:
        _interrupt_after_first_checkpoint(patch)
        with pytest.raises(KeyboardInterrupt):
            train_run(_request(base, "cut"))
    runs = base / "runs"
    assert not (runs / "cut").exists()  # nothing that looks like a run
    assert not list(runs.glob(".cut.partial-*"))
    assert (runs / ".cut.resume" / "joint.safetensors").is_file()
    assert (runs / ".cut.resume" / "cf.safetensors").is_file()
    with pytest.raises(RunError, match="interrupted training named 'cut' exists"):
        train_run(_request(base, "cut"))  # neither --resume nor --force: refused, nothing touched
    resumed = train_run(_request(base, "cut", resume=True))
    assert not (runs / ".cut.resume").exists()  # removed once the run is complete
    assert _recommendations(resumed) == _recommendations(whole)
    assert _texts(resumed) == _texts(whole)


def test_resume_refuses_another_dataset_and_another_llm(base, tmp_path, monkeypatch):
    with monkeypatch.context() as patch:
        _interrupt_after_first_checkpoint(patch)
        with pytest.raises(KeyboardInterrupt):
            train_run(_request(base, "other"))
    other_data = write_clustered_csv(tmp_path / "data2", seed=3)
    with pytest.raises(RunError, match="made from another dataset"):
        train_run(_request(base, "other", resume=True, dataset=f"csv:{other_data}"))
    from engine.model.llm.tiny import tiny_llama
    model, tokenizer = tiny_llama(seed=0)
    model.save_pretrained(tmp_path / "llm")
    tokenizer.save_pretrained(tmp_path / "llm")
    with pytest.raises(RunError, match="made from another LLM"):
        train_run(_request(base, "other", resume=True, llm=str(tmp_path / "llm")))
    assert (base / "runs" / ".other.resume" / "joint.safetensors").is_file()  # still resumable


def test_resume_cli_errors(base):
    result = CliRunner().invoke(app, ["train", "--dataset", f"csv:{base / 'data'}", "--out", str(base / "runs"),
                                      "--name", "never", "--llm", "tiny", "--profile", "tiny", "--resume"])
    assert result.exit_code == 2
    assert "nothing to resume" in result.output and len(result.output.strip().splitlines()) == 1


def test_a_second_training_of_the_same_run_refuses_while_the_first_holds_the_lock(tmp_path):
    from typer.testing import CliRunner

    from deftrec_tui.cli import app
    from train.checkpoint import training_lock
    with training_lock(tmp_path / "runs", "busy"):
        result = CliRunner().invoke(app, ["train", "--dataset", "ml-100k", "--stage", "cf", "--out",
                                          str(tmp_path / "runs"), "--name", "busy"])
        assert result.exit_code == 2
        assert f"another training is writing run 'busy' (PID {os.getpid()})" in result.output
    assert not (tmp_path / "runs").exists()  # the lock is gone and nothing else was written
    with training_lock(tmp_path / "runs", "busy"):  # free again
        pass

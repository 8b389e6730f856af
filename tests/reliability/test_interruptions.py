"""Killed work (SIGKILL, SIGINT, SIGTERM at several points) never leaves a run that looks complete, and running
the same command again (--resume for training) ends with exactly the results of an uninterrupted run."""

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import write_clustered_csv
from tests.reliability import tally

KILLER = Path(__file__).with_name("killer.py")
ENV = {**os.environ, "DEFTREC_PROGRESS": "0", "OMP_NUM_THREADS": "1"}


def deftrec(*args, hook=None, count=0, sig="SIGKILL"):
    command = [sys.executable, "-m", "deftrec_tui.cli", *map(str, args)] if hook is None else \
        [sys.executable, str(KILLER), hook, str(count), sig, *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=300)


def train_args(base: Path, name: str) -> list:
    return ["train", "--dataset", f"csv:{base / 'data'}", "--out", base / "runs", "--name", name, "--llm", "tiny",
            "--profile", "tiny", "--cf-epochs", "10", "--threads", "1"]


def results_of(run: Path) -> tuple:
    db = sqlite3.connect(run / "catalog.sqlite")
    lists = db.execute("select user_idx, rank, item_idx, round(score, 6) from recommendations "
                       "where model = 'deftrec' order by user_idx, rank").fetchall()
    metrics = db.execute("select model, split, metric, round(value, 9) from metrics order by 1, 2, 3").fetchall()
    texts = db.execute("select user_idx, text from preferences order by user_idx").fetchall()
    return lists, metrics, texts


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    base = tmp_path_factory.mktemp("interrupt")
    write_clustered_csv(base / "data")
    done = deftrec(*train_args(base, "whole"))
    assert done.returncode == 0, done.stderr[-2000:]
    return base


# ResumeState.save is called after the CF stage (1), after each joint step (2, 3 in the tiny profile) and after
# each batch of generated sentences (4, …)
@pytest.mark.parametrize("count,sig", [(1, "SIGKILL"), (2, "SIGKILL"), (3, "SIGINT"), (4, "SIGTERM"), (5, "SIGKILL")])
def test_killed_training_resumes_to_the_uninterrupted_result(base, count, sig):
    name = f"cut-{count}-{sig.lower()}"
    killed = deftrec(*train_args(base, name), hook="train.resume:ResumeState.save", count=count, sig=sig)
    assert killed.returncode != 0
    assert not (base / "runs" / name).exists()  # nothing that looks like a run
    assert (base / "runs" / f".{name}.resume").is_dir()
    if sig != "SIGKILL":  # a signal Python sees unwinds: the partial folder is removed at once
        assert not list((base / "runs").glob(f".{name}.partial-*"))
    resumed = deftrec(*train_args(base, name), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert results_of(base / "runs" / name) == results_of(base / "runs" / "whole")
    assert not list((base / "runs").glob(f".{name}.*"))  # partial, resume and lock folders all gone
    tally("interruptions survived with identical results")


@pytest.mark.parametrize("count,sig", [(1, "SIGKILL"), (3, "SIGINT")])
def test_killed_export_reruns_to_the_uninterrupted_file(base, tmp_path, count, sig):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    shutil.copytree(base / "runs" / "whole", whole)
    shutil.copytree(base / "runs" / "whole", cut)
    reference = deftrec("export", whole, "--out", tmp_path / "whole.csv", "--recompute", "--batch-size", "8")
    assert reference.returncode == 0, reference.stderr[-2000:]
    killed = deftrec("export", cut, "--out", tmp_path / "cut.csv", "--recompute", "--batch-size", "8",
                     hook="engine.services.export:cache_results", count=count, sig=sig)
    assert killed.returncode != 0
    assert not (tmp_path / "cut.csv").exists() and not list(tmp_path.glob(".cut.csv.partial-*"))
    again = deftrec("export", cut, "--out", tmp_path / "cut.csv", "--batch-size", "8")
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"{8 * count} from the cache, {60 - 8 * count} computed now" in again.stdout
    assert (tmp_path / "cut.csv").read_bytes() == (tmp_path / "whole.csv").read_bytes()
    tally("interruptions survived with identical results")


def test_training_killed_at_random_moments_resumes_to_the_same_result(base):
    """SIGKILL after a random delay (a new draw each run, printed): during start-up, CF, joint steps,
    generation, refinement or writing; then --resume (or a fresh start when nothing was saved yet)."""
    import random
    import time
    draw = random.Random()
    delays = [round(draw.uniform(0.5, 9.0), 2) for _ in range(3)]
    print(f"kill delays (s): {delays}")
    reference = results_of(base / "runs" / "whole")
    for number, delay in enumerate(delays):
        name = f"random-{number}"
        process = subprocess.Popen([sys.executable, "-m", "deftrec_tui.cli", *map(str, train_args(base, name))],
                                   env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait()
        run = base / "runs" / name
        if not (run / "config.json").exists():
            assert not run.exists()  # never a run that looks complete
            resumable = (base / "runs" / f".{name}.resume").is_dir()
            again = deftrec(*train_args(base, name), *(["--resume"] if resumable else []))
            assert again.returncode == 0, (delay, again.stderr[-2000:])
        assert results_of(run) == reference, f"killed after {delay} s"
        tally("interruptions survived with identical results")

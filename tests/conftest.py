"""Shared fixtures: small synthetic datasets written to disk, and CLI helpers."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DEFTREC_PROGRESS", "0")  # quiet tests; a test of the plain lines sets it itself


def write_clustered_csv(directory, n_users=60, n_items=40, per_user=10, seed=0):
    """A csv:DIR dataset where users of a cluster prefer that cluster's items (so CF can learn it)."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    genres = ["Action", "Comedy", "Drama", "Horror"]
    lines = ["user_id,item_id,timestamp"]
    for user in range(n_users):
        cluster = user % 4
        own = [i for i in range(n_items) if i % 4 == cluster]
        other = [i for i in range(n_items) if i % 4 != cluster]
        chosen = list(rng.choice(own, size=per_user - 2, replace=False)) + list(rng.choice(other, 2, replace=False))
        for t, item in enumerate(rng.permutation(chosen)):
            lines.append(f"u{user},i{item},{1_000_000 + 100 * t + user}")
    (directory / "interactions.csv").write_text("\n".join(lines) + "\n")
    items = ["item_id,title,category"] + [f"i{i},Movie {i},{genres[i % 4]}" for i in range(n_items)]
    (directory / "items.csv").write_text("\n".join(items) + "\n")
    return directory


@pytest.fixture
def clustered_csv(tmp_path):
    return write_clustered_csv(tmp_path / "clustered")


def train_tiny_run(base, name="tiny", extra=()):
    """A DeftRec run with the tiny random Llama on the clustered CSV data (a few seconds on the CPU)."""
    from typer.testing import CliRunner

    from deftrec_tui.cli import app
    data_dir = base / "data"
    if not data_dir.exists():
        write_clustered_csv(data_dir)
    if "--inference-precision" not in extra:  # the same texts on every machine ('auto' goes by this CPU's bf16 speed)
        extra = (*extra, "--inference-precision", "float32")
    result = CliRunner().invoke(app, ["train", "--dataset", f"csv:{data_dir}", "--out", str(base / "runs"),
                                      "--name", name, "--llm", "tiny", "--profile", "tiny", "--cf-epochs", "10",
                                      "--threads", "1", *extra])
    assert result.exit_code == 0, result.output
    return base / "runs" / name


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One tiny DeftRec run shared by the end-to-end, CLI and explorer tests (read-only for them)."""
    return train_tiny_run(tmp_path_factory.mktemp("e2e"))

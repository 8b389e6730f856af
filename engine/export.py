"""Top-K lists of every user to CSV, with the dataset's own ids and test-time masking (train + validation)."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from data.catalog import connect
from engine.ranking import HistoryIndex, batches, top_k
from engine.run import Run

CF_COLUMNS = ["user_id", "rank", "item_id", "title", "category", "score"]


def spreadsheet_safe(value: str) -> str:
    """Prefix cells that a spreadsheet would run as a formula."""
    return "'" + value if value[:1] in ("=", "+", "-", "@") else value


@contextmanager
def atomic_csv(out: str | Path, header: list[str]) -> Iterator:
    """A csv.writer on a hidden temp file that replaces `out` only when the block finishes without error."""
    out = Path(out)
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            yield writer
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def test_history(run: Run) -> tuple[HistoryIndex, dict]:
    """Masks for test-time ranking and the lookup tables of users and items."""
    db = connect(run.catalog_path, readonly=True)
    train = np.array(list(db.execute("select user_idx, item_idx from interactions where split = 'train'")),
                     dtype=np.int64).reshape(-1, 2)
    users = list(db.query("select user_idx, user_id, valid_item_idx from users order by user_idx"))
    items = list(db.query("select item_idx, item_id, title, category from items order by item_idx"))
    db.conn.close()
    history = HistoryIndex.build(len(users), train[:, 0], train[:, 1])
    history = history.with_extra(np.array([u["valid_item_idx"] for u in users], dtype=np.int64))
    return history, {"users": users, "items": items}


def export_cf(run: Run, model: str, out: str | Path, k: int = 20, batch_size: int = 512, on_progress=None) -> int:
    """Write the top-k of every user for a CF model; returns the number of rows. Atomic: temp file + rename."""
    from engine.baselines import cf_scorer
    scorer = cf_scorer(run, model)
    history, tables = test_history(run)
    users, items = tables["users"], tables["items"]
    rows = 0
    with atomic_csv(out, CF_COLUMNS) as writer, torch.no_grad():
        for batch in batches(len(users), batch_size):
            top_items, top_scores = top_k(scorer(batch), history.mask(batch, len(items)), k)
            for row_user, item_row, score_row in zip(batch, top_items.tolist(), top_scores.tolist()):
                for rank, (item_idx, score) in enumerate(zip(item_row, score_row), start=1):
                    item = items[item_idx]
                    writer.writerow([spreadsheet_safe(users[row_user]["user_id"]), rank,
                                     spreadsheet_safe(item["item_id"]), spreadsheet_safe(item["title"]),
                                     spreadsheet_safe(item["category"]), f"{score:.6f}"])
                    rows += 1
            if on_progress is not None:
                on_progress(int(batch[-1]) + 1, len(users))
    return rows


DEFTREC_COLUMNS = ["user_id", "rank", "item_id", "title", "category", "cosine", "pi_bonus", "score"]


def deftrec_row(user_id, rank, item_id, title, category, cosine, pi_bonus, score) -> list:
    """One CSV row of DEFTREC_COLUMNS."""
    return [spreadsheet_safe(str(user_id)), rank, spreadsheet_safe(str(item_id)), spreadsheet_safe(title),
            spreadsheet_safe(category or ""), f"{cosine:.6f}", f"{pi_bonus:.2f}", f"{score:.6f}"]


def export_deftrec_cached(run: Run, out: str | Path, k: int = 20, on_progress=None) -> int:
    """Write DeftRec's cached top-k (computed at training with test-time masking) with its score breakdown."""
    from data.errors import RunError
    db = connect(run.catalog_path, readonly=True)
    cached_k = db.execute("select coalesce(max(rank), 0) from recommendations where model = 'deftrec'").fetchone()[0]
    if cached_k < k:
        db.conn.close()
        raise RunError(f"the run caches DeftRec lists of length {cached_k}, fewer than --k {k}", path=run.path,
                       hint=f"use --k {cached_k} or less")
    rows = db.execute(
        "select u.user_id, r.rank, i.item_id, i.title, i.category, r.cosine, r.pi_bonus, r.score "
        "from recommendations r join users u on u.user_idx = r.user_idx join items i on i.item_idx = r.item_idx "
        "where r.model = 'deftrec' and r.rank <= ? order by r.user_idx, r.rank", (k,))
    n_users = db.execute("select count(*) from users").fetchone()[0]
    count = 0
    try:
        with atomic_csv(out, DEFTREC_COLUMNS) as writer:
            for user_id, rank, item_id, title, category, cosine, pi_bonus, score in rows:
                writer.writerow(deftrec_row(user_id, rank, item_id, title, category, cosine, pi_bonus, score))
                count += 1
                if on_progress is not None and count % (k * 50) == 0:
                    on_progress(count // k, n_users)
            if on_progress is not None:
                on_progress(n_users, n_users)
    finally:
        db.conn.close()
    return count

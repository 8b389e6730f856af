"""The run's SQLite catalog (sqlite-utils): items, users, interactions with their split, metrics and the
cached per-user results. WAL mode and a busy timeout so the explorer reads while a writer works."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import sqlite_utils

from data.protocol import Split

SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 30_000


def connect(path: str | Path, *, readonly: bool = False) -> sqlite_utils.Database:
    """Open the catalog with WAL and a busy timeout (never 'database is locked' on a short write)."""
    if readonly:
        conn = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_MS / 1000,
                               check_same_thread=False)
    else:
        conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    db = sqlite_utils.Database(conn)
    if not readonly:
        db.enable_wal()
    return db


@contextmanager
def write_transaction(db: sqlite_utils.Database) -> Iterator[sqlite_utils.Database]:
    """One atomic write: BEGIN IMMEDIATE takes the write lock up front (waiting up to the busy timeout), so a
    transaction that reads before it writes can never fail with 'database is locked' when another writer wins."""
    db.conn.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        if db.conn.in_transaction:
            db.conn.execute("ROLLBACK")
        raise
    db.conn.execute("COMMIT")


def write_catalog(path: str | Path, split: Split) -> None:
    """Create the catalog of a split in one transaction."""
    db = connect(path)
    items = split.items.assign(item_idx=np.arange(split.n_items))
    counts = split.interactions.groupby("user_idx")["split"].value_counts().unstack(fill_value=0)
    users = pd.DataFrame({
        "user_idx": np.arange(split.n_users),
        "user_id": split.user_ids.astype(str),
        "n_train": counts.get("train", pd.Series(0, index=counts.index)).reindex(range(split.n_users),
                                                                                  fill_value=0).to_numpy(),
        "valid_item_idx": split.valid_item,
        "test_item_idx": split.test_item,
    })
    inter = split.interactions
    with write_transaction(db):
        db["meta"].insert_all([{"key": "schema_version", "value": str(SCHEMA_VERSION)},
                               {"key": "dataset", "value": split.name},
                               {"key": "protocol", "value": split.protocol},
                               {"key": "checksum", "value": split.checksum}], pk="key", replace=True)
        db["items"].insert_all(_records(items[["item_idx", "item_id", "title", "category", "popularity"]]),
                               pk="item_idx", replace=True, batch_size=5000)
        db["users"].insert_all(_records(users), pk="user_idx", replace=True, batch_size=5000,
                               foreign_keys=[("valid_item_idx", "items", "item_idx"),
                                             ("test_item_idx", "items", "item_idx")])
        db["interactions"].insert_all(
            ({"user_idx": int(u), "item_idx": int(i), "position": int(p),
              "timestamp": None if pd.isna(t) else int(t), "split": s}
             for u, i, p, t, s in zip(inter["user_idx"], inter["item_idx"], inter["position"],
                                      inter["timestamp"], inter["split"])),
            pk=("user_idx", "position"), batch_size=20000,
            columns={"user_idx": int, "item_idx": int, "position": int, "timestamp": int, "split": str})
        db["metrics"].create({"model": str, "split": str, "metric": str, "value": float},
                             pk=("model", "split", "metric"), if_not_exists=True)
        db["preferences"].create({"user_idx": int, "prompt": str, "text": str, "category": str, "condition": bytes},
                                 pk="user_idx", if_not_exists=True)
        db["recommendations"].create({"model": str, "user_idx": int, "rank": int, "item_idx": int,
                                      "cosine": float, "pi_bonus": float, "score": float},
                                     pk=("model", "user_idx", "rank"), if_not_exists=True)
    db["interactions"].create_index(["item_idx"], if_not_exists=True)
    db["items"].enable_fts(["title", "category"], create_triggers=True, replace=True)
    db.conn.close()


def put_metrics(db: sqlite_utils.Database, model: str, split_name: str, metrics: dict[str, float]) -> None:
    with write_transaction(db):
        db["metrics"].insert_all([{"model": model, "split": split_name, "metric": k, "value": float(v)}
                                  for k, v in metrics.items()], pk=("model", "split", "metric"), replace=True)


def read_metrics(db: sqlite_utils.Database) -> pd.DataFrame:
    rows = list(db.query("select model, split, metric, value from metrics"))
    return pd.DataFrame(rows, columns=["model", "split", "metric", "value"])


def put_recommendations(db: sqlite_utils.Database, model: str, rows: Iterable[dict]) -> None:
    """Cache ranked lists: dicts with user_idx, rank, item_idx, cosine, pi_bonus, score."""
    with write_transaction(db):
        db["recommendations"].insert_all(({"model": model, **row} for row in rows),
                                         pk=("model", "user_idx", "rank"), replace=True, batch_size=5000)


def meta(db: sqlite_utils.Database) -> dict[str, str]:
    return {row["key"]: row["value"] for row in db.query("select key, value from meta")}


def fts_query(text: str) -> str | None:
    """An FTS5 query on the title column: each word of `text` quoted, the last one a prefix; None without words."""
    words = re.findall(r"\w+", text)
    if not words:
        return None
    return "title : (" + " ".join(f'"{w}"' for w in words[:-1]) + f' "{words[-1]}"*)'


def search_titles(db: sqlite_utils.Database, text: str, limit: int = 20) -> list[dict]:
    """Items whose title matches the words of `text` (the full-text index), best match first."""
    query = fts_query(text)
    if query is None:
        return []
    rows = db.execute("select i.item_idx, i.title, i.category from items_fts f join items i on i.rowid = f.rowid "
                      "where items_fts match ? order by f.rank limit ?", (query, limit)).fetchall()
    return [{"item_idx": r[0], "title": r[1], "category": r[2] or ""} for r in rows]


def users_with_items(db: sqlite_utils.Database, item_idxs: Iterable[int]) -> list[int]:
    """The users (user_idx, ascending) with any of the items in their history, whatever the split."""
    items = [int(i) for i in item_idxs]
    if not items:
        return []
    marks = ",".join("?" * len(items))
    return [r[0] for r in db.execute(f"select distinct user_idx from interactions where item_idx in ({marks}) "
                                     "order by user_idx", items)]


def _records(frame: pd.DataFrame) -> list[dict]:
    return [{k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}
            for row in frame.to_dict("records")]


def read_user_targets(db: sqlite_utils.Database) -> pd.DataFrame:
    """Every user by user_idx: n_train, valid_item_idx, test_item_idx."""
    rows = db.execute("select user_idx, n_train, valid_item_idx, test_item_idx from users order by user_idx").fetchall()
    return pd.DataFrame(rows, columns=["user_idx", "n_train", "valid_item_idx", "test_item_idx"])


def read_item_facts(db: sqlite_utils.Database) -> pd.DataFrame:
    """Every item by item_idx: category ('' when none) and popularity (train interactions)."""
    rows = db.execute("select item_idx, coalesce(category, ''), popularity from items order by item_idx").fetchall()
    return pd.DataFrame(rows, columns=["item_idx", "category", "popularity"])


def read_top_lists(db: sqlite_utils.Database, model: str, k: int, n_users: int) -> np.ndarray | None:
    """The stored top-k of `model` as item_idx [n_users, k] (-1 where a list is shorter), or None when the
    catalog stores no lists of that model or stores fewer than k per user."""
    stored = db.execute("select count(*), coalesce(max(rank), 0) from recommendations where model = ?",
                        (model,)).fetchone()
    if not stored[0] or stored[1] < k:
        return None
    lists = np.full((n_users, k), -1, np.int64)  # [U,k]
    for user_idx, rank, item_idx in db.execute(
            "select user_idx, rank, item_idx from recommendations where model = ? and rank <= ?", (model, k)):
        lists[user_idx, rank - 1] = item_idx
    return lists


def read_generated_categories(db: sqlite_utils.Database, n_users: int) -> list[str | None] | None:
    """The category of each user's cached preference text (None where empty), or None when none is cached."""
    rows = db.execute("select user_idx, category from preferences").fetchall()
    if not rows:
        return None
    out: list[str | None] = [None] * n_users
    for user_idx, category in rows:
        out[user_idx] = category or None
    return out


def read_train_items(db: sqlite_utils.Database) -> np.ndarray:
    """Every train interaction as (user_idx, item_idx) [n, 2], each user's in time order."""
    return np.array(db.execute("select user_idx, item_idx from interactions where split = 'train' "
                               "order by user_idx, position").fetchall(),
                    dtype=np.int64).reshape(-1, 2)

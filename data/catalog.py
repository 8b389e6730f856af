"""The run's SQLite catalog (sqlite-utils): items, users, interactions with their split, metrics and the
cached per-user results. WAL mode and a busy timeout so the explorer reads while a writer works.

`Catalog` owns every SQL statement of deftrec (as sqlite-utils keeps its own in `db.py` under a thin CLI): the
engine, the training pipeline, the explorer and the scripts open it once per use as a context manager and call
its typed methods; nothing else executes SQL (tests/test_catalog.py checks it)."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Self

import numpy as np
import pandas as pd
import sqlite_utils

from data.protocol import Split

SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 30_000


def _connect(path: str | Path, *, readonly: bool = False) -> sqlite_utils.Database:
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
def _write_transaction(db: sqlite_utils.Database) -> Iterator[sqlite_utils.Database]:
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


def fts_query(text: str) -> str | None:
    """An FTS5 query on the title column: each word of `text` quoted, the last one a prefix; None without words."""
    words = re.findall(r"\w+", text)
    if not words:
        return None
    return "title : (" + " ".join(f'"{w}"' for w in words[:-1]) + f' "{words[-1]}"*)'


def _records(frame: pd.DataFrame) -> list[dict]:
    return [{k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}
            for row in frame.to_dict("records")]


def _condition_bytes(condition) -> bytes:
    """A condition c as float32 bytes: a torch tensor (data/ does not import torch) or an array, [D]."""
    if hasattr(condition, "numpy"):  # torch.Tensor
        condition = condition.float().numpy()
    return np.asarray(condition, dtype=np.float32).tobytes()


def _condition(blob: bytes | None) -> np.ndarray | None:
    """float32 [D] of a stored condition, None when none is stored."""
    return np.frombuffer(blob, dtype=np.float32).copy() if blob else None


class Catalog:
    """One open catalog. Open it once per use, `with Catalog.open(run.catalog_path, readonly=True) as cat:`;
    every write method is one short BEGIN IMMEDIATE transaction of its own."""

    def __init__(self, db: sqlite_utils.Database) -> None:
        self._db = db

    @classmethod
    def open(cls, path: str | Path, *, readonly: bool = False) -> Catalog:
        """Open with WAL (when writable) and the busy timeout; readonly opens `mode=ro` and never writes."""
        return cls(_connect(path, readonly=readonly))

    def close(self) -> None:
        self._db.conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ writing a new catalog

    @classmethod
    def create(cls, path: str | Path, split: Split) -> None:
        """Write the catalog of a split (meta, items, users, interactions, empty cache tables) in one transaction,
        then the interactions' item index and the titles' full-text index."""
        db = _connect(path)
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
        with _write_transaction(db):
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
            db["preferences"].create({"user_idx": int, "prompt": str, "text": str, "category": str,
                                      "condition": bytes}, pk="user_idx", if_not_exists=True)
            db["recommendations"].create({"model": str, "user_idx": int, "rank": int, "item_idx": int,
                                          "cosine": float, "pi_bonus": float, "score": float},
                                         pk=("model", "user_idx", "rank"), if_not_exists=True)
        db["interactions"].create_index(["item_idx"], if_not_exists=True)
        db["items"].enable_fts(["title", "category"], create_triggers=True, replace=True)
        db.conn.close()

    def checkpoint(self) -> None:
        """Fold the WAL into the database file and truncate it (the end of a training)."""
        self._db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    # ------------------------------------------------------------------ meta

    def meta(self) -> dict[str, str]:
        """{key: value}: schema_version, dataset, protocol, checksum."""
        return {row["key"]: row["value"] for row in self._db.query("select key, value from meta")}

    # ------------------------------------------------------------------ items

    def n_items(self) -> int:
        return self._db.execute("select count(*) from items").fetchone()[0]

    def items(self) -> list[dict]:
        """Every item by item_idx: {item_idx, item_id, title, category}."""
        return list(self._db.query("select item_idx, item_id, title, category from items order by item_idx"))

    def item_categories(self) -> list[str | None]:
        """Every item's category by item_idx (None when none)."""
        return [r[0] or None for r in self._db.execute("select category from items order by item_idx")]

    def item_popularity(self) -> np.ndarray:
        """Every item's popularity (train interactions) by item_idx, float32 [n_items]."""
        return np.array([row["popularity"] for row in self._db.query(
            "select popularity from items order by item_idx")], dtype=np.float32)

    def item_facts(self) -> pd.DataFrame:
        """Every item by item_idx: category ('' when none) and popularity (train interactions)."""
        rows = self._db.execute("select item_idx, coalesce(category, ''), popularity from items "
                                "order by item_idx").fetchall()
        return pd.DataFrame(rows, columns=["item_idx", "category", "popularity"])

    def search_titles(self, text: str, limit: int = 20) -> list[dict]:
        """Items whose title matches the words of `text` (the full-text index), best match first:
        {item_idx, title, category ('' when none)}."""
        query = fts_query(text)
        if query is None:
            return []
        rows = self._db.execute("select i.item_idx, i.title, i.category from items_fts f "
                                "join items i on i.rowid = f.rowid "
                                "where items_fts match ? order by f.rank limit ?", (query, limit)).fetchall()
        return [{"item_idx": r[0], "title": r[1], "category": r[2] or ""} for r in rows]

    # ------------------------------------------------------------------ users

    def n_users(self) -> int:
        return self._db.execute("select count(*) from users").fetchone()[0]

    def users(self) -> list[dict]:
        """Every user by user_idx: {user_idx, user_id, n_train, valid_item_idx, test_item_idx}."""
        return list(self._db.query("select user_idx, user_id, n_train, valid_item_idx, test_item_idx "
                                   "from users order by user_idx"))

    def user_positions(self) -> dict[str, int]:
        """{user_id: user_idx} of every user."""
        return {row[0]: row[1] for row in self._db.execute("select user_id, user_idx from users")}

    def held_out(self) -> np.ndarray:
        """Every user's (valid_item_idx, test_item_idx) by user_idx, int64 [U, 2]."""
        return np.array(self._db.execute("select valid_item_idx, test_item_idx from users "
                                         "order by user_idx").fetchall(), dtype=np.int64).reshape(-1, 2)

    def user_targets(self) -> pd.DataFrame:
        """Every user by user_idx: n_train, valid_item_idx, test_item_idx."""
        rows = self._db.execute("select user_idx, n_train, valid_item_idx, test_item_idx from users "
                                "order by user_idx").fetchall()
        return pd.DataFrame(rows, columns=["user_idx", "n_train", "valid_item_idx", "test_item_idx"])

    def users_with_items(self, item_idxs: Iterable[int]) -> list[int]:
        """The users (user_idx, ascending) with any of the items in their history, whatever the split."""
        items = [int(i) for i in item_idxs]
        if not items:
            return []
        marks = ",".join("?" * len(items))
        return [r[0] for r in self._db.execute(f"select distinct user_idx from interactions "
                                               f"where item_idx in ({marks}) order by user_idx", items)]

    # ------------------------------------------------------------------ interactions

    def history(self, user_idx: int) -> list[tuple]:
        """The user's interactions by position: (item_idx, item_id, title, category, timestamp, split)."""
        return self._db.execute("select i.item_idx, i.item_id, i.title, i.category, x.timestamp, x.split "
                                "from interactions x join items i on i.item_idx = x.item_idx "
                                "where x.user_idx = ? order by x.position", (user_idx,)).fetchall()

    def train_pairs(self, *, in_order: bool = True) -> np.ndarray:
        """Every train interaction as (user_idx, item_idx), int64 [n, 2]: each user's in time order (by user_idx,
        position), or in the table's stored order when in_order=False (the masks of test-time ranking)."""
        if not in_order:
            return np.array(list(self._db.execute("select user_idx, item_idx from interactions "
                                                  "where split = 'train'")), dtype=np.int64).reshape(-1, 2)
        return np.array(self._db.execute("select user_idx, item_idx from interactions where split = 'train' "
                                         "order by user_idx, position").fetchall(), dtype=np.int64).reshape(-1, 2)

    # ------------------------------------------------------------------ metrics

    def put_metrics(self, model: str, split_name: str, metrics: dict[str, float]) -> None:
        with _write_transaction(self._db):
            self._db["metrics"].insert_all([{"model": model, "split": split_name, "metric": k, "value": float(v)}
                                            for k, v in metrics.items()], pk=("model", "split", "metric"),
                                           replace=True)

    def metrics(self) -> pd.DataFrame:
        """Every stored metric: columns model, split, metric, value."""
        rows = list(self._db.query("select model, split, metric, value from metrics"))
        return pd.DataFrame(rows, columns=["model", "split", "metric", "value"])

    # ------------------------------------------------------------------ preferences (generated text and c)

    def _insert_preferences(self, preferences: Iterable) -> None:
        """The one preference-row insert: objects with user_idx, prompt, text, category and condition c [D]."""
        self._db["preferences"].insert_all(
            ({"user_idx": p.user_idx, "prompt": p.prompt, "text": p.text, "category": p.category or "",
              "condition": _condition_bytes(p.condition)} for p in preferences),
            pk="user_idx", replace=True, alter=True)

    def put_preferences(self, preferences: Iterable) -> None:
        """Cache each user's preference (prompt, text, category, c), replacing any earlier one, in one transaction."""
        with _write_transaction(self._db):
            self._insert_preferences(preferences)

    def preference(self, user_idx: int) -> tuple[str, str, str | None] | None:
        """The cached (prompt, text, category) of a user, or None."""
        return self._db.execute("select prompt, text, category from preferences where user_idx = ?",
                                (user_idx,)).fetchone()

    def condition(self, user_idx: int) -> np.ndarray | None:
        """The cached condition c of a user (float32 [D]), or None (also from an older catalog without the column)."""
        try:
            row = self._db.execute("select condition from preferences where user_idx = ?", (user_idx,)).fetchone()
        except Exception:  # noqa: BLE001  an older catalog without the column
            row = None
        return _condition(row[0]) if row else None

    def conditions_of(self, user_idxs: list[int]) -> dict[int, tuple[np.ndarray | None, str | None]]:
        """{user_idx: (c float32 [D] or None, category)} of the cached users among `user_idxs`."""
        return {u: (_condition(c), cat) for u, c, cat in self._db.execute(
            f"select user_idx, condition, category from preferences "
            f"where user_idx in ({','.join('?' * len(user_idxs))})", user_idxs)}

    def preferences(self) -> list[tuple[int, str | None, str | None, np.ndarray | None]]:
        """Every cached preference by user_idx: (user_idx, text, category, c float32 [D] or None)."""
        return [(u, text, category, _condition(blob)) for u, text, category, blob in self._db.execute(
            "select user_idx, text, category, condition from preferences order by user_idx").fetchall()]

    def preference_users(self) -> set[int]:
        """The users with a cached preference."""
        return {row[0] for row in self._db.execute("select user_idx from preferences")}

    def generated_categories(self, n_users: int) -> list[str | None] | None:
        """The category of each user's cached preference text (None where empty), or None when none is cached."""
        rows = self._db.execute("select user_idx, category from preferences").fetchall()
        if not rows:
            return None
        out: list[str | None] = [None] * n_users
        for user_idx, category in rows:
            out[user_idx] = category or None
        return out

    # ------------------------------------------------------------------ recommendations (cached top lists)

    def _insert_lists(self, model: str, rows: Iterable[dict], batch_size: int = 100) -> None:
        self._db["recommendations"].insert_all(({"model": model, **row} for row in rows),
                                               pk=("model", "user_idx", "rank"), replace=True, batch_size=batch_size)

    def put_recommendations(self, model: str, rows: Iterable[dict]) -> None:
        """Cache ranked lists in one transaction: dicts with user_idx, rank, item_idx, cosine, pi_bonus, score."""
        with _write_transaction(self._db):
            self._insert_lists(model, rows, batch_size=5000)

    def replace_deftrec_results(self, preferences: list, rows: Iterable[dict]) -> None:
        """Replace the cached preference and DeftRec list of each user of `preferences` in one short transaction:
        their preferences are put, their old lists deleted and `rows` (as put_recommendations') inserted."""
        users = [p.user_idx for p in preferences]
        with _write_transaction(self._db):
            self._insert_preferences(preferences)
            marks = ",".join("?" * len(users))
            self._db.execute(f"delete from recommendations where model = 'deftrec' and user_idx in ({marks})", users)
            self._insert_lists("deftrec", rows)

    def forget_deftrec_results(self, user_idxs: list[int]) -> None:
        """Drop the cached DeftRec lists and preferences of these users, in one transaction."""
        with _write_transaction(self._db):
            for start in range(0, len(user_idxs), 900):
                chunk = user_idxs[start:start + 900]
                marks = ",".join("?" * len(chunk))
                self._db.execute(f"delete from recommendations where model = 'deftrec' and user_idx in ({marks})",
                                 chunk)
                self._db.execute(f"delete from preferences where user_idx in ({marks})", chunk)

    def list_length(self, model: str) -> int:
        """The longest cached list of `model` (its largest rank), 0 when none is cached."""
        return self._db.execute("select coalesce(max(rank), 0) from recommendations where model = ?",
                                (model,)).fetchone()[0]

    def cached_users(self, k: int, model: str = "deftrec") -> set[int]:
        """Users whose list of `model` holds at least k items and whose preference text is cached."""
        return {row[0] for row in self._db.execute(
            "select r.user_idx from recommendations r join preferences p on p.user_idx = r.user_idx "
            "where r.model = ? group by r.user_idx having count(*) >= ?", (model, k))}

    def recommendations(self, user_idx: int, model: str = "deftrec") -> list[tuple]:
        """The user's cached list of `model` by rank: (rank, item_idx, cosine, pi_bonus, score)."""
        return self._db.execute("select rank, item_idx, cosine, pi_bonus, score from recommendations "
                                "where model = ? and user_idx = ? order by rank", (model, user_idx)).fetchall()

    def test_ranks(self, model: str = "deftrec") -> dict[int, int]:
        """{user_idx: rank} of each user whose test item is in the cached list of `model`."""
        return {row[0]: row[1] for row in self._db.execute(
            "select r.user_idx, r.rank from recommendations r join users u on u.user_idx = r.user_idx "
            "where r.model = ? and r.item_idx = u.test_item_idx", (model,))}

    def test_hits(self, model: str, k: int) -> np.ndarray | None:
        """Per user (by user_idx), whether the test item is in the stored top-k of `model`, or None when the
        catalog stores no lists of that model or stores fewer than k per user."""
        depth = self.list_length(model)
        if not depth or depth < k:
            return None
        rows = self._db.execute("select u.user_idx, coalesce(max(r.item_idx = u.test_item_idx), 0) from users u "
                                "left join recommendations r on r.user_idx = u.user_idx and r.model = ? "
                                "and r.rank <= ? group by u.user_idx order by u.user_idx", (model, k)).fetchall()
        return np.array([bool(hit) for _, hit in rows])

    def top_lists(self, model: str, k: int, n_users: int) -> np.ndarray | None:
        """The stored top-k of `model` as item_idx [n_users, k] (-1 where a list is shorter), or None when the
        catalog stores no lists of that model or stores fewer than k per user."""
        depth = self.list_length(model)
        if not depth or depth < k:
            return None
        lists = np.full((n_users, k), -1, np.int64)  # [U,k]
        for user_idx, rank, item_idx in self._db.execute(
                "select user_idx, rank, item_idx from recommendations where model = ? and rank <= ?", (model, k)):
            lists[user_idx, rank - 1] = item_idx
        return lists

    _EXPORT_COLUMNS = ("select u.user_id, r.rank, i.item_id, i.title, i.category, r.cosine, r.pi_bonus, r.score ")

    def export_rows(self, k: int, user_idxs: Iterable[int] | None = None, model: str = "deftrec") -> Iterator[tuple]:
        """The cached lists of `model`, ranks 1…k, by user_idx then rank, as export rows (user_id, rank, item_id,
        title, category, cosine, pi_bonus, score): every user's, or those of `user_idxs` (the last use of an open
        catalog: their temp table stays in an open transaction). The query runs now; rows are fetched as the
        iterator is read."""
        if user_idxs is None:
            return self._db.execute(
                self._EXPORT_COLUMNS
                + "from recommendations r join users u on u.user_idx = r.user_idx "
                  "join items i on i.item_idx = r.item_idx "
                  "where r.model = ? and r.rank <= ? order by r.user_idx, r.rank", (model, k))
        self._db.execute("create temp table wanted (user_idx integer primary key)")
        self._db.conn.executemany("insert into wanted values (?)", ((u,) for u in user_idxs))
        return self._db.execute(
            self._EXPORT_COLUMNS
            + "from wanted w join recommendations r on r.user_idx = w.user_idx and r.model = ? "
              "join users u on u.user_idx = r.user_idx join items i on i.item_idx = r.item_idx "
              "where r.rank <= ? order by r.user_idx, r.rank", (model, k))

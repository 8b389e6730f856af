"""The evaluation protocol of docs/architecture.md §2: implicit feedback, earliest duplicate kept, iterative k-core,
per-user order by timestamp (ties in source-row order), last = test, second-to-last = validation."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from data.dataset import RawDataset
from data.errors import DataError

PROTOCOL = ("implicit feedback; earliest duplicate kept; iterative {k}-core; per-user timestamp order "
            "(ties: source row order{shuffle}); leave-one-out: last = test, second-to-last = validation; "
            "full ranking over all {n_items} items, train items masked (and the validation item for test); "
            "HR@K, NDCG@K, K in {{10, 20}}")


@dataclass(frozen=True)
class Stats:
    """The paper's Table-1 statistics."""

    users: int
    items: int
    interactions: int

    @property
    def density_percent(self) -> float:
        return 100.0 * self.interactions / max(1, self.users * self.items)


@dataclass
class Split:
    """Users and items re-indexed 0..n-1 with the leave-one-out split.

    `interactions` holds one row per kept interaction: user_idx, item_idx, timestamp, position (0-based order in
    the user's history) and split ('train' | 'valid' | 'test').
    """

    name: str
    user_ids: np.ndarray  # [n_users] dataset ids (str)
    items: pd.DataFrame  # item_idx-ordered: item_id, title, category, popularity (train count)
    interactions: pd.DataFrame
    valid_item: np.ndarray  # [n_users] item_idx
    test_item: np.ndarray  # [n_users] item_idx
    before: Stats
    after: Stats
    protocol: str
    checksum: str
    notes: list[str] = field(default_factory=list)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.items)

    def train_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """(user_idx, item_idx) arrays of the train interactions, unique pairs."""
        train = self.interactions[self.interactions["split"] == "train"]
        pairs = train[["user_idx", "item_idx"]].drop_duplicates()
        return pairs["user_idx"].to_numpy(np.int64), pairs["item_idx"].to_numpy(np.int64)

    def train_histories(self) -> list[np.ndarray]:
        """Per user, the train item_idx sequence in history order (repeats kept)."""
        train = self.interactions[self.interactions["split"] == "train"].sort_values(["user_idx", "position"])
        grouped = train.groupby("user_idx", sort=True)["item_idx"].apply(lambda s: s.to_numpy(np.int64))
        histories = [np.empty(0, np.int64)] * self.n_users
        for user_idx, seq in grouped.items():
            histories[int(user_idx)] = seq
        return histories


def stats_of(interactions: pd.DataFrame) -> Stats:
    return Stats(users=int(interactions["user_id"].nunique()), items=int(interactions["item_id"].nunique()),
                 interactions=len(interactions))


def dedupe_earliest(interactions: pd.DataFrame) -> pd.DataFrame:
    """Keep the earliest (then first in source order) record of each (user, item) pair; keep source order."""
    df = interactions.assign(_row=np.arange(len(interactions)))
    ordered = df.sort_values(["timestamp", "_row"], kind="stable", na_position="last")
    kept = ordered.drop_duplicates(["user_id", "item_id"], keep="first")
    return kept.sort_values("_row", kind="stable").drop(columns="_row").reset_index(drop=True)


def k_core(interactions: pd.DataFrame, k: int) -> pd.DataFrame:
    """Iteratively drop users and items with fewer than k interactions until none is left."""
    df = interactions
    while True:
        user_counts = df["user_id"].map(df["user_id"].value_counts())
        item_counts = df["item_id"].map(df["item_id"].value_counts())
        keep = (user_counts >= k) & (item_counts >= k)
        if bool(keep.all()):
            return df.reset_index(drop=True)
        df = df[keep]


def order_histories(interactions: pd.DataFrame, *, has_timestamps: bool, seed: int) -> pd.DataFrame:
    """Sort by user then time, ties in source-row order; without timestamps a seeded shuffle per user."""
    df = interactions.assign(_row=np.arange(len(interactions)))
    if has_timestamps:
        key = df["timestamp"].to_numpy()
    else:
        key = np.random.default_rng(seed).permutation(len(df))
    df = df.assign(_key=key)
    df = df.sort_values(["user_id", "_key", "_row"], kind="stable")
    df["position"] = df.groupby("user_id", sort=False).cumcount()
    return df.drop(columns=["_key", "_row"]).reset_index(drop=True)


def checksum_of(raw: RawDataset) -> str:
    """sha256 over the normalized interactions and items, independent of where the files lie."""
    digest = hashlib.sha256()
    for frame in (raw.interactions[["user_id", "item_id", "timestamp"]], raw.items[["item_id", "title", "category"]]):
        digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def prepare(raw: RawDataset, *, min_count: int = 5, seed: int = 0) -> Split:
    """Apply the protocol to a loaded dataset and return the indexed split."""
    if len(raw.interactions) == 0:
        raise DataError("the dataset has no interactions", path=raw.source)
    before = stats_of(raw.interactions)
    checksum = checksum_of(raw)
    if raw.predefined_split is not None:
        if len(raw.predefined_split) != len(raw.interactions):
            raise DataError("the predefined split does not cover every interaction", path=raw.source)
        df = raw.interactions.assign(split=raw.predefined_split.to_numpy())
        df["position"] = df.groupby("user_id", sort=False).cumcount()
        protocol_text = ("the dataset's own split (test = last of test.txt, validation = last of train.txt); "
                         "full ranking over all {n_items} items, train items masked (and the validation item "
                         "for test); HR@K, NDCG@K, K in {{10, 20}}")
    else:
        df = dedupe_earliest(raw.interactions)
        df = k_core(df, min_count)
        if len(df) == 0:
            raise DataError(f"{min_count}-core filtering leaves no interactions ({before.interactions} before)",
                            path=raw.source, hint="use a larger dataset or a smaller --min-count")
        df = order_histories(df, has_timestamps=raw.has_timestamps, seed=seed)
        last = df.groupby("user_id", sort=False)["position"].transform("max")
        df["split"] = np.where(df["position"] == last, "test",
                               np.where(df["position"] == last - 1, "valid", "train"))
        protocol_text = PROTOCOL.replace("{k}", str(min_count)).replace(
            "{shuffle}", "" if raw.has_timestamps else "; no timestamps: seeded shuffle")

    user_ids = np.array(sorted(df["user_id"].unique(), key=_natural_key), dtype=object)
    item_ids = np.array(sorted(df["item_id"].unique(), key=_natural_key), dtype=object)
    user_index = pd.Series(np.arange(len(user_ids)), index=user_ids)
    item_index = pd.Series(np.arange(len(item_ids)), index=item_ids)
    out = pd.DataFrame({
        "user_idx": user_index.loc[df["user_id"].to_numpy()].to_numpy(np.int64),
        "item_idx": item_index.loc[df["item_id"].to_numpy()].to_numpy(np.int64),
        "timestamp": pd.array(df["timestamp"], dtype="Int64"),
        "position": df["position"].to_numpy(np.int64),
        "split": df["split"].to_numpy(),
    }).sort_values(["user_idx", "position"], kind="stable").reset_index(drop=True)

    valid_item = _one_per_user(out, "valid", len(user_ids), raw.source)
    test_item = _one_per_user(out, "test", len(user_ids), raw.source)

    items = raw.items.drop_duplicates("item_id", keep="first").set_index("item_id")
    catalog = pd.DataFrame({"item_id": item_ids})
    catalog["title"] = items["title"].reindex(item_ids).fillna("").to_numpy()
    catalog["category"] = items["category"].reindex(item_ids).fillna("").to_numpy()
    train = out[out["split"] == "train"]
    catalog["popularity"] = np.bincount(train["item_idx"].to_numpy(), minlength=len(item_ids)).astype(np.int64)
    after = Stats(users=len(user_ids), items=len(item_ids), interactions=len(out))
    return Split(name=raw.name, user_ids=user_ids, items=catalog, interactions=out, valid_item=valid_item,
                 test_item=test_item, before=before, after=after,
                 protocol=protocol_text.format(n_items=len(item_ids)), checksum=checksum, notes=list(raw.notes))


def _one_per_user(df: pd.DataFrame, split: str, n_users: int, source: str) -> np.ndarray:
    rows = df[df["split"] == split]
    if rows["user_idx"].nunique() != n_users or len(rows) != n_users:
        raise DataError(f"every user needs exactly one {split} interaction", path=source,
                        hint="each user needs at least 3 interactions: use --min-count 3 or more")
    out = np.empty(n_users, np.int64)
    out[rows["user_idx"].to_numpy()] = rows["item_idx"].to_numpy()
    return out


def _natural_key(value: str) -> tuple:
    """Numeric ids sort numerically, others lexically, so ML-100K users come out as 1, 2, ..., 943."""
    text = str(value)
    return (0, int(text), "") if text.isdigit() else (1, 0, text)

"""The protocol of docs/architecture.md §2 on hand-made cases and on the embedded ML-100K."""

import numpy as np
import pandas as pd
import pytest

from data.dataset import RawDataset
from data.errors import DataError
from data.protocol import dedupe_earliest, k_core, prepare


def raw(rows, items=None, has_timestamps=True):
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    if items is None:
        items = pd.DataFrame({"item_id": sorted(inter["item_id"].unique()), "title": "t", "category": "c"})
    return RawDataset(name="hand", interactions=inter, items=items, has_timestamps=has_timestamps)


def test_dedupe_keeps_earliest_and_source_order():
    df = pd.DataFrame([("u", "a", 5), ("u", "b", 1), ("u", "a", 2), ("v", "a", 3), ("u", "a", 2)],
                      columns=["user_id", "item_id", "timestamp"])
    out = dedupe_earliest(df)
    assert out.values.tolist() == [["u", "b", 1], ["u", "a", 2], ["v", "a", 3]]


def test_k_core_is_iterative():
    # item z has 2 users; removing it drops user c below 2, which then drops item y below 2
    rows = [("a", "x"), ("a", "y"), ("b", "x"), ("b", "y"), ("c", "y"), ("c", "z"), ("d", "z"), ("d", "x")]
    df = pd.DataFrame([(u, i, n) for n, (u, i) in enumerate(rows)], columns=["user_id", "item_id", "timestamp"])
    out = k_core(df, 2)
    assert sorted(out["user_id"].unique()) == ["a", "b", "c", "d"]  # all users have 2, all items >= 2
    out3 = k_core(df, 3)
    assert len(out3) == 0


def test_split_orders_by_time_with_ties_in_row_order():
    rows = [("u", f"i{j}", t) for j, t in enumerate([30, 10, 20, 20, 40])]  # i2 and i3 tie at 20
    split = prepare(raw(rows), min_count=1)
    inter = split.interactions
    order = [split.items.item_id[i] for i in inter.sort_values("position")["item_idx"]]
    assert order == ["i1", "i2", "i3", "i0", "i4"]
    assert split.items.item_id[split.test_item[0]] == "i4"
    assert split.items.item_id[split.valid_item[0]] == "i0"
    assert (inter["split"] == "train").sum() == 3


def test_no_timestamps_uses_a_seeded_shuffle():
    rows = [("u", f"i{j}", pd.NA) for j in range(8)]
    a = prepare(raw(rows, has_timestamps=False), min_count=1, seed=1)
    b = prepare(raw(rows, has_timestamps=False), min_count=1, seed=1)
    c = prepare(raw(rows, has_timestamps=False), min_count=1, seed=2)
    assert a.test_item.tolist() == b.test_item.tolist()
    assert a.interactions["item_idx"].tolist() == b.interactions["item_idx"].tolist()
    assert a.interactions["item_idx"].tolist() != c.interactions["item_idx"].tolist()


def test_empty_after_k_core_is_a_data_error():
    with pytest.raises(DataError, match="5-core"):
        prepare(raw([("u", "a", 1), ("v", "b", 2)]))


def test_ml100k_counts_and_split_invariants():
    from data.movielens import load_movielens_100k
    split = prepare(load_movielens_100k())
    assert (split.before.users, split.before.items, split.before.interactions) == (943, 1682, 100_000)
    assert (split.after.users, split.after.items, split.after.interactions) == (943, 1349, 99_287)
    inter = split.interactions
    per_user = inter.groupby("user_idx")["split"].value_counts().unstack(fill_value=0)
    assert (per_user["test"] == 1).all() and (per_user["valid"] == 1).all()
    # test is the latest interaction of each user
    last = inter.loc[inter.groupby("user_idx")["timestamp"].idxmax()]
    assert (inter.groupby("user_idx")["timestamp"].max().to_numpy()
            == inter[inter.split == "test"].sort_values("user_idx")["timestamp"].to_numpy()).all()
    assert len(last) == 943
    assert split.items.loc[0, "category"] == "Animation|Children's|Comedy"
    assert split.items["popularity"].sum() == (inter.split == "train").sum()
    assert np.all(split.valid_item != split.test_item)

"""Property-based checks (hypothesis): the leave-one-out split's invariants on random interaction tables, and
metrics equal to a brute-force reference and inside [0, 1]."""

import numpy as np
import pandas as pd
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from data.dataset import RawDataset
from data.errors import DataError
from data.protocol import prepare
from engine.model.metrics import metrics_from_ranks
from engine.model.ranking import HistoryIndex, rank_all

interaction = st.tuples(st.integers(0, 11), st.integers(0, 14), st.integers(0, 40))  # user, item, timestamp


def raw_table(rows, with_time: bool) -> RawDataset:
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).astype({"user_id": str, "item_id": str})
    if not with_time:
        frame["timestamp"] = pd.array([pd.NA] * len(frame), dtype="Int64")
    items = pd.DataFrame({"item_id": [str(i) for i in range(15)], "title": [f"t{i}" for i in range(15)],
                          "category": [f"c{i % 3}" for i in range(15)]})
    return RawDataset(name="random", interactions=frame, items=items, source="random.csv", has_timestamps=with_time)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(interaction, min_size=1, max_size=160), st.booleans(), st.integers(1, 4), st.integers(0, 3))
def test_split_invariants(rows, with_time, min_count, seed):
    raw = raw_table(rows, with_time)
    try:
        split = prepare(raw, min_count=max(min_count, 3), seed=seed)
    except DataError as error:  # the only refusal allowed: a core that leaves nothing
        assert "leaves no interactions" in str(error)
        return
    inter = split.interactions
    per_user = inter.groupby("user_idx")["split"].value_counts().unstack(fill_value=0)
    assert (per_user["test"] == 1).all() and (per_user["valid"] == 1).all()  # exactly one each
    assert len(per_user) == split.n_users
    pairs = set(zip(inter["user_idx"], inter["item_idx"]))
    assert len(pairs) == len(inter)  # earliest duplicate kept: a (user, item) pair occurs once
    for user, group in inter.groupby("user_idx"):
        group = group.sort_values("position")
        assert group["split"].iloc[-1] == "test" and group["split"].iloc[-2] == "valid"  # order respected
        train_items = set(group.loc[group["split"] == "train", "item_idx"])
        assert split.test_item[user] not in train_items and split.valid_item[user] not in train_items  # no leakage
        if with_time:
            times = group["timestamp"].astype("int64").to_numpy()
            assert (np.diff(times) >= 0).all()  # histories in time order
    core = max(min_count, 3)
    assert (inter.groupby("user_idx").size() >= core).all() and (inter.groupby("item_idx").size() >= core).all()


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 9), st.integers(2, 30), st.integers(0, 10_000), st.booleans())
def test_metrics_equal_brute_force(n_users, n_items, seed, coarse):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 4, (n_users, n_items)).astype(np.float32) if coarse else \
        rng.standard_normal((n_users, n_items)).astype(np.float32)  # coarse: many ties
    targets = rng.integers(0, n_items, n_users)
    history_items = [rng.choice(np.setdiff1d(np.arange(n_items), [t]), size=rng.integers(0, n_items - 1),
                                replace=False) for t in targets]
    history = HistoryIndex.build(n_users, np.repeat(np.arange(n_users), [len(h) for h in history_items]),
                                 np.concatenate(history_items).astype(np.int64) if n_users else np.zeros(0, np.int64))
    ranks = rank_all(lambda users: torch.as_tensor(scores[users]), n_users, n_items, history, targets)
    metrics = metrics_from_ranks(ranks)
    reference = {}
    for k in (10, 20):
        hits, gains = [], []
        for u in range(n_users):
            allowed = [j for j in range(n_items) if j not in set(history_items[u].tolist())]
            order = sorted(allowed, key=lambda j: (-scores[u, j], j))  # ties: lower index first
            position = order.index(targets[u])
            hits.append(position < k)
            gains.append(1 / np.log2(position + 2) if position < k else 0.0)
        reference[f"HR@{k}"], reference[f"NDCG@{k}"] = float(np.mean(hits)), float(np.mean(gains))
    assert metrics == reference or all(abs(metrics[m] - reference[m]) < 1e-12 for m in reference)
    assert all(0.0 <= v <= 1.0 for v in metrics.values())

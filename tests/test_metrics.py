"""Metrics and ranking against hand-computed values and brute force."""

import math

import numpy as np
import torch

from engine.model.metrics import hit_ratio, metrics_from_ranks, ndcg
from engine.model.ranking import MISS, HistoryIndex, items_ahead, rank_all, target_ranks, top_k
from engine.services.session import Explanation


def test_hr_and_ndcg_hand_computed():
    ranks = np.array([0, 3, 9, 10, 19, 25, MISS])  # 0-based
    assert hit_ratio(ranks, 10) == 3 / 7
    assert hit_ratio(ranks, 20) == 5 / 7
    expected10 = (1 / math.log2(2) + 1 / math.log2(5) + 1 / math.log2(11)) / 7
    assert math.isclose(ndcg(ranks, 10), expected10)
    expected20 = expected10 + (1 / math.log2(12) + 1 / math.log2(21)) / 7
    assert math.isclose(ndcg(ranks, 20), expected20)
    m = metrics_from_ranks(ranks)
    assert set(m) == {"HR@10", "NDCG@10", "HR@20", "NDCG@20"}


def test_target_rank_masks_and_breaks_ties_by_index():
    scores = torch.tensor([[0.5, 0.9, 0.5, 0.1, 0.5],
                           [1.0, 0.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[False, True, False, False, False],
                         [False, False, False, False, True]])
    # row 0: item 1 masked; target 2 ties with items 0 and 4 → only item 0 (lower index) ahead → rank 1
    # row 1: target 4 is masked → MISS
    ranks = target_ranks(scores, torch.tensor([2, 4]), mask)
    assert ranks.tolist() == [1, MISS]


def test_top_k_matches_brute_force_and_rank():
    rng = np.random.default_rng(0)
    scores = torch.tensor(rng.integers(0, 5, size=(8, 30)).astype(np.float32))  # many ties
    mask = torch.tensor(rng.random((8, 30)) < 0.2)
    items, values = top_k(scores, mask, 10)
    for row in range(8):
        candidates = [(-float(scores[row, j]), j) for j in range(30) if not mask[row, j]]
        brute = [j for _, j in sorted(candidates)][:10]
        assert items[row].tolist() == brute
        # the rank of each listed item equals its position in the list
        for pos, item in enumerate(brute):
            assert target_ranks(scores[row:row + 1], torch.tensor([item]), mask[row:row + 1])[0] == pos


def test_trajectory_ranks_use_the_same_tie_break_in_double_precision():
    """Explanation.item_ranks (the explorer's per-step ranks) = items_ahead + 1 = the former per-row formula."""
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 4, size=(6, 25)).astype(np.float64)  # many ties
    scores[:, [3, 7]] = -np.inf  # masked history items
    scores[0, 5] = 1 + 1e-12  # a difference float32 would round away
    explanation = Explanation(0, "", "", None, [], "live", step_scores=scores)
    for item in (0, 3, 5, 6, 24):
        formula = [int((row > row[item]).sum() + (row[:item] == row[item]).sum() + 1) for row in scores]
        assert explanation.item_ranks(item) == formula
        assert (items_ahead(torch.from_numpy(scores), torch.full((6,), item)) + 1).tolist() == formula


def test_history_index_mask_and_extra():
    history = HistoryIndex.build(3, np.array([0, 0, 2, 0]), np.array([1, 3, 0, 1]))
    assert history.items_of(0).tolist() == [1, 3]
    assert history.items_of(1).tolist() == []
    extended = history.with_extra(np.array([2, 2, 4]))
    mask = extended.mask(np.array([0, 1, 2]), 5)
    assert mask.tolist() == [[False, True, True, True, False],
                             [False, False, True, False, False],
                             [True, False, False, False, True]]


def test_rank_all_batches_equal_one_batch():
    rng = np.random.default_rng(1)
    users, items = rng.normal(size=(50, 8)), rng.normal(size=(20, 8))
    scorer = lambda batch: torch.tensor(users[batch] @ items.T, dtype=torch.float32)
    history = HistoryIndex.build(50, rng.integers(0, 50, 100), rng.integers(0, 20, 100))
    targets = rng.integers(0, 20, 50)
    assert (rank_all(scorer, 50, 20, history, targets, batch_size=7)
            == rank_all(scorer, 50, 20, history, targets, batch_size=64)).all()

"""Hybrid retriever (Eq. 14) against brute force; category extraction and π."""

import numpy as np
import pytest
import torch

from engine.model.ranking import HistoryIndex, target_ranks, top_k
from engine.model.retriever import HybridRetriever, Recommendation, extract_category, pi_bonus

GENRES = ["Action", "Comedy", "Drama", "Action|Sci-Fi", "Comedy|Romance", "Horror"]


class Recorder:
    """Wraps a FAISS index and records the pool sizes searched for."""

    def __init__(self, index):
        self.index, self.pools = index, []

    def search(self, x, k):
        self.pools.append(k)
        return self.index.search(x, k)


def unit(x):
    x64 = x.astype(np.float64)
    return (x64 / np.maximum(np.linalg.norm(x64, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def match_matrix(extracted, categories, match):
    """Bool [B, n]: brute-force category match, written independently of the module."""
    out = np.zeros((len(extracted), len(categories)), bool)
    for i, e in enumerate(extracted):
        if not e:
            continue
        for j, c in enumerate(categories):
            if match == "exact":
                out[i, j] = c.lower() == e.lower()
            else:
                out[i, j] = bool({p.lower() for p in e.split("|")} & {p.lower() for p in c.split("|")})
    return out


def brute_force(items, cats, queries, history, users, extracted, k, pi, match):
    """[(item, cosine, score)] per row: s = float32(cos·(1+π)), masked, sorted by (-s, item)."""
    cos = unit(queries).astype(np.float64) @ unit(items).astype(np.float64).T  # [B, n]
    boost = np.where(match_matrix(extracted, cats, match), 1.0 + pi, 1.0)
    s = (cos * boost).astype(np.float32)
    out = []
    for row, u in enumerate(users):
        hidden = set(history.items_of(u).tolist()) if history is not None else set()
        keep = [j for j in range(len(cats)) if j not in hidden]
        keep.sort(key=lambda j: (-s[row, j], j))
        out.append([(j, cos[row, j], float(s[row, j])) for j in keep[:k]])
    return out


def random_history(rng, n_users, n_items, max_len):
    users = np.repeat(np.arange(n_users), rng.integers(0, max_len + 1, n_users))
    return HistoryIndex.build(n_users, users, rng.integers(0, n_items, len(users)))


def assert_matches(recs, expected):
    for got, want in zip(recs, expected, strict=True):
        assert [r.item_idx for r in got] == [w[0] for w in want]
        assert [r.rank for r in got] == list(range(1, len(want) + 1))
        for r, (_, cos, score) in zip(got, want):
            assert r.score == pytest.approx(score, abs=1e-6)
            assert r.cosine == pytest.approx(cos, abs=1e-6)
            assert r.score == pytest.approx(r.cosine * (1 + r.pi_bonus), rel=1e-6, abs=1e-7)


@pytest.fixture(scope="module")
def world():
    rng = np.random.default_rng(7)
    n_items, n_users, d = 400, 120, 12
    items = rng.normal(size=(n_items, d)).astype(np.float32)
    items[50] = items[10]  # exact duplicates: a tie broken by lower index
    items[51] = 3 * items[10]
    cats = [GENRES[i] for i in rng.integers(0, len(GENRES), n_items)]
    queries = rng.normal(size=(n_users, d)).astype(np.float32)
    queries[::5] = -items[rng.integers(0, n_items, len(queries[::5]))]  # many negative cosines
    queries[3] = 0.0  # all cosines 0: the whole order is the index order
    queries[7] = items[10]
    history = random_history(rng, n_users, n_items, 40)
    choices = ["Action", "comedy", "ACTION|sci-fi", None, "", "Western", "Romance", "Sci-Fi"]
    extracted = [choices[i] for i in rng.integers(0, len(choices), n_users)]
    return items, cats, queries, history, np.arange(n_users), extracted


@pytest.mark.parametrize("k", [1, 10, 20])
@pytest.mark.parametrize("match", ["exact", "overlap"])
@pytest.mark.parametrize("pi", [0.1, 0.6])
def test_search_equals_brute_force(world, k, match, pi):
    items, cats, queries, history, users, extracted = world
    retriever = HybridRetriever(items, np.array(cats, dtype=object), device="cpu", margin=4)
    recs = retriever.search(queries, history, users, extracted, k, pi=pi, match=match)
    assert_matches(recs, brute_force(items, cats, queries, history, users, extracted, k, pi, match))
    for row, got in enumerate(recs):
        assert not {r.item_idx for r in got} & set(history.items_of(row).tolist())
        assert all(r.pi_bonus in (0.0, pi) for r in got)
    hidden = set(history.items_of(3).tolist())
    assert [r.item_idx for r in recs[3]] == [j for j in range(len(items)) if j not in hidden][:k]  # zero query
    assert all(r.cosine == 0.0 and r.score == 0.0 for r in recs[3])


def test_scores_dense_agrees_with_search(world):
    items, cats, queries, history, users, extracted = world
    retriever = HybridRetriever(items, cats, device="cpu")
    recs = retriever.search(queries, history, users, extracted, 20, pi=0.3, match="overlap")
    dense = retriever.scores_dense(queries, extracted, pi=0.3, match="overlap")  # [B, n]
    assert dense.shape == (len(users), len(items)) and dense.dtype == torch.float32
    mask = history.mask(users, len(items))
    order, values = top_k(dense, mask, 20)
    assert order.tolist() == [[r.item_idx for r in row] for row in recs]
    assert values.tolist() == [[r.score for r in row] for row in recs]
    for rank in (1, 7, 20):
        targets = torch.tensor([row[rank - 1].item_idx for row in recs])
        assert (target_ranks(dense, targets, mask) == rank - 1).all()
    cos = retriever.cosines(queries)
    assert torch.equal(cos, retriever.scores_dense(queries, [None] * len(users)))
    assert np.allclose(cos.numpy(), unit(queries) @ unit(items).T, atol=1e-6)


def test_pool_expansion_boosted_items_just_outside():
    """40 unboosted items have the best cosines; 200 boosted ones just below overtake them after the π re-rank."""
    rng = np.random.default_rng(1)
    d, n_plain, n_boost, n_far = 8, 40, 200, 160
    cos = np.concatenate([rng.uniform(0.90, 0.95, n_plain), rng.uniform(0.84, 0.87, n_boost),
                          rng.uniform(-0.5, 0.5, n_far)])
    perm = rng.permutation(len(cos))  # boosted items at arbitrary indices
    cos = cos[perm]
    side = rng.normal(size=(len(cos), d - 1))
    side /= np.linalg.norm(side, axis=1, keepdims=True)
    items = np.concatenate([cos[:, None], np.sqrt(1 - cos[:, None] ** 2) * side], axis=1).astype(np.float32)
    cats = np.array(["Drama"] * n_plain + ["Action"] * n_boost + ["Action"] * n_far, dtype=object)[perm]
    queries = np.tile(np.eye(d, dtype=np.float32)[:1], (3, 1))
    history = HistoryIndex.build(3, np.array([1, 1]), np.flatnonzero(cats == "Action")[:2])
    extracted = ["Action", "Action", None]
    retriever = HybridRetriever(items, cats, device="cpu", margin=4)
    retriever.index = recorder = Recorder(retriever.index)
    for k in (1, 10, 20):
        recs = retriever.search(queries, history, np.arange(3), extracted, k, pi=0.1)
        assert_matches(recs, brute_force(items, list(cats), queries, history, np.arange(3), extracted, k, 0.1,
                                         "exact"))
        assert all(cats[r.item_idx] == "Action" and r.pi_bonus == 0.1 for r in recs[0])
    assert max(recorder.pools) > n_plain  # the pool had to grow past all the unboosted items


def test_negative_cosines_bound_uses_unboosted_ceiling():
    """With c < 0, (1+π)·c < c: unpooled unboosted items outrank pooled boosted ones; a (1+π)·c bound would stop early."""
    rng = np.random.default_rng(2)
    d, n_boost, n_plain = 6, 30, 60
    cos = np.concatenate([np.linspace(-0.100, -0.105, n_boost), np.linspace(-0.106, -0.114, n_plain)])
    side = rng.normal(size=(len(cos), d - 1))
    side /= np.linalg.norm(side, axis=1, keepdims=True)
    items = np.concatenate([cos[:, None], np.sqrt(1 - cos[:, None] ** 2) * side], axis=1).astype(np.float32)
    cats = ["Action"] * n_boost + ["Drama"] * n_plain
    queries = np.eye(d, dtype=np.float32)[:1]
    retriever = HybridRetriever(items, cats, device="cpu", margin=2)
    retriever.index = recorder = Recorder(retriever.index)
    for k in (1, 10, 20):
        recs = retriever.search(queries, None, np.arange(1), ["Action"], k, pi=0.1)
        assert_matches(recs, brute_force(items, cats, queries, None, [0], ["Action"], k, 0.1, "exact"))
        assert all(cats[r.item_idx] == "Drama" for r in recs[0])  # s ≈ -0.106.. beats -0.11..
    assert max(recorder.pools) > k + 2


class Adversarial:
    """A legal but unhelpful FAISS: ties resolved toward higher ids, distances reported `lower_by` too low."""

    def __init__(self, index, lower_by=0.0):
        self.index, self.lower_by = index, lower_by

    def search(self, x, k):
        found, labels = self.index.search(x, self.index.ntotal)
        order = np.lexsort((-labels, -found), axis=1)[:, :k]
        return np.take_along_axis(found, order, 1) - np.float32(self.lower_by), np.take_along_axis(labels, order, 1)


def on_axis(first, d):
    """Unit-ish vectors whose cosine with e1 is `first` exactly (up to float32 normalization)."""
    first = np.asarray(first, np.float64)
    out = np.zeros((len(first), d))
    out[:, 0], out[:, 1] = first, np.sqrt(1 - first ** 2)
    return out.astype(np.float32)


def test_faiss_rounding_error_is_covered_by_tol():
    """FAISS may under-report the pool's last cosine by its float32 error; the bound must still hold."""
    d = 30
    err = (d + 2) * 2.0 ** -24  # a FAISS error within the documented bound
    rng = np.random.default_rng(5)
    cos = np.concatenate([[0.5499988, 0.52, 0.5, 0.5 - 3e-7], rng.uniform(-0.3, 0.3, 20)])
    items = on_axis(cos, d)
    cats = ["Drama", "Drama", "Drama", "Action"] + ["Drama"] * 20
    query = np.eye(d, dtype=np.float32)[:1]
    exact = unit(items)[:, 0].astype(np.float64)
    # premise: item 3 sits just outside a pool of 3 and overtakes item 0 only with π; the reported ceiling would hide it
    assert exact[3] < exact[2] and np.float32(exact[3] * 1.1) > np.float32(exact[0]) > (exact[2] - err) * 1.1
    retriever = HybridRetriever(items, cats, device="cpu", margin=2)
    retriever.index = Adversarial(retriever.index, lower_by=err)
    recs = retriever.search(query, None, np.arange(1), ["Action"], 1, pi=0.1)
    assert [r.item_idx for r in recs[0]] == [3]
    assert_matches(recs, brute_force(items, cats, query, None, [0], ["Action"], 1, 0.1, "exact"))


def test_ties_at_the_pool_edge_go_to_lower_index():
    """When FAISS cuts a tie group keeping high ids, the pool grows (strict bound) so lower ids still win."""
    d = 8
    rng = np.random.default_rng(6)
    items = np.concatenate([np.tile(np.eye(d, dtype=np.float32)[:1], (30, 1)), on_axis(rng.uniform(0, 0.5, 20), d)])
    query = np.eye(d, dtype=np.float32)[:1]
    for tol in (0.0, None):
        retriever = HybridRetriever(items, ["A"] * 50, device="cpu", margin=2, tol=tol)
        retriever.index = Adversarial(retriever.index)
        recs = retriever.search(query, None, np.arange(1), ["A"], 5, pi=0.1)
        assert [r.item_idx for r in recs[0]] == [0, 1, 2, 3, 4]
        assert all(r.score == np.float32(1.1) for r in recs[0])


def test_small_catalog_and_everything_masked():
    items = np.random.default_rng(3).normal(size=(5, 4)).astype(np.float32)
    retriever = HybridRetriever(items, ["A", "B", "A", "C", "B"], device="cpu")
    history = HistoryIndex.build(2, np.array([0, 0, 1, 1, 1, 1, 1]), np.array([1, 3, 0, 1, 2, 3, 4]))
    recs = retriever.search(items[:2], history, np.arange(2), ["a", "b"], 20)
    assert sorted(r.item_idx for r in recs[0]) == [0, 2, 4] and recs[1] == []
    assert recs[0][0] == Recommendation(item_idx=0, cosine=recs[0][0].cosine, pi_bonus=0.1,
                                        score=recs[0][0].score, rank=1)


def test_save_load_round_trip(world, tmp_path):
    items, cats, queries, history, users, extracted = world
    retriever = HybridRetriever(items, cats, device="cpu")
    retriever.save(str(tmp_path / "items.faiss"))
    loaded = HybridRetriever.load(str(tmp_path / "items.faiss"), cats, device="cpu")
    assert loaded.n_items == len(items) and loaded.dim == items.shape[1]
    for k in (1, 20):
        assert loaded.search(queries, history, users, extracted, k) == \
            retriever.search(queries, history, users, extracted, k)
    assert torch.equal(loaded.scores_dense(queries, extracted), retriever.scores_dense(queries, extracted))


def test_torch_queries_and_bad_input():
    items = np.random.default_rng(4).normal(size=(30, 5)).astype(np.float32)
    retriever = HybridRetriever(items, ["A"] * 30, device="cpu")
    q = torch.randn(4, 5)
    assert retriever.search(q, None, np.arange(4), [None] * 4, 3) == \
        retriever.search(q.numpy(), None, np.arange(4), [None] * 4, 3)
    with pytest.raises(ValueError):
        retriever.search(np.full((1, 5), np.nan, np.float32), None, np.arange(1), [None], 3)
    with pytest.raises(ValueError):
        retriever.search(q, None, np.arange(4), [None] * 3, 3)
    with pytest.raises(ValueError):
        retriever.scores_dense(q, [None] * 4, match="fuzzy")


def test_extract_category():
    cats = ["Action", "Action|Sci-Fi", "Sci-Fi", "Drama", "", "C++", "Film-Noir"]
    assert extract_category("You will love ACTION|sci-fi movies.", cats) == "Action|Sci-Fi"
    assert extract_category("Mostly action, some drama.", cats) == "Action"
    assert extract_category("A Reaction shot.", cats) is None  # word boundary
    assert extract_category("Actions speak.", cats) is None
    assert extract_category("Dramatic action!", cats) == "Action"
    assert extract_category("Books on c++ and film-noir", cats) == "Film-Noir"  # longest of two
    assert extract_category("Books on C++, mostly", cats) == "C++"  # non-word end needs no boundary
    assert extract_category("nothing here", cats) is None
    assert extract_category("", cats) is None and extract_category(None, cats) is None
    assert extract_category("anything", ["", " "]) is None


def test_pi_bonus_exact_and_overlap():
    cats = np.array(["Action", "action|Sci-Fi", "Comedy", "", "Sci-Fi|Drama"], dtype=object)
    exact = pi_bonus("ACTION", cats)
    assert exact.dtype == np.float32 and exact.tolist() == pytest.approx([0.1, 0, 0, 0, 0])
    assert pi_bonus("Action|sci-fi", cats, pi=0.5).tolist() == [0, 0.5, 0, 0, 0]
    assert pi_bonus("Action", cats, match="overlap").tolist() == pytest.approx([0.1, 0.1, 0, 0, 0])
    assert pi_bonus("Sci-Fi|Horror", cats, match="overlap").tolist() == pytest.approx([0, 0.1, 0, 0, 0.1])
    assert not pi_bonus(None, cats).any() and not pi_bonus("", cats, match="overlap").any()
    assert not pi_bonus("Western", cats, match="overlap").any()
    # 'all': every named part is one of the item's parts
    assert pi_bonus("Sci-Fi", cats, match="all").tolist() == pytest.approx([0, 0.1, 0, 0, 0.1])
    assert pi_bonus("Drama|Sci-Fi", cats, match="all").tolist() == pytest.approx([0, 0, 0, 0, 0.1])
    assert not pi_bonus("Sci-Fi|Horror", cats, match="all").any()
    with pytest.raises(ValueError):
        pi_bonus("Action", cats, match="fuzzy")


def test_extract_parts_names_every_part_in_order():
    from engine.model.retriever import category_parts, extract_parts
    parts = category_parts(["Action|Sci-Fi", "Drama", "Film-Noir|Drama", None, "Office Software|Software"])
    assert parts == ["Action", "Drama", "Film-Noir", "Office Software", "Sci-Fi", "Software"]
    text = "Analysing the purchase history, the user may prefer Drama|Sci-Fi products."
    assert extract_parts(text, parts) == "Drama|Sci-Fi"
    assert extract_parts("likes office software a lot", parts) == "Office Software"  # the inner part is not counted
    assert extract_parts("noir and film", parts) is None and extract_parts(None, parts) is None


def weighted_brute_force(items, cats, queries, history, users, extracted, k, pi, match, alpha):
    """brute_force under the item_norm option: s = float32(cos·((1+π)·‖q_j‖^α)), weights in float64."""
    cos = unit(queries).astype(np.float64) @ unit(items).astype(np.float64).T  # [B, n]
    weight = np.linalg.norm(items.astype(np.float64), axis=1) ** alpha  # [n]
    s = (cos * (np.where(match_matrix(extracted, cats, match), 1.0 + pi, 1.0) * weight)).astype(np.float32)
    out = []
    for row, u in enumerate(users):
        hidden = set(history.items_of(u).tolist()) if history is not None else set()
        keep = sorted((j for j in range(len(cats)) if j not in hidden), key=lambda j: (-s[row, j], j))
        out.append([(j, cos[row, j], float(s[row, j]), weight[j]) for j in keep[:k]])
    return out


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("match", ["exact", "overlap"])
def test_item_norm_search_equals_brute_force(world, alpha, match):
    items, cats, queries, history, users, extracted = world
    items = items * np.random.default_rng(3).uniform(0.05, 4.0, size=(len(items), 1)).astype(np.float32)  # norms vary
    retriever = HybridRetriever(items, cats, device="cpu", margin=2, item_norm=alpha)
    for k in (1, 20):
        recs = retriever.search(queries, history, users, extracted, k, pi=0.3, match=match)
        want = weighted_brute_force(items, cats, queries, history, users, extracted, k, 0.3, match, alpha)
        for got, expected in zip(recs, want, strict=True):
            assert [r.item_idx for r in got] == [w[0] for w in expected]
            assert [r.score for r in got] == pytest.approx([w[2] for w in expected], abs=1e-6)
            assert [r.weight for r in got] == pytest.approx([w[3] for w in expected], rel=1e-12)
            assert all(r.score == pytest.approx(r.cosine * r.weight * (1 + r.pi_bonus), rel=1e-6, abs=1e-7)
                       for r in got)
    dense = retriever.scores_dense(queries, extracted, pi=0.3, match=match)  # [B, n]
    order, values = top_k(dense, history.mask(users, len(items)), 20)
    recs = retriever.search(queries, history, users, extracted, 20, pi=0.3, match=match)
    assert order.tolist() == [[r.item_idx for r in row] for row in recs]
    assert values.tolist() == [[r.score for r in row] for row in recs]


def test_item_norm_candidates_come_by_weighted_score():
    """60 items with the best cosines but tiny norms lose to 5 heavier ones: FAISS searches the weighted vectors, so
    the first pool (k + margin) already holds the 5, where a pool by cosine would hold only near items."""
    query = np.array([[1.0, 0.0, 0.0, 0.0]], np.float32)
    near = np.tile(np.array([1.0, 0.05, 0.0, 0.0], np.float32), (60, 1)) * 0.01  # cos ≈ 0.999, norm 0.01
    far = np.tile(np.array([1.0, 1.0, 0.0, 0.0], np.float32), (5, 1)) * np.arange(1, 6, dtype=np.float32)[:, None]
    rest = np.tile(np.array([0.0, 0.0, 1.0, 0.0], np.float32), (100, 1))  # cos 0
    items = np.concatenate([near, far, rest])  # [165, d]
    retriever = HybridRetriever(items, ["A"] * len(items), device="cpu", margin=1, item_norm=1.0)
    recorder = Recorder(retriever.index)
    retriever.index = recorder
    recs = retriever.search(query, None, np.zeros(1, np.int64), [None], 5)
    assert [r.item_idx for r in recs[0]] == [64, 63, 62, 61, 60]  # the heaviest of the far items first
    assert recorder.pools == [6]  # proven from the first pool
    plain = HybridRetriever(items, ["A"] * len(items), device="cpu", margin=1)
    assert all(r.item_idx < 60 and r.weight == 1.0 for r in plain.search(query, None, np.zeros(1, np.int64), [None], 5)[0])


def test_item_norm_zero_is_eq14_and_bad_values_fail(world):
    items, cats, queries, history, users, extracted = world
    plain = HybridRetriever(items, cats, device="cpu")
    zero = HybridRetriever(items, cats, device="cpu", item_norm=0.0)
    assert zero.weights is None
    assert zero.search(queries, history, users, extracted, 10) == plain.search(queries, history, users, extracted, 10)
    for bad in (-0.5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="item_norm"):
            HybridRetriever(items, cats, device="cpu", item_norm=bad)


def test_item_norm_save_load_and_approximate_copy(world, tmp_path):
    from engine.model.ann import AnnSettings
    from engine.model.retriever import item_weights
    items, cats, queries, history, users, extracted = world
    retriever = HybridRetriever(items, cats, device="cpu", item_norm=0.75)
    retriever.save(str(tmp_path / "items.faiss"))
    loaded = HybridRetriever.load(str(tmp_path / "items.faiss"), cats, device="cpu", weights=item_weights(items, 0.75))
    truth = retriever.search(queries, history, users, extracted, 10)
    assert loaded.search(queries, history, users, extracted, 10) == truth
    assert torch.equal(loaded.scores_dense(queries, extracted), retriever.scores_dense(queries, extracted))
    plain = HybridRetriever.load(str(tmp_path / "items.faiss"), cats, device="cpu")  # the file holds unit vectors
    assert plain.search(queries, history, users, extracted, 10) == \
        HybridRetriever(items, cats, device="cpu").search(queries, history, users, extracted, 10)
    full = retriever.with_ann(AnnSettings(kind="ivf", nlist=4, nprobe=4, train_size=400))
    assert full.search(queries, history, users, extracted, 10) == truth

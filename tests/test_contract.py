"""The recommender contract (engine/services/contract.py, issue 16 part 4): every implementation's top_k is the brute-force
sort of its masked scores, the CF models and popularity give hand-computed values on a tiny fixture, and no
caller of the contract branches on a model's name."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.model.ranking import HistoryIndex
from engine.services.contract import (
    KNOWN,
    PI,
    TEXT,
    TRAJECTORY,
    EmbeddingRecommender,
    PopularityRecommender,
    Recommender,
    explaining,
    primary,
    recommender,
    recommenders,
    reference,
    with_cached_lists,
)

ROOT = Path(__file__).resolve().parents[1]


def brute_force_top_k(scores: torch.Tensor, history: HistoryIndex | None, users: np.ndarray, k: int):
    """Each row's items sorted by (−score, item index), the history's items at −inf: the project's tie-break."""
    scores = scores.numpy().copy()  # [B, n] in the scores' own precision
    items, values = [], []
    for row, user in enumerate(users):
        if history is not None:
            scores[row, history.items_of(int(user))] = -np.inf
        order = sorted(range(scores.shape[1]), key=lambda i: (-scores[row, i], i))[: min(k, scores.shape[1])]
        items.append(order)
        values.append(scores[row, order])
    return np.array(items), np.array(values)


# ------------------------------------------------------------------------------------------ every implementation


@pytest.fixture(scope="module")
def tiny(tiny_run):
    from engine.services.export import test_history
    from engine.services.run import Run
    run = Run.open(tiny_run)
    return run, test_history(run)[0]


def test_the_registry_gives_the_run_s_models_in_order_with_their_capabilities(tiny):
    run, _ = tiny
    recs = recommenders(run)
    assert [r.name for r in recs] == run.models == ["deftrec", "pop", "lightgcn", "mf"]
    assert all(isinstance(r, Recommender) for r in recs)
    explains = {r.name: r.explains for r in recs}
    assert explains == {"deftrec": {TEXT, TRAJECTORY, PI}, "pop": set(), "lightgcn": set(), "mf": set()}
    assert {r.name: r.cached for r in recs} == {"deftrec": True, "pop": False, "lightgcn": False, "mf": False}
    assert primary(recs).name == "deftrec" and reference(recs).name == "lightgcn"
    assert explaining(recs, TEXT).name == explaining(recs, TRAJECTORY, PI).name == "deftrec"
    assert with_cached_lists(recs).name == "deftrec"
    cf_only = [r for r in recs if not r.explains]
    assert primary(cf_only).name == "lightgcn" and explaining(cf_only, TEXT) is None
    assert with_cached_lists(cf_only) is None
    with pytest.raises(ValueError):
        explaining(recs, "colour")
    from data.errors import RunError
    with pytest.raises(RunError, match="unknown model 'bm25'"):
        recommender(run, "bm25")


@pytest.mark.parametrize("k", [1, 10, 1000])  # 1000: the whole catalog, the masked items last at −inf
def test_top_k_is_the_brute_force_sort_of_the_masked_scores(tiny, k):
    run, history = tiny
    users = np.arange(60)
    for rec in recommenders(run):
        for mask in (history, None):
            items, values = rec.top_k(users, mask, k)
            expected_items, expected_values = brute_force_top_k(rec.scores(users), mask, users, k)
            assert items.numpy().tolist() == expected_items.tolist(), (rec.name, k)
            np.testing.assert_array_equal(values.numpy(), expected_values.astype(np.float32), err_msg=rec.name)
            assert items.shape == (60, min(k, run.config["cf"]["n_items"]))


def test_deftrec_top_k_from_the_cached_conditions_is_the_list_training_cached(tiny):
    from data.catalog import Catalog
    run, history = tiny
    with Catalog.open(run.catalog_path, readonly=True) as catalog:
        cached = catalog.top_lists("deftrec", 20, 60)  # [U, 20]
    items, _ = recommender(run, "deftrec").top_k(np.arange(60), history, 20)
    assert items.numpy().tolist() == cached.tolist()


def test_the_cf_scores_are_the_stored_vectors_dot_products(tiny):
    run, _ = tiny
    for name in ("lightgcn", "mf"):
        weights = run.tensors(name)
        expected = weights["user"].float()[[3, 0, 7]] @ weights["item"].float().T
        assert torch.equal(recommender(run, name).scores(np.array([3, 0, 7])), expected)


# ------------------------------------------------------------------------------------------ by hand

# the catalog of tests/test_catalog.py: 3 users, 5 items, popularity [2, 1, 2, 0, 0]; the test-time mask is the
# train items and the validation item: user 0 {0, 1, 3}, user 1 {0, 2, 4}, user 2 {2, 0}
HISTORY = HistoryIndex.build(3, np.array([0, 0, 0, 1, 1, 1, 2, 2]), np.array([0, 1, 3, 0, 2, 4, 2, 0]))
USERS = np.array([0, 1, 2])
ITEMS = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 0.0], [0.0, 0.0]])  # [5, 2]


def _hand_run(tmp_path, tensors: dict) -> object:
    """A run directory with the hand-written catalog and the given `<name>.safetensors` (not validated)."""
    from safetensors.torch import save_file

    from data.catalog import Catalog
    from engine.services.run import Run
    from tests.test_catalog import tiny_split
    Catalog.create(tmp_path / "catalog.sqlite", tiny_split())
    for name, (user, item) in tensors.items():
        save_file({"user": user, "item": item}, str(tmp_path / f"{name}.safetensors"))
    return Run(path=tmp_path, config={"models": ["pop", "lightgcn", "mf"]})


def test_popularity_by_hand(tmp_path):
    run = _hand_run(tmp_path, {})
    pop = recommender(run, "pop")
    assert isinstance(pop, PopularityRecommender) and pop.label == "popularity"
    assert pop.scores(USERS).tolist() == [[2, 1, 2, 0, 0]] * 3
    items, scores = pop.top_k(USERS, None, 5)  # ties to the lower index: 0 before 2, 3 before 4
    assert items.tolist() == [[0, 2, 1, 3, 4]] * 3
    items, scores = pop.top_k(USERS, HISTORY, 3)
    assert items.tolist() == [[2, 4, 0], [1, 3, 0], [1, 3, 4]]  # user 0: 2, 4 left, then masked 0 at −inf
    assert scores.tolist() == [[2, 0, -np.inf], [1, 0, -np.inf], [1, 0, 0]]


def test_mf_by_hand(tmp_path):
    users = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # s(u, i) = e_u · e_i
    run = _hand_run(tmp_path, {"mf": (users, ITEMS)})
    mf = recommender(run, "mf")
    assert isinstance(mf, EmbeddingRecommender) and (mf.name, mf.label) == ("mf", "MF")
    assert mf.scores(USERS).tolist() == [[1, 0, 1, 2, 0], [0, 1, 1, 0, 0], [1, 1, 2, 2, 0]]
    items, scores = mf.top_k(USERS, HISTORY, 3)
    assert items.tolist() == [[2, 4, 0], [1, 3, 0], [3, 1, 4]]
    assert scores.tolist() == [[1, 0, -np.inf], [1, 0, -np.inf], [2, 1, 0]]
    assert mf.top_k(USERS, None, 5)[0].tolist() == [[3, 0, 2, 1, 4], [1, 2, 0, 3, 4], [2, 3, 0, 1, 4]]


def test_lightgcn_by_hand(tmp_path):
    users = torch.tensor([[1.0, 2.0], [0.5, 0.0], [-1.0, 1.0]])
    run = _hand_run(tmp_path, {"lightgcn": (users, ITEMS)})
    lightgcn = recommender(run, "lightgcn")
    assert lightgcn.scores(USERS).tolist() == [[1, 2, 3, 2, 0], [0.5, 0, 0.5, 1, 0], [-1, 1, 0, -2, 0]]
    items, scores = lightgcn.top_k(USERS, None, 5)  # ties: 1 before 3 (user 0), 0 before 2 (user 1), 2 before 4
    assert items.tolist() == [[2, 1, 3, 0, 4], [3, 0, 2, 1, 4], [1, 2, 4, 0, 3]]
    items, scores = lightgcn.top_k(USERS, HISTORY, 2)
    assert items.tolist() == [[2, 4], [3, 1], [1, 4]]
    assert scores.tolist() == [[3, 0], [1, 0], [1, 0]]


# ------------------------------------------------------------------------------------------ no name branches

CALLERS = [f"engine/services/{name}.py" for name in ("evaluation", "export", "bench", "session", "slices", "compare")]
# deftrec_tui/commands/train.py writes training settings ('lightgcn' there is DeftRecConfig's cf source, which
# exists before any recommender), so it is not a caller of the contract
NOT_CALLERS = {"deftrec_tui/commands/train.py"}
MARK = "# not a recommender"  # a line that spells a model's name for another reason says so (and why)


def caller_files() -> list[Path]:
    files = [ROOT / name for name in CALLERS] + sorted((ROOT / "deftrec_tui").rglob("*.py"))
    return [f for f in files if str(f.relative_to(ROOT)) not in NOT_CALLERS]


def _config_like(node: ast.AST) -> bool:
    """An expression that reads config.json's settings (run.config, self.config, settings…)."""
    text = ast.unparse(node)
    return "config" in text or "settings" in text


def name_uses(source: str) -> list[str]:
    """Every place a string equal to a model's name appears, except a key of a dict literal (a table by model:
    colours, the paper's figures), the section of config.json read by .get(…) or […] on a config, and a line
    marked MARK. What is left is a caller naming the model it holds: a comparison, a choice, an argument."""
    tree = ast.parse(source)
    lines = source.splitlines()
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in KNOWN):
            continue
        parent = parents.get(node)
        if MARK in lines[node.lineno - 1]:
            continue
        if isinstance(parent, ast.Dict) and any(key is node for key in parent.keys):
            continue
        if isinstance(parent, ast.Subscript) and parent.slice is node and _config_like(parent.value):
            continue
        if (isinstance(parent, ast.Call) and isinstance(parent.func, ast.Attribute) and parent.func.attr == "get"
                and _config_like(parent.func.value)):
            continue
        found.append(f"line {node.lineno}: {lines[node.lineno - 1].strip()}")
    return found


def test_no_caller_branches_on_a_model_s_name():
    offenders = [f"{file.relative_to(ROOT)} {use}" for file in caller_files() for use in name_uses(file.read_text())]
    assert offenders == []


@pytest.mark.parametrize("snippet", [  # the ways the callers named their models before the contract
    'scorer = deftrec_scorer(run) if model == "deftrec" else cf_scorer(run, model)',
    'if "lightgcn" not in self.session.models:\n    pass',
    'ranks = catalog.test_ranks("deftrec")',
    'def baseline(self, user_idx, model: str = "lightgcn", k: int = 20):\n    pass',
    'a, b = lists["deftrec"], lists["lightgcn"]',
    'models = [m for m in ("deftrec", "lightgcn", "mf", "pop") if m in metrics]',
    'report.overlap = {"a": "deftrec", "b": "lightgcn"}',
    'model = model or ("deftrec" if "deftrec" in opened.models else "lightgcn")',
    'rows = export_cf(run, model="pop")',
    'MODEL = "mf"',
    'match model:\n    case "pop":\n        pass',
])
def test_the_scan_finds_a_named_model(snippet):
    assert name_uses(snippet)


@pytest.mark.parametrize("snippet", [
    'settings = (run.config.get("deftrec") or {}).get("diagnostics")',
    'config = run.config["deftrec"]',
    'MODEL_COLORS = {"deftrec": "#e5a03b", "lightgcn": "#61afef"}',
    'def f():\n    """Rank like deftrec and lightgcn do."""',
    'text = f"{rec.name} left out: no DeftRec lists"',
    'app = typer.Typer(name="deftrec")  # not a recommender: the program\'s name',
    'if rec.cached and TEXT in rec.explains:\n    pass',
])
def test_the_scan_passes_what_names_no_model(snippet):
    assert name_uses(snippet) == []

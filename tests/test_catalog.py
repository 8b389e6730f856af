"""data/catalog.py owns every SQL statement: (a) no other module of engine/, train/, deftrec_tui/, data/ or
scripts/ opens SQLite or executes SQL (parsed, not imported); (b) the Catalog's methods round-trip on a catalog of
three users and five items written by hand, with the values worked out by hand."""

from __future__ import annotations

import ast
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("engine", "train", "deftrec_tui", "data", "scripts")
OWNER = "data/catalog.py"

SQL_MODULES = {"sqlite3", "sqlite_utils", "apsw", "sqlalchemy", "aiosqlite"}
# cursor/connection calls and sqlite-utils' Database/Table API: SQL whatever the arguments
SQL_METHODS = {"execute", "executemany", "executescript", "insert_all", "upsert", "upsert_all", "rows_where",
               "create_index", "create_table", "enable_fts", "enable_wal", "read_sql", "read_sql_query"}
CATALOG_INTERNALS = {"connect", "_connect", "write_transaction", "_write_transaction", "sqlite3", "sqlite_utils"}
TABLES = {"meta", "items", "users", "interactions", "metrics", "preferences", "recommendations", "items_fts",
          "wanted"}
DB_NAME = re.compile(r"(^|_)(db|database|conn|connection|cursor|catalog)$")
_TABLE = r"(\w+\.)?(" + "|".join(sorted(TABLES)) + r"|sqlite_\w+|pragma_\w+)\b"
SQL_TEXT = re.compile(  # a statement on a catalog table, or one that needs no table name
    r"^\s*(select\s.*\sfrom\s+" + _TABLE + r"|(insert|replace)\s+(or\s+\w+\s+)?into\s+" + _TABLE
    + r"|update\s+" + _TABLE + r"\s+set\s|delete\s+from\s+" + _TABLE
    + r"|create\s+(temp\s+|temporary\s+|unique\s+|virtual\s+)*(table|index|view|trigger)\s"
    r"|drop\s+(table|index|view|trigger)\s|alter\s+table\s|pragma\s|begin\s+(immediate|exclusive|deferred)"
    r"|attach\s+database\s|vacuum\b)",
    re.IGNORECASE | re.DOTALL)


def _name(node: ast.AST) -> str:
    """The last name of a Name or Attribute (`self._db` -> '_db'), else ''."""
    return node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""


def _docstrings(tree: ast.AST) -> set[int]:
    nodes = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    return {id(node.body[0].value) for node in ast.walk(tree) if isinstance(node, nodes) and node.body
            and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}


def sql_uses(source: str, filename: str = "<source>") -> list[str]:
    """Every place where `source` opens SQLite or executes SQL itself (what only data/catalog.py may do)."""
    tree = ast.parse(source, filename)
    docstrings = _docstrings(tree)
    found = []

    def hit(node: ast.AST, what: str) -> None:
        found.append(f"{filename}:{getattr(node, 'lineno', '?')}: {what}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in SQL_MODULES:
                    hit(node, f"import {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if module.split(".")[0] in SQL_MODULES:
                hit(node, f"from {module} import …")
            if module == "data.catalog":
                for alias in node.names:
                    if alias.name in CATALOG_INTERNALS:
                        hit(node, f"from data.catalog import {alias.name}")
        elif isinstance(node, ast.Name) and node.id in SQL_MODULES:
            hit(node, f"uses {node.id}")
        elif isinstance(node, ast.Attribute) and node.attr in ("_db", "_connect", "_write_transaction"):
            hit(node, f"reaches into the catalog (.{node.attr})")
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr in SQL_METHODS:
                hit(node, f".{func.attr}(…)")
            elif (_name(func) in ("table", "connect") and node.args and isinstance(node.args[0], ast.Constant)
                  and isinstance(node.args[0].value, str)
                  and (node.args[0].value in TABLES or node.args[0].value.endswith((".sqlite", ".db")))):
                hit(node, f"{_name(func)}({node.args[0].value!r})")
            elif _name(func) == "connect" and node.args and "catalog" in ast.unparse(node.args[0]):
                hit(node, f"connect({ast.unparse(node.args[0])})")
        elif (isinstance(node, ast.Subscript) and DB_NAME.search(_name(node.value))
              and isinstance(node.slice, ast.Constant) and node.slice.value in TABLES):
            hit(node, f"{_name(node.value)}[{node.slice.value!r}]")
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
              and SQL_TEXT.search(node.value)):
            hit(node, f"SQL text {node.value[:50]!r}")
    return found


def scanned_files() -> list[Path]:
    return sorted(path for folder in SCANNED for path in (ROOT / folder).rglob("*.py")
                  if not any(part.startswith(".") or part == "__pycache__" for part in path.relative_to(ROOT).parts))


def test_only_the_catalog_module_touches_sqlite():
    files = scanned_files()
    names = {path.relative_to(ROOT).as_posix() for path in files}
    assert {OWNER, "engine/services/session.py", "engine/services/export.py", "train/pipeline.py", "deftrec_tui/app.py"} <= names
    offenders = [use for path in files if path.relative_to(ROOT).as_posix() != OWNER
                 for use in sql_uses(path.read_text(encoding="utf-8"), path.relative_to(ROOT).as_posix())]
    assert offenders == [], "SQL outside data/catalog.py (add a Catalog method instead):\n" + "\n".join(offenders)
    assert len(sql_uses((ROOT / OWNER).read_text(encoding="utf-8"))) > 20  # the owner is scanned the same way


@pytest.mark.parametrize("snippet", [
    # what engine/, train/ and scripts/ did before the Catalog (each line from the code of that time)
    "from data.catalog import connect\ndb = connect(run.catalog_path, readonly=True)",
    "from data.catalog import connect, put_metrics, write_catalog, write_transaction",
    "import sqlite3\ndb = sqlite3.connect(f'{path}/catalog.sqlite')",
    "n_users = db.execute('select count(*) from users').fetchone()[0]",
    "items = list(db.query('select title, category from items order by item_idx'))",
    "db['preferences'].insert_all(rows, pk='user_idx', replace=True, alter=True)",
    "db.conn.executemany('insert into wanted values (?)', ((u,) for u in users))",
    "db.conn.execute('PRAGMA wal_checkpoint(TRUNCATE)')",
    "rows = catalog._db.query(sql)",
    "import sqlite_utils\ndb = sqlite_utils.Database(conn)",
    "frame = pd.read_sql('select * from metrics', conn)",
    "SQL = f\"delete from preferences where user_idx in ({marks})\"",
])
def test_the_scan_finds_sql(snippet):
    assert sql_uses(snippet)


@pytest.mark.parametrize("snippet", [
    "for side in self.query(PairSide):\n    side.clear('reading the catalogs…')",  # Textual's DOM query
    "users, items = tables['users'], tables['items']",
    "table = pa.table(data, schema=schema)",
    "with Catalog.open(run.catalog_path, readonly=True) as catalog:\n    rows = catalog.history(user_idx)",
    "def f():\n    '''Select the users from the catalog, then update the table.'''",
    "text = 'select a user from the list'",
])
def test_the_scan_passes_what_is_not_sql(snippet):
    assert sql_uses(snippet) == []


# ---------------------------------------------------------------------------------------- (b) the Catalog's methods


@dataclass
class Pref:
    user_idx: int
    prompt: str
    text: str
    category: str | None
    condition: object


def tiny_split():
    """Three users, five items. Interactions are stored user 1 first, so the table's order is not time order."""
    from data.protocol import Split, Stats
    items = pd.DataFrame({"item_id": ["i0", "i1", "i2", "i3", "i4"],
                          "title": ["Alien", "Amelie", "Alien Resurrection", "Brazil", "Casablanca"],
                          "category": ["Horror", "Comedy", "Horror|Action", None, "Drama"],
                          "popularity": [2, 1, 2, 0, 0]})
    rows = [  # user_idx, item_idx, timestamp, position, split
        (1, 0, 11, 0, "train"), (1, 2, 21, 1, "train"), (1, 4, 31, 2, "valid"), (1, 3, 41, 3, "test"),
        (0, 1, 20, 1, "train"), (0, 0, 10, 0, "train"), (0, 3, 30, 2, "valid"), (0, 4, 40, 3, "test"),
        (2, 2, None, 0, "train"), (2, 0, None, 1, "valid"), (2, 1, None, 2, "test")]
    interactions = pd.DataFrame(rows, columns=["user_idx", "item_idx", "timestamp", "position", "split"])
    return Split(name="tiny", user_ids=np.array(["u0", "u1", "u2"], dtype=object), items=items,
                 interactions=interactions, valid_item=np.array([3, 4, 0]), test_item=np.array([4, 3, 1]),
                 before=Stats(3, 5, 11), after=Stats(3, 5, 11), protocol="by hand", checksum="c0ffee")


@pytest.fixture
def catalog_path(tmp_path):
    from data.catalog import Catalog
    path = tmp_path / "catalog.sqlite"
    Catalog.create(path, tiny_split())
    return path


def test_reads_of_a_new_catalog(catalog_path):
    from data.catalog import Catalog
    with Catalog.open(catalog_path, readonly=True) as cat:
        assert cat.meta() == {"schema_version": "1", "dataset": "tiny", "protocol": "by hand", "checksum": "c0ffee"}
        assert (cat.n_users(), cat.n_items()) == (3, 5)
        assert cat.items()[3] == {"item_idx": 3, "item_id": "i3", "title": "Brazil", "category": None}
        assert [i["title"] for i in cat.items()] == ["Alien", "Amelie", "Alien Resurrection", "Brazil", "Casablanca"]
        assert cat.item_categories() == ["Horror", "Comedy", "Horror|Action", None, "Drama"]
        popularity = cat.item_popularity()
        assert popularity.dtype == np.float32 and popularity.tolist() == [2, 1, 2, 0, 0]
        facts = cat.item_facts()
        assert facts["category"].tolist() == ["Horror", "Comedy", "Horror|Action", "", "Drama"]
        assert facts["popularity"].tolist() == [2, 1, 2, 0, 0]
        assert cat.users() == [
            {"user_idx": 0, "user_id": "u0", "n_train": 2, "valid_item_idx": 3, "test_item_idx": 4},
            {"user_idx": 1, "user_id": "u1", "n_train": 2, "valid_item_idx": 4, "test_item_idx": 3},
            {"user_idx": 2, "user_id": "u2", "n_train": 1, "valid_item_idx": 0, "test_item_idx": 1}]
        assert cat.user_positions() == {"u0": 0, "u1": 1, "u2": 2}
        assert cat.held_out().tolist() == [[3, 4], [4, 3], [0, 1]]
        assert cat.user_targets().values.tolist() == [[0, 2, 3, 4], [1, 2, 4, 3], [2, 1, 0, 1]]
        assert cat.history(0) == [(0, "i0", "Alien", "Horror", 10, "train"), (1, "i1", "Amelie", "Comedy", 20, "train"),
                                  (3, "i3", "Brazil", None, 30, "valid"), (4, "i4", "Casablanca", "Drama", 40, "test")]
        assert cat.history(2)[0] == (2, "i2", "Alien Resurrection", "Horror|Action", None, "train")
        assert cat.train_pairs().tolist() == [[0, 0], [0, 1], [1, 0], [1, 2], [2, 2]]  # by user, then position
        assert cat.train_pairs(in_order=False).tolist() == [[1, 0], [1, 2], [0, 1], [0, 0], [2, 2]]  # as stored
        assert cat.users_with_items([1]) == [0, 2] and cat.users_with_items([3, 4]) == [0, 1]
        assert cat.users_with_items([]) == []
        assert [i["title"] for i in cat.search_titles("alien")] == ["Alien", "Alien Resurrection"]  # bm25: shorter
        assert cat.search_titles("resur") == [{"item_idx": 2, "title": "Alien Resurrection",
                                               "category": "Horror|Action"}]
        assert cat.search_titles("brazil") == [{"item_idx": 3, "title": "Brazil", "category": ""}]
        assert cat.search_titles("alien", limit=1)[0]["item_idx"] == 0
        assert cat.search_titles("  ") == [] and cat.search_titles("zzz") == []
        assert cat.metrics().empty and list(cat.metrics().columns) == ["model", "split", "metric", "value"]
        assert cat.preferences() == [] and cat.preference_users() == set()
        assert cat.generated_categories(3) is None
        assert cat.list_length("deftrec") == 0 and cat.test_hits("deftrec", 1) is None
        assert cat.top_lists("deftrec", 1, 3) is None and cat.recommendations(0) == []
    with pytest.raises(sqlite3.ProgrammingError):  # closed when the block ends
        cat.n_users()


def test_writes_round_trip(catalog_path):
    import torch

    from data.catalog import Catalog
    with Catalog.open(catalog_path) as cat:
        cat.put_metrics("pop", "valid", {"HR@10": 0.5, "NDCG@10": np.float32(0.25)})
        cat.put_metrics("pop", "valid", {"HR@10": 0.75})  # replaces one metric, keeps the other
        cat.put_preferences([Pref(0, "p0", "t0", "Horror", np.array([1.0, 2.0])),
                             Pref(1, "p1", "t1", None, torch.tensor([0.5, -1.0], dtype=torch.bfloat16))])
        cat.put_recommendations("deftrec", [
            {"user_idx": 0, "rank": 1, "item_idx": 4, "cosine": 0.9, "pi_bonus": 0.1, "score": 0.99},
            {"user_idx": 0, "rank": 2, "item_idx": 2, "cosine": 0.8, "pi_bonus": 0.0, "score": 0.8},
            {"user_idx": 1, "rank": 1, "item_idx": 2, "cosine": 0.7, "pi_bonus": 0.0, "score": 0.7},
            {"user_idx": 1, "rank": 2, "item_idx": 3, "cosine": 0.6, "pi_bonus": 0.1, "score": 0.66}])
        cat.put_recommendations("lightgcn", ({"user_idx": u, "rank": 1, "item_idx": u, "cosine": 1.0,
                                              "pi_bonus": 0.0, "score": 1.0} for u in range(3)))
        cat.checkpoint()
    with Catalog.open(catalog_path, readonly=True) as cat:
        metrics = cat.metrics().sort_values("metric").values.tolist()
        assert metrics == [["pop", "valid", "HR@10", 0.75], ["pop", "valid", "NDCG@10", 0.25]]
        assert tuple(cat.preference(0)) == ("p0", "t0", "Horror")
        assert tuple(cat.preference(1)) == ("p1", "t1", "")  # no category is stored as ''
        assert cat.preference(2) is None
        assert cat.condition(0).dtype == np.float32 and cat.condition(0).tolist() == [1.0, 2.0]
        assert cat.condition(1).tolist() == [0.5, -1.0] and cat.condition(2) is None
        ((u0, text0, cat0, c0), (u1, _, cat1, c1)) = cat.preferences()
        assert (u0, text0, cat0, c0.tolist(), u1, cat1, c1.tolist()) == (0, "t0", "Horror", [1, 2], 1, "", [0.5, -1])
        conditions = cat.conditions_of([1, 2])
        assert list(conditions) == [1] and conditions[1][0].tolist() == [0.5, -1.0] and conditions[1][1] == ""
        assert cat.preference_users() == {0, 1}
        assert cat.generated_categories(3) == ["Horror", None, None]
        assert cat.list_length("deftrec") == 2 and cat.list_length("lightgcn") == 1 and cat.list_length("mf") == 0
        assert cat.recommendations(1) == [(1, 2, 0.7, 0.0, 0.7), (2, 3, 0.6, 0.1, 0.66)]
        assert cat.recommendations(2, "lightgcn") == [(1, 2, 1.0, 0.0, 1.0)]
        assert cat.test_ranks("deftrec") == {0: 1, 1: 2}  # u0's test item 4 first, u1's test item 3 second
        assert cat.test_ranks("lightgcn") == {}
        assert cat.test_hits("deftrec", 2).tolist() == [True, True, False]
        assert cat.test_hits("deftrec", 1).tolist() == [True, False, False]
        assert cat.test_hits("deftrec", 3) is None and cat.test_hits("mf", 1) is None
        assert cat.top_lists("deftrec", 2, 3).tolist() == [[4, 2], [2, 3], [-1, -1]]
        assert cat.top_lists("deftrec", 1, 3).tolist() == [[4], [2], [-1]]
        assert cat.cached_users(2) == {0, 1} and cat.cached_users(3) == set()
        assert list(cat.export_rows(1)) == [("u0", 1, "i4", "Casablanca", "Drama", 0.9, 0.1, 0.99),
                                            ("u1", 1, "i2", "Alien Resurrection", "Horror|Action", 0.7, 0.0, 0.7)]
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            cat.put_metrics("mf", "test", {"HR@10": 0.0})
        assert [r[:3] for r in cat.export_rows(2, [1, 2], "deftrec")] == [("u1", 1, "i2"), ("u1", 2, "i3")]


def test_replacing_and_forgetting_cached_results(catalog_path):
    from data.catalog import Catalog
    row = {"user_idx": 0, "rank": 1, "item_idx": 4, "cosine": 0.9, "pi_bonus": 0.1, "score": 0.99}
    with Catalog.open(catalog_path) as cat:
        cat.put_preferences([Pref(u, f"p{u}", f"t{u}", "Drama", np.zeros(2)) for u in (0, 1)])
        cat.put_recommendations("deftrec", [{**row, "rank": r, "user_idx": u} for u in (0, 1) for r in (1, 2, 3)])
        cat.put_recommendations("lightgcn", [{**row, "user_idx": 1}])
        cat.replace_deftrec_results([Pref(0, "new", "again", None, np.ones(2))], [{**row, "item_idx": 3}])
        assert tuple(cat.preference(0)) == ("new", "again", "") and cat.condition(0).tolist() == [1, 1]
        assert [r[:2] for r in cat.recommendations(0)] == [(1, 3)]  # ranks 2 and 3 of the old list are gone
        assert len(cat.recommendations(1)) == 3
        cat.forget_deftrec_results([1, 2])
        assert cat.preference(1) is None and cat.recommendations(1) == []
        assert cat.recommendations(1, "lightgcn") == [(1, 4, 0.9, 0.1, 0.99)]  # other models' lists stay
        assert cat.preference_users() == {0} and cat.cached_users(1) == {0}


def test_a_failed_write_leaves_nothing(catalog_path):
    from data.catalog import Catalog

    def rows():
        yield {"user_idx": 0, "rank": 1, "item_idx": 4, "cosine": 0.9, "pi_bonus": 0.1, "score": 0.99}
        raise RuntimeError("interrupted")

    with Catalog.open(catalog_path) as cat:
        with pytest.raises(RuntimeError, match="interrupted"):
            cat.put_recommendations("deftrec", rows())
        assert cat.list_length("deftrec") == 0
        cat.put_metrics("pop", "test", {"HR@10": 1.0})  # the connection is usable afterwards
        assert len(cat.metrics()) == 1


def test_cf_weights_name():
    from engine.services.run import Run, cf_weights_name
    assert cf_weights_name("random") == "cf_random"
    assert cf_weights_name("lightgcn") == cf_weights_name(None) == "lightgcn"
    from engine.model.config import DeftRecConfig
    no_cf = DeftRecConfig().updated({"training.cf": "random"}).to_dict()
    assert Run(Path("."), {"deftrec": {"config": no_cf}}).cf_weights == "cf_random"
    assert Run(Path("."), {"deftrec": None}).cf_weights == Run(Path("."), {}).cf_weights == "lightgcn"

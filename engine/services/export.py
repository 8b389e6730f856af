"""Top-K lists of every user to CSV, with the dataset's own ids and test-time masking (train + validation).

Any recommender of the run (engine/services/contract.py): one whose lists are computed on demand is written whole from
its `top_k` (`export_top_k`); the one whose lists the catalog caches (DeftRec) goes through the cache, computing
and caching the users without a list (`export_deftrec`), with its score breakdown when it explains π."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from data.catalog import Catalog
from engine.model.ranking import HistoryIndex, batches
from engine.services.contract import Recommender, recommenders, with_cached_lists
from engine.services.run import Run

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
    with Catalog.open(run.catalog_path, readonly=True) as catalog:
        train = catalog.train_pairs(in_order=False)
        users = catalog.users()
        items = catalog.items()
    history = HistoryIndex.build(len(users), train[:, 0], train[:, 1])
    history = history.with_extra(np.array([u["valid_item_idx"] for u in users], dtype=np.int64))
    return history, {"users": users, "items": items}


def export_top_k(run: Run, recommender: Recommender, out: str | Path, k: int = 20, batch_size: int = 512,
                 on_progress=None) -> int:
    """Write the top-k of every user from the recommender's `top_k` (a score per item: CF_COLUMNS); returns the
    number of rows. Atomic: temp file + rename."""
    history, tables = test_history(run)
    users, items = tables["users"], tables["items"]
    rows = 0
    with atomic_csv(out, CF_COLUMNS) as writer, torch.no_grad():
        for batch in batches(len(users), batch_size):
            top_items, top_scores = recommender.top_k(batch, history, k)
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


DEFTREC_COLUMNS = ["user_id", "rank", "item_id", "title", "category", "cosine", "weight", "pi_bonus", "score"]


def deftrec_row(user_id, rank, item_id, title, category, cosine, weight, pi_bonus, score) -> list:
    """One CSV row of DEFTREC_COLUMNS (score = cosine × weight × (1 + pi_bonus))."""
    return [spreadsheet_safe(str(user_id)), rank, spreadsheet_safe(str(item_id)), spreadsheet_safe(title),
            spreadsheet_safe(category or ""), f"{cosine:.6f}", f"{weight:.6f}", f"{pi_bonus:.2f}", f"{score:.6f}"]


def item_weights_of(run: Run) -> np.ndarray | None:
    """The run's retriever item weights w_j = ‖q_j‖^α [n_items] when it ranks with item_norm α > 0, else None."""
    config = run.deftrec_config
    alpha = config.retrieval.item_norm if config is not None else 0.0
    if not alpha:
        return None
    from engine.model.retriever import item_weights
    return item_weights(run.tensors(run.cf_weights)["item"].float().numpy(), alpha)


def with_weights(run: Run, rows: Iterator[tuple]) -> Iterator[tuple]:
    """Catalog export rows (user_id, rank, item_id, title, category, cosine, pi_bonus, score) with each item's
    weight inserted after the cosine (1 under Eq. 14)."""
    weights = item_weights_of(run)
    by_id: dict[str, float] = {}
    if weights is not None:
        with Catalog.open(run.catalog_path, readonly=True) as catalog:
            by_id = {str(item["item_id"]): float(weights[position]) for position, item in enumerate(catalog.items())}
    for user_id, rank, item_id, title, category, cosine, pi_bonus, score in rows:
        yield user_id, rank, item_id, title, category, cosine, by_id.get(str(item_id), 1.0), pi_bonus, score


def cached_lists_of(run: Run) -> Recommender:
    """The run's recommender whose lists the catalog caches (DeftRec); a one-line error for a run without one."""
    from data.errors import RunError
    listed = with_cached_lists(recommenders(run))
    if listed is None:
        raise RunError("the run has no DeftRec model (trained with --stage cf)", path=run.path)
    return listed


def export_deftrec_cached(run: Run, out: str | Path, k: int = 20, on_progress=None) -> int:
    """Write DeftRec's cached top-k (computed at training with test-time masking) with its score breakdown."""
    from data.errors import RunError
    listed = cached_lists_of(run)
    count = 0
    with Catalog.open(run.catalog_path, readonly=True) as catalog:
        cached_k = catalog.list_length(listed.name)
        if cached_k < k:
            raise RunError(f"the run caches {listed.label} lists of length {cached_k}, fewer than --k {k}",
                           path=run.path, hint=f"use --k {cached_k} or less")
        rows = catalog.export_rows(k, model=listed.name)
        n_users = catalog.n_users()
        with atomic_csv(out, DEFTREC_COLUMNS) as writer:
            for row in with_weights(run, rows):
                writer.writerow(deftrec_row(*row))
                count += 1
                if on_progress is not None and count % (k * 50) == 0:
                    on_progress(count // k, n_users)
            if on_progress is not None:
                on_progress(n_users, n_users)
    return count


def select_users(run: Run, users: list[str] | None = None, shard: tuple[int, int] | None = None) -> list[int]:
    """user_idx of the requested user ids (all when None), in catalog order, then the contiguous block of
    shard (i, n) so that shards 0…n−1 together cover the selection exactly once."""
    from data.errors import DeftrecError
    with Catalog.open(run.catalog_path, readonly=True) as catalog:
        index = catalog.user_positions()
    if users is None:
        chosen = sorted(index.values())
    else:
        unknown = [u for u in users if u not in index]
        if unknown:
            raise DeftrecError(f"unknown user id {unknown[0]!r}" + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""),
                               path=run.catalog_path, hint="ids are the dataset's own user ids (see the users table)")
        chosen = sorted({index[u] for u in users})
    if shard is not None:
        i, n = shard
        chosen = chosen[i * len(chosen) // n:(i + 1) * len(chosen) // n]
    return chosen


def cached_users(run: Run, users: list[int], k: int) -> set[int]:
    """Users whose DeftRec list of at least k items and preference text are cached in the catalog."""
    listed = cached_lists_of(run)
    with Catalog.open(run.catalog_path, readonly=True) as catalog:
        done = catalog.cached_users(k, listed.name)
    return done.intersection(users)


def forget_cached(run: Run, users: list[int]) -> None:
    """Drop the cached DeftRec results of these users (for --recompute)."""
    with Catalog.open(run.catalog_path) as catalog:
        catalog.forget_deftrec_results(users)


def cache_results(run: Run, results: list) -> None:
    """Replace the cached preference and DeftRec list of each result's user, in one short transaction."""
    with Catalog.open(run.catalog_path) as catalog:
        catalog.replace_deftrec_results(
            [r.preference for r in results],
            ({"user_idx": r.preference.user_idx, "rank": item.rank, "item_idx": item.item_idx, "cosine": item.cosine,
              "pi_bonus": item.pi_bonus, "score": item.score} for r in results for item in r.items))


def compute_and_cache(run: Run, model, users: list[int], k: int, batch_size: int = 32, on_progress=None,
                      on_smaller=None) -> int:
    """Run the full DeftRec pipeline for `users` in batches of similar prompt length and cache each batch's
    preferences and top-k in the catalog in one short transaction (an interrupted export keeps its batches).
    Out of memory, the batch size is halved and the export goes on (on_smaller(new_size, error) is told)."""
    from engine.services.memory import adaptive_batches
    history, _ = test_history(run)
    order = [users[i] for i in np.argsort(model.prompt_lengths(users), kind="stable")]
    done = 0
    for batch, results in adaptive_batches(order, batch_size, lambda b: model.recommend(b, history, k=k), on_smaller):
        cache_results(run, results)
        done += len(batch)
        if on_progress is not None:
            on_progress(len(batch))
    return done


def read_cached_rows(run: Run, users: list[int], k: int) -> Iterator[list]:
    """DEFTREC_COLUMNS rows of the cached lists of `users` (catalog order), ranks 1…k."""
    listed = cached_lists_of(run)
    with Catalog.open(run.catalog_path, readonly=True) as catalog:
        yield from with_weights(run, catalog.export_rows(k, users, model=listed.name))


def write_table(out: str | Path, columns: list[str], rows: Iterator, fmt: str = "csv") -> int:
    """Write rows atomically (temp file + rename) as csv (spreadsheet-safe cells) or parquet; returns the count."""
    out = Path(out)
    count = 0
    if fmt == "csv":
        with atomic_csv(out, columns) as writer:
            for row in rows:
                writer.writerow(deftrec_row(*row) if len(columns) == len(DEFTREC_COLUMNS) else row)
                count += 1
        return count
    import pyarrow as pa
    import pyarrow.parquet as pq
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    types = {"user_id": pa.string(), "rank": pa.int32(), "item_id": pa.string(), "title": pa.string(),
             "category": pa.string(), "cosine": pa.float32(), "weight": pa.float32(), "pi_bonus": pa.float32(), "score": pa.float32()}
    schema = pa.schema([(name, types[name]) for name in columns])
    try:
        with pq.ParquetWriter(tmp, schema) as writer:
            chunk: list = []
            for row in rows:
                chunk.append(row)
                if len(chunk) == 65536:
                    writer.write_table(_arrow_chunk(pa, chunk, columns, schema))
                    count += len(chunk)
                    chunk = []
            if chunk:
                writer.write_table(_arrow_chunk(pa, chunk, columns, schema))
                count += len(chunk)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return count


def _arrow_chunk(pa, rows: list, columns: list[str], schema):
    """A pyarrow table of rows, strings as str and numbers as Python numbers."""
    text = {"user_id", "item_id", "title", "category"}
    data = {name: [("" if r[i] is None else str(r[i])) if name in text else
                   (r[i].item() if isinstance(r[i], np.generic) else r[i]) for r in rows]
            for i, name in enumerate(columns)}
    return pa.table(data, schema=schema)


def export_deftrec(run: Run, out: str | Path, k: int = 20, users: list[str] | None = None,
                   shard: tuple[int, int] | None = None, recompute: bool = False, batch_size: int | None = None,
                   fmt: str = "csv", model_loader=None, on_start=None, on_progress=None, index: str = "exact",
                   on_smaller=None, on_warning=None) -> dict:
    """Top-k of the selected users through the cache: users already cached are read, the others go through the
    full pipeline (loaded once by model_loader) and are cached batch by batch, then the file is written at once.
    index ivf|hnsw retrieves through an approximate index; its recall@k against exact search is measured on
    (at most 256 of) the users computed now. batch_size None: the batches the training described its users in (the
    run's profile.describe_batch, same order), so a whole export reproduces the cached lists even where a bf16 prompt
    pass rounds differently in another batch layout (inference precision 'mixed', docs/inference.md). on_warning(text)
    is told, before any user is computed, where this machine's kernels differ from those that wrote the run's texts."""
    from data.errors import DeftrecError
    n_items = run.config.get("cf", {}).get("n_items")
    if n_items and k > n_items:
        raise DeftrecError(f"--k {k} is more than the catalog's {n_items} items", path=run.path,
                           hint=f"use --k {n_items} or less")
    selected = select_users(run, users, shard)
    if recompute:
        forget_cached(run, selected)
    have = cached_users(run, selected, k)
    todo = [u for u in selected if u not in have]
    drift = None
    if on_start is not None:
        on_start(len(selected), len(have))
    if todo:
        model = cached_lists_of(run).model() if model_loader is None else model_loader()
        drift = run.kernel_drift(model.device.type)
        if drift is not None and on_warning is not None:
            on_warning(drift)
        exact = model.retriever
        if index != "exact":
            from engine.model.ann import AnnSettings
            model.retriever = exact.with_ann(AnnSettings(kind=index))
        try:
            size = batch_size or (run.deftrec_config.profile.describe_batch if run.deftrec_config else 32)
            compute_and_cache(run, model, todo, k, size, on_progress, on_smaller)
            recall = None if index == "exact" else ann_recall(run, model, exact, todo[:256], k)
        finally:
            model.retriever = exact
    rows = write_table(out, DEFTREC_COLUMNS, read_cached_rows(run, selected, k), fmt)
    summary = {"users": len(selected), "cached": len(have), "computed": len(todo), "rows": rows}
    if todo:
        summary["kernel_drift"] = drift
    if todo and index != "exact":
        summary["recall"] = recall
    return summary


def ann_recall(run: Run, model, exact, users: list[int], k: int) -> float:
    """Recall@k of the model's (approximate) retriever against exact search, from the users' cached conditions."""
    from engine.model.ann import recall_at_k
    history, _ = test_history(run)
    with Catalog.open(run.catalog_path, readonly=True) as catalog:
        rows = catalog.conditions_of(users)
    conditions = torch.from_numpy(np.stack([rows[u][0] for u in users]))
    categories = [rows[u][1] or None for u in users]
    finals = model.trajectories(conditions, users)[-1].numpy()  # [U,d]
    kwargs = {"pi": model.config.retrieval.pi, "match": model.config.retrieval.pi_match}
    approx = model.retriever.search(finals, history, np.asarray(users), categories, k, **kwargs)
    truth = exact.search(finals, history, np.asarray(users), categories, k, **kwargs)
    pad = lambda lists: np.array([[r.item_idx for r in row] + [-1] * (k - len(row)) for row in lists])
    return recall_at_k(pad(truth), pad(approx))


def merge_exports(run: Run, parts: list[str | Path], out: str | Path, fmt: str = "csv") -> dict:
    """Merge shard files (csv or parquet) of one run into one file ordered like a single export; each user
    must come from exactly one shard."""
    from data.errors import DeftrecError
    with Catalog.open(run.catalog_path, readonly=True) as catalog:
        position = catalog.user_positions()
    by_user: dict[str, list] = {}
    origin: dict[str, int] = {}
    for number, part in enumerate(map(Path, parts)):
        if not part.is_file():
            raise DeftrecError("shard file not found", path=part)
        frame = _read_part(part)
        if list(frame.columns) != DEFTREC_COLUMNS:
            raise DeftrecError(f"columns {list(frame.columns)} are not those of a DeftRec export", path=part)
        for row in frame.itertuples(index=False):
            user_id = str(row.user_id)
            if user_id not in position:
                raise DeftrecError(f"user {user_id!r} is not in this run", path=part, hint="merge shards of one run")
            if origin.setdefault(user_id, number) != number:
                raise DeftrecError(f"user {user_id!r} is in two shards ({Path(parts[origin[user_id]]).name} "
                                   f"and {part.name})", path=part)
            by_user.setdefault(user_id, []).append(list(row))
    ordered = (row for user in sorted(by_user, key=position.__getitem__) for row in by_user[user])
    count = write_table(out, DEFTREC_COLUMNS, ordered, fmt)
    return {"users": len(by_user), "rows": count, "shards": len(parts)}


def _unescape(cell: str) -> str:
    """Undo spreadsheet_safe."""
    return cell[1:] if cell[:1] == "'" and cell[1:2] in ("=", "+", "-", "@") else cell


def _read_part(path: Path):
    """A shard as a DataFrame with plain values (csv cells unescaped, numbers parsed)."""
    import pandas as pd

    from data.errors import DeftrecError
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        for column in ("user_id", "item_id", "title", "category"):
            if column in frame:
                frame[column] = frame[column].map(_unescape)
        for column, kind in (("rank", int), ("cosine", float), ("weight", float), ("pi_bonus", float), ("score", float)):
            if column in frame:
                frame[column] = frame[column].astype(kind)
        return frame
    except (ValueError, OSError) as error:
        raise DeftrecError(f"cannot read shard: {str(error).splitlines()[0]}", path=path) from error

"""`deftrec export`: top-K lists of every user (or a selection, or one shard) to CSV or Parquet."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from deftrec_tui.errors import cli_errors


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """'i/n' with 0 <= i < n -> (i, n)."""
    from data.errors import DeftrecError
    if text is None:
        return None
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        index, count = -1, 0
    if not 0 <= index < count:
        raise DeftrecError(f"bad --shard {text!r}", hint="use i/n with 0 <= i < n, e.g. --shard 0/4")
    return index, count


def parse_users(text: str | None) -> list[str] | None:
    """'id,id,…' or '@FILE' (one id per line, blank lines and #-comments skipped) -> ids."""
    from data.errors import DeftrecError
    if text is None:
        return None
    if text.startswith("@"):
        path = Path(text[1:])
        if not path.is_file():
            raise DeftrecError("user list not found", path=path)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as error:
            raise DeftrecError(f"user list is not UTF-8 (byte {error.start})", path=path) from error
        ids = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    else:
        ids = [part.strip() for part in text.split(",") if part.strip()]
    if not ids:
        raise DeftrecError("--users names no user", hint="give ids separated by commas, or @FILE with one per line")
    return ids


@cli_errors
def export(
    run: Annotated[Path, typer.Argument(help="A run directory written by deftrec train.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="File to write (atomically: complete or absent).")],
    model: Annotated[str | None, typer.Option(help="deftrec | lightgcn | mf | pop (default: deftrec when the run has it).")] = None,
    k: Annotated[int, typer.Option("--k", "-k", help="Length of each list.", min=1)] = 20,
    users: Annotated[str | None, typer.Option(help="Only these users: 'id,id,…' or @FILE with one id per line.")] = None,
    shard: Annotated[str | None, typer.Option(help="Only block i of n of the (selected) users, e.g. 0/4; join with --merge.")] = None,
    merge: Annotated[list[Path] | None, typer.Option(help="Merge these shard files of RUN into --out instead of exporting (repeat the option).")] = None,
    recompute: Annotated[bool, typer.Option(help="Ignore cached DeftRec lists and run the model again for the selected users.")] = False,
    batch_size: Annotated[int | None, typer.Option(help="Users per LLM call when DeftRec has to run (default: the batches the run's training described its users in, 48 in quick and cpu, so a whole export reproduces the cached lists).", min=1)] = None,
    fmt: Annotated[str | None, typer.Option("--format", help="csv | parquet (default: from --out's suffix).")] = None,
    max_memory: Annotated[float | None, typer.Option(help="Cap this process's memory at this many GB (CPU runs): batches shrink instead of the machine running out.", min=1.0)] = None,
    index: Annotated[str, typer.Option(help="Retrieval for users computed now: exact (FAISS flat, default) | ivf | hnsw (approximate, for catalogs of millions; recall@K against exact is printed).")] = "exact",
) -> None:
    """Write top-K lists (train and validation items masked). DeftRec lists come from the run's cache where
    present and are computed and cached otherwise, so an interrupted export resumes where it stopped."""
    from data.errors import DeftrecError
    from engine.services.run import Run

    fmt = fmt or ("parquet" if out.suffix == ".parquet" else "csv")
    if index not in ("exact", "ivf", "hnsw"):
        raise DeftrecError(f"unknown index {index!r}", hint="use exact, ivf or hnsw")
    if fmt not in ("csv", "parquet"):
        raise DeftrecError(f"unknown format {fmt!r}", hint="use csv or parquet")
    if not out.parent.exists():
        raise DeftrecError("output folder does not exist", path=out.parent)
    if max_memory:
        from engine.services.memory import limit_memory
        limit_memory(max_memory)
    opened = Run.open(run)
    if merge:
        from engine.services.export import merge_exports
        summary = merge_exports(opened, merge, out, fmt)
        print(f"{summary['rows']} rows of {summary['users']} users from {summary['shards']} shards written to {out}")
        return
    from engine.services.contract import primary, recommender, recommenders
    model = model or primary(recommenders(opened)).name
    if model not in opened.models:
        raise DeftrecError(f"the run has no model {model!r}", path=run,
                           hint=f"models in this run: {', '.join(opened.models)}")
    selection, shard_of = parse_users(users), parse_shard(shard)
    chosen = recommender(opened, model)
    if not chosen.cached:  # lists computed on demand, in seconds: written whole
        if selection is not None or shard_of is not None or fmt != "csv":
            raise DeftrecError("--users, --shard and --format parquet apply to DeftRec exports",
                               hint="CF lists of every user take seconds: export them whole")
        from engine.services.export import export_top_k
        rows = export_top_k(opened, chosen, out, k=k)
        print(f"{rows} rows written to {out}")
        return
    import time

    from engine.services.export import export_deftrec
    from train.progress import log, make_progress
    with make_progress() as progress:
        task, started, computed = None, time.perf_counter(), 0

        def on_start(total: int, cached: int) -> None:
            nonlocal task
            task = progress.add_task("export", total=total - cached, status=f"{cached} of {total} users cached")

        def on_progress(done: int) -> None:
            nonlocal computed
            computed += done
            progress.update(task, advance=done, status=f"{computed / (time.perf_counter() - started):.1f} users/s")

        summary = export_deftrec(opened, out, k=k, users=selection, shard=shard_of, recompute=recompute,
                                 batch_size=batch_size, fmt=fmt, on_start=on_start, on_progress=on_progress,
                                 index=index, on_warning=lambda text: log(f"warning: {text}"),
                                 on_smaller=lambda size, error: log(
                                     f"out of memory ({str(error).splitlines()[0][:80]}): continuing with batches "
                                     f"of {size} users"))
    print(f"{summary['rows']} rows of {summary['users']} users written to {out} "
          f"({summary['cached']} from the cache, {summary['computed']} computed now)")
    if summary.get("recall") is not None:
        print(f"{index} retrieval: recall@{k} {summary['recall']:.4f} against exact search "
              f"on {min(summary['computed'], 256)} of the users computed now")

"""`deftrec bench`: where the time of a recommendation goes, DeftRec against an autoregressive beam-search
baseline on the same users, and approximate retrieval at catalog scale."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from deftrec_tui.errors import cli_errors


@cli_errors
def bench(
    run: Annotated[Path | None, typer.Argument(help="A run trained with --stage all (omit with --synthetic-items only).")] = None,
    users: Annotated[int, typer.Option(help="Users timed one by one (and through the baseline).", min=1)] = 16,
    k: Annotated[int, typer.Option("--k", "-k", help="List length (and beams of the baseline).", min=1)] = 20,
    batch_sizes: Annotated[str, typer.Option(help="Batch sizes of the throughput rows, comma-separated.")] = "1,8,32",
    baseline: Annotated[bool, typer.Option(help="Also time the beam-search title-generation baseline.")] = True,
    synthetic_items: Annotated[int, typer.Option(help="Items of a synthetic catalog for the approximate-index check (0: skip).", min=0)] = 0,
    synthetic_users: Annotated[int, typer.Option(help="Users of the synthetic catalog.", min=1)] = 100_000,
    queries: Annotated[int, typer.Option(help="Users retrieved in the approximate-index check.", min=1)] = 1000,
    index: Annotated[str, typer.Option(help="Approximate index: ivf | hnsw.")] = "ivf",
    nprobe: Annotated[int, typer.Option(help="IVF cells visited per query.", min=1)] = 32,
    ef_search: Annotated[int, typer.Option(help="HNSW search breadth.", min=1)] = 128,
    decoding: Annotated[str | None, typer.Option(help="Decode as: template | draft | full | constrained (default: as the run was trained).")] = None,
    precision: Annotated[str | None, typer.Option(help="The LLM's precision: float32 | mixed (the prompt's pass in bf16) | bfloat16 | auto (default: as the run was trained).")] = None,
    compare_full: Annotated[bool, typer.Option(help="Also time full greedy decoding in the same precision on the same users, interleaved, for the ratio.")] = True,
    threads: Annotated[int | None, typer.Option(help="CPU threads for torch (default: all cores).")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write every figure to this JSON file.")] = None,
) -> None:
    """Per-user latency by stage (LLM prefill, generation, denoising, retrieval), throughput by batch size,
    prefill against the bare LLM, the speed ratio to beam search measured in this run, and ANN recall@K."""
    from rich.console import Console
    from rich.table import Table

    from data.errors import DeftrecError

    console = Console()
    try:
        sizes = tuple(sorted({int(x) for x in batch_sizes.split(",") if x.strip()}))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise DeftrecError(f"bad --batch-sizes {batch_sizes!r}", hint="use positive integers, e.g. 1,8,32")
    if index not in ("ivf", "hnsw"):
        raise DeftrecError(f"unknown index {index!r}", hint="use ivf or hnsw")
    from engine.model.config import DECODINGS
    if decoding is not None and decoding not in DECODINGS:
        raise DeftrecError(f"unknown --decoding {decoding!r}", hint=f"use one of: {', '.join(DECODINGS)}")
    from engine.model.config import PRECISIONS
    if precision is not None and precision not in PRECISIONS:
        raise DeftrecError(f"unknown --precision {precision!r}", hint=f"use one of: {', '.join(PRECISIONS)}")
    if run is None and not synthetic_items:
        raise DeftrecError("nothing to measure", hint="give a RUN, or --synthetic-items N for the index check")
    if json_out is not None and not json_out.parent.exists():
        raise DeftrecError("output folder does not exist", path=json_out.parent)
    import torch
    if threads:
        torch.set_num_threads(threads)
    from engine.services import bench as measure
    figures: dict = {"cpu_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available()}
    say = lambda text: console.print(f"[dim]… {text}[/dim]")
    if run is not None:
        from engine.services.contract import TEXT, TRAJECTORY, explaining, recommenders
        from engine.services.run import Run
        opened = Run.open(run)
        if explaining(recommenders(opened), TEXT, TRAJECTORY) is None:
            raise DeftrecError("the run has no DeftRec model (trained with --stage cf)", path=run)
        result = measure.bench_run(opened, n_users=users, k=k, batch_sizes=sizes, baseline=baseline, on_step=say,
                                   decoding=decoding, compare_full=compare_full, precision=precision)
        figures["run"] = result
        lat, share = result["latency_s"], result["latency_share"]
        table = Table(title=f"DeftRec, one cold user at a time ({result['users']} users, K={k}, {result['device']}, "
                            f"{result['torch_threads']} threads, {result['decoding']} decoding, {result['precision']}, "
                            f"{lat['forwards']} LLM passes per user)")
        table.add_column("stage")
        table.add_column("ms / user", justify="right")
        table.add_column("share", justify="right")
        for name in ("prefill", "generation", "denoising", "retrieval"):
            table.add_row(f"LLM {name}" if name in ("prefill", "generation") else name,
                          f"{1000 * lat[name]:.1f}", f"{100 * share[name]:.1f} %")
        table.add_row("[bold]total", f"[bold]{1000 * lat['total']:.1f}", "100 %")
        console.print(table)
        if "full_decoding" in result:
            full = result["full_decoding"]
            console.print(f"full greedy decoding in {result['precision']} on the same users, interleaved: {1000 * full['latency_s']['total']:.1f} ms "
                          f"/ user ({full['latency_s']['forwards']} LLM passes): {result['decoding']} decoding in {result['precision']} is "
                          f"{full['speedup']:.2f}× faster; identical top-{k} lists for {full['same_lists']} of "
                          f"{result['users']} users")
        tput = Table(title="Batched throughput")
        for column in ("batch size", "users", "users / s"):
            tput.add_column(column, justify="right")
        for row in result["throughput"]:
            tput.add_row(str(row["batch_size"]), str(row["users"]), f"{row['users_per_s']:.2f}")
        console.print(tput)
        pre = result["prefill"]
        console.print(f"prefill, {pre['users']} users, {pre['tokens']} tokens: pipeline {pre['pipeline_tokens_per_s']:.0f} "
                      f"tokens/s, bare LLM forward {pre['bare_tokens_per_s']:.0f} tokens/s "
                      f"(pipeline at {100 * pre['ratio']:.0f} % of the bare model)")
        console.print(f"model load {result['model_load_s']:.1f} s; DeftRec hits on these users: {result['deftrec_hits']}")
        if "baseline" in result:
            base = result["baseline"]
            console.print(f"beam-search baseline ({base['method']}): {1000 * base['seconds_per_user']:.0f} ms / user, "
                          f"{base['items_per_user']:.1f} catalog items found per user, hits {base['hits']}")
            console.print(f"[bold]DeftRec is {result['speedup']:.1f}× faster per user than the beam-search baseline "
                          f"(same users, same LLM, measured in this run)")
    if synthetic_items:
        from engine.model.ann import AnnSettings
        settings = AnnSettings(kind=index, nprobe=nprobe, ef_search=ef_search)
        result = measure.bench_ann(synthetic_items, synthetic_users, n_queries=min(queries, synthetic_users), k=k,
                                   settings=settings, on_step=say)
        figures["ann"] = result
        console.print(f"{index} over {synthetic_items:,} synthetic items, {result['queries']} queries: "
                      f"recall@{k} {result['recall_at_k']:.4f} against exact search; exact {result['exact_search_s']:.2f} s, "
                      f"{index} {result['approx_search_s']:.2f} s ({result['speedup']:.1f}× faster, built in "
                      f"{result['approx_build_s']:.1f} s)")
    if json_out is not None:
        tmp = json_out.with_name(f".{json_out.name}.partial")
        tmp.write_text(json.dumps(figures, indent=2))
        tmp.replace(json_out)
        console.print(f"figures written to {json_out}")

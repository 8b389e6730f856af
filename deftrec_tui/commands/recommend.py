"""`deftrec recommend`: one user through the whole pipeline, the preference text streamed as it is generated."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from deftrec_tui.errors import cli_errors


@cli_errors
def recommend(
    run: Annotated[Path, typer.Argument(help="A run directory trained with --stage all.")],
    user: Annotated[str, typer.Option("--user", "-u", help="The dataset's own user id.")],
    k: Annotated[int, typer.Option("--k", "-k", help="Length of the list.", min=1)] = 10,
    cached: Annotated[bool, typer.Option(help="Show the result cached at training time instead of computing it.")] = False,
) -> None:
    """Prompt, streamed preference text, denoising summary and the top-K with cosine × (1 + π)."""
    from rich.console import Console
    from rich.table import Table

    from data.errors import DeftrecError
    from engine.services.session import RunSession

    console = Console()
    session = RunSession(run)
    user_idx = session.user_index(user)
    if cached:
        explanation = session.cached(user_idx)
        if explanation is None:
            raise DeftrecError("the run caches no DeftRec result for this user", path=run)
    else:
        from transformers import TextStreamer
        model = session.model()
        drift = session.kernel_drift()
        if drift is not None:
            console.print(f"[yellow]warning:[/] {drift}", highlight=False)
        console.print("[bold]preference:[/] ", end="")
        streamer = TextStreamer(model.tokenizer, skip_prompt=True, skip_special_tokens=True)
        explanation = session.explain(user_idx, k=k, streamer=streamer)
    if cached:
        console.print(f"[bold]preference:[/] {explanation.text}")
    console.print(f"[bold]category found:[/] {explanation.category or '(none: π = 0 for every item)'}")
    if explanation.steps:
        first, last = explanation.steps[0], explanation.steps[-1]
        console.print(f"[bold]denoising:[/] {len(explanation.steps) - 1} steps, ‖x‖ {first.norm:.2f} → {last.norm:.2f}, "
                      f"test item rank {first.test_rank} → {last.test_rank}")
    weighted = any(item.weight != 1.0 for item in explanation.items)  # the run ranks by cos·‖q‖^α·(1 + π)
    table = Table("rank", "item_id", "title", "category", "cosine", *(["w = ‖q‖^α"] if weighted else []), "π", "score",
                  "", box=None)
    for item in explanation.items[:k]:
        table.add_row(str(item.rank), item.item_id, item.title, item.category, f"{item.cosine:.4f}",
                      *([f"{item.weight:.4f}"] if weighted else []), f"{item.pi_bonus:.2f}", f"{item.score:.4f}",
                      "← test item" if item.is_test else "")
    console.print(table)

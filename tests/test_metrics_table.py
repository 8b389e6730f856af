"""One metrics table for `deftrec eval` and the explorer's run tab: test rows first, models in MODEL_ORDER."""

import io

import pandas as pd
from rich.console import Console

from train.evaluate import metrics_table


def rendered_rows(table) -> list[tuple[str, str]]:
    console = Console(file=io.StringIO(), width=120, color_system=None)
    console.print(table)
    rows = []
    for line in console.file.getvalue().splitlines():
        cells = line.replace("│", " ").split()
        if len(cells) >= 2 and cells[1] in ("test", "valid"):
            rows.append((cells[0], cells[1]))
    return rows


def test_eval_and_run_tab_share_one_table_and_order():
    from deftrec_tui.widgets import summary
    assert summary.metrics_table is metrics_table
    frame = pd.DataFrame([{"model": m, "split": s, "metric": k, "value": 0.1}
                          for m in ("pop", "mf", "deftrec", "lightgcn") for s in ("valid", "test")
                          for k in ("HR@10", "NDCG@10", "HR@20", "NDCG@20")])
    expected = [(m, s) for s in ("test", "valid") for m in ("deftrec", "lightgcn", "mf", "pop")]
    assert rendered_rows(metrics_table(frame, title="eval")) == expected
    assert rendered_rows(metrics_table(frame, mark_best=True, boxed=False)) == expected

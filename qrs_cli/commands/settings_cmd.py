"""``qrs settings``: list every sampler key with its default, what it accepts and its meaning."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer

from qrs_cli import output


def settings(
    as_json: Annotated[bool, typer.Option("--json", help="Print the schema as JSON.")] = False,
    markdown: Annotated[bool, typer.Option("--markdown", help="Print a Markdown table.")] = False,
) -> None:
    """List every QR_ setting: default, allowed values, per-request override, description."""
    from qr_sampler.settings import setting_specs
    from qr_sampler.settings_reference import markdown_table

    specs = setting_specs()
    if as_json:
        output.json_data([asdict(s) for s in specs])
    elif markdown:
        output.data(markdown_table())
    else:
        rows = [
            [s.env_key, s.default, s.allowed, "yes" if s.per_request else "", s.description]
            for s in specs
        ]
        output.data(output.table(["KEY", "DEFAULT", "ALLOWED", "PER-REQUEST", "DESCRIPTION"], rows))


def register(app: typer.Typer) -> None:
    app.command("settings")(settings)

"""``qrs init [DIR]``: start a project (base stack, shipped profiles) from the installed package.

Thin by design: :func:`~qrs_cli.profiles.project.init_project` does the work; this module prints
the files it wrote (stdout) and the next step (stderr), or the result as JSON.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from qrs_cli import output


def init(
    directory: Annotated[str, typer.Argument(
        metavar="DIR", show_default=False,
        help="Folder to make the project in (created if missing; default: the current one).")
    ] = ".",
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Make a project folder: deployments/ (the base stack, profiles urandom, firefly-1 and
    _template) and the Dockerfiles it builds, from the installed package.

    Existing files are never overwritten (nothing is written when one exists). Afterwards
    `qrs profile new`, `validate` and `up` work inside the folder without --root.
    """
    from qrs_cli.profiles.project import init_project

    result = init_project(directory)
    if as_json:
        output.json_data(result.to_dict())
    else:
        for path in result.files:
            output.data(os.path.join(_shown(directory, result.root), path))
    here = result.root == Path.cwd().resolve()
    where = "" if here else f"cd {_shown(directory, result.root)} && "
    output.info(f"Made a qr-sampler project in {result.root} (profiles: "
                f"{', '.join(p for p in result.profiles if not p.startswith('_'))}).")
    output.info(f"Next: {where}qrs doctor   (says which runtime can start here and how)")


def _shown(directory: str, root: Path) -> str:
    """The folder as the user typed it (relative paths stay relative), else absolute."""
    return directory if directory and not directory.startswith("~") else str(root)


def register(app: typer.Typer) -> None:
    app.command("init")(init)

"""The ``qrs`` application: assembles the command modules and catches errors once.

Heavy imports (grpc, jinja2, torch) happen inside the commands that need them so ``qrs --help``
stays fast.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from qrs_cli import output
from qrs_cli.commands import demo_cmd, serve_entropy, settings_cmd
from qrs_cli.commands import doctor as doctor_cmd
from qrs_cli.commands import model as model_cmd
from qrs_cli.commands import probe as probe_cmd
from qrs_cli.commands import profile as profile_cmd
from qrs_cli.commands import up as up_cmd
from qrs_cli.errors import EXIT_FAILED, report_for

app = typer.Typer(
    name="qrs",
    help="Deploy, probe and run the qr-sampler vLLM plugin.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help text: skips importing typer's rich formatting (~70 ms of start-up).
    rich_markup_mode=None,
)


def _version_callback(value: bool) -> None:
    if value:
        from qr_sampler import __version__

        output.data(f"qrs {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version_callback,
            is_eager=True,
            help="Show the version and exit.",
        ),
    ] = False,
) -> None:
    """Deploy, probe and run the qr-sampler vLLM plugin."""


demo_cmd.register(app)
settings_cmd.register(app)
model_cmd.register(app)
profile_cmd.register(app)
probe_cmd.register(app)
serve_entropy.register(app)
up_cmd.register(app)
doctor_cmd.register(app)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``qrs`` script: run the app, translate errors, return the exit code.

    Typer runs in standalone mode, so its own usage errors print and exit 2 through SystemExit;
    everything else that escapes a command is translated here, once.
    """
    try:
        app(args=argv, prog_name="qrs")
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except Exception as exc:
        if os.environ.get("QRS_DEBUG") == "1":
            raise
        report = report_for(exc)
        if report is None:
            output.error(
                f"unexpected {type(exc).__name__}: {exc}",
                "this is a bug; rerun with QRS_DEBUG=1 and report the traceback",
            )
            return EXIT_FAILED
        output.error(report.message, report.hint)
        return report.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())

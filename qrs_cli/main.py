"""The ``qrs`` application: assembles the command modules and catches errors once.

Heavy imports (grpc, jinja2, torch) happen inside the commands that need them so ``qrs --help``
stays fast. ``main()`` is the one place that turns what escapes a command into an exit code:
library and CLI errors through :func:`qrs_cli.errors.report_for`, Ctrl-C into 130, anything
unknown into a bug report line (``QRS_DEBUG=1`` shows the traceback instead).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from types import FrameType
from typing import Annotated

import typer

from qrs_cli import output
from qrs_cli.commands import audit as audit_cmd
from qrs_cli.commands import demo_cmd, init_cmd, serve_entropy, settings_cmd
from qrs_cli.commands import doctor as doctor_cmd
from qrs_cli.commands import model as model_cmd
from qrs_cli.commands import probe as probe_cmd
from qrs_cli.commands import profile as profile_cmd
from qrs_cli.commands import render as render_cmd
from qrs_cli.commands import up as up_cmd
from qrs_cli.errors import EXIT_FAILED, EXIT_INTERRUPTED, report_for

app = typer.Typer(
    name="qrs",
    help="Deploy, probe and run the qr-sampler vLLM plugin.",
    no_args_is_help=True,
    # --install-completion / --show-completion for bash, zsh, fish and PowerShell; profile
    # names complete too (qrs_cli.commands.completion).
    add_completion=True,
    pretty_exceptions_enable=False,
    # Plain help text: skips importing typer's rich formatting (~70 ms of start-up).
    rich_markup_mode=None,
    # -h everywhere: sub-commands inherit the root's help option names.
    context_settings={"help_option_names": ["-h", "--help"]},
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


init_cmd.register(app)
demo_cmd.register(app)
settings_cmd.register(app)
model_cmd.register(app)
profile_cmd.register(app)
probe_cmd.register(app)
serve_entropy.register(app)
up_cmd.register(app)
render_cmd.register(app)
doctor_cmd.register(app)
audit_cmd.register(app)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``qrs`` script: run the app, translate errors, return the exit code.

    Typer runs in standalone mode, so its own usage errors print and exit 2 through SystemExit;
    everything else that escapes a command is translated here, once. Ctrl-C exits 130 wherever
    it lands: Click turns an interrupt inside a command into "Aborted!" and exit 1, so the
    SIGINT handler below notes that one arrived.
    """
    output.install_glyph_fallback()
    interrupts = _InterruptWatch()
    try:
        app(args=argv, prog_name="qrs")
    except SystemExit as exc:
        code = exc.code
        code = code if isinstance(code, int) else (0 if code is None else 1)
        if code in (EXIT_FAILED, EXIT_INTERRUPTED) and interrupts.seen(exc):
            output.info("Interrupted.")
            return EXIT_INTERRUPTED
        return code
    except KeyboardInterrupt:
        output.info("Interrupted.")
        return EXIT_INTERRUPTED
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
    finally:
        interrupts.restore()
    return 0


class _InterruptWatch:
    """Notes a SIGINT (then behaves exactly like Python's default handler) while ``main`` runs.

    Installed only in the main thread over the default handler, so an embedding program's own
    handler is left alone; the exception chain is the fallback witness (Click raises its abort
    from the KeyboardInterrupt).
    """

    def __init__(self) -> None:
        self._arrived = False
        self._previous: object = None
        if threading.current_thread() is threading.main_thread() and (
            signal.getsignal(signal.SIGINT) is signal.default_int_handler
        ):
            self._previous = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self._arrived = True
        signal.default_int_handler(signum, frame)

    def seen(self, exc: BaseException) -> bool:
        if self._arrived:
            return True
        link: BaseException | None = exc
        for _ in range(8):  # a short chain: SystemExit <- Abort <- KeyboardInterrupt
            if link is None:
                return False
            if isinstance(link, KeyboardInterrupt):
                return True
            link = link.__cause__ or link.__context__
        return False

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)  # type: ignore[arg-type]
            self._previous = None


if __name__ == "__main__":
    sys.exit(main())

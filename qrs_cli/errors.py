"""User-facing CLI errors, and the one table that maps every known error to what the user sees.

A command raises :class:`CLIError` (or lets a library error escape); ``main()`` catches once and
prints ``Error: …`` and ``Hint: …`` to stderr with the exit code. ``QRS_DEBUG=1`` re-raises so the
full traceback is shown.

Libraries pick neither messages' wording nor exit codes for the command line: their errors carry
a message and a ``hint`` (on the root, :class:`qr_sampler.errors.QRSamplerError`), and
:func:`report_for` looks the exception up in :func:`error_table` — subclasses before their
parents, because the first matching row decides — for the exit code and a fallback hint.
Commands therefore never re-wrap a library error just to keep its hint.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

EXIT_FAILED = 1
EXIT_USAGE = 2
#: Ctrl-C: 128 + SIGINT, as shells report a command the user interrupted.
EXIT_INTERRUPTED = 130


class CLIError(Exception):
    """A problem to report to the user in one line, with a hint and an exit code."""

    def __init__(self, message: str, hint: str = "", exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.exit_code = exit_code


@dataclass(frozen=True)
class ErrorReport:
    """What the user sees for one error: the ``Error:`` line, the ``Hint:`` line, the code."""

    message: str
    hint: str
    exit_code: int


@dataclass(frozen=True)
class ErrorRule:
    """One row of the table: errors of type ``error`` exit with ``exit_code``; ``hint`` is used
    when the error carries none of its own."""

    error: type[BaseException]
    exit_code: int
    hint: str = ""


@cache
def error_table() -> tuple[ErrorRule, ...]:
    """Every error ``qrs`` knows, most specific first (the first matching row wins).

    Built on first use: the server's error class lives next to pydantic-based code, which
    ``qrs --help`` must not import.
    """
    from qr_sampler.envkeys import ApiKeyVariableError
    from qr_sampler.errors import (
        EntropyBudgetExhaustedError,
        EntropyError,
        QRSamplerError,
        SettingsError,
    )
    from qr_sampler.server.config import EntropyServerError

    return (
        # Before SettingsError's generic hint: RequestArgumentError is a SettingsError.
        ErrorRule(SettingsError, EXIT_USAGE,
                  "run `qrs settings` to list every key and what it accepts"),
        ErrorRule(ApiKeyVariableError, EXIT_USAGE,
                  "export the key first (`read -rs QRS_KEY && export QRS_KEY`), then pass "
                  "--api-key-env QRS_KEY"),
        # The server cannot start as configured (an option, a taken port, a TLS file): the
        # same code `python -m qr_sampler.server` exits with.
        ErrorRule(EntropyServerError, EXIT_USAGE, "see `qrs serve-entropy -h`"),
        # Before EntropyError: a limit, not a broken server.
        ErrorRule(EntropyBudgetExhaustedError, EXIT_FAILED,
                  "a rate limit or the daily byte budget forbids more entropy now; wait, or "
                  "raise QR_GRPC_RATE_LIMIT_PER_MIN / QR_GRPC_DAILY_BYTE_BUDGET if the server "
                  "allows"),
        ErrorRule(EntropyError, EXIT_FAILED,
                  "check the entropy server with `qrs probe PROFILE`"),
        ErrorRule(QRSamplerError, EXIT_FAILED),
        # Last: the operating system refused something (a full disk, a read-only folder).
        ErrorRule(OSError, EXIT_FAILED, "check the path, its permissions and the free space"),
    )


def report_for(exc: BaseException) -> ErrorReport | None:
    """Translate a known exception into what the user sees; None for unknown (a bug)."""
    if isinstance(exc, CLIError):
        return ErrorReport(exc.message, exc.hint, exc.exit_code)
    for rule in error_table():
        if isinstance(exc, rule.error):
            hint = str(getattr(exc, "hint", "") or "") or rule.hint
            return ErrorReport(_message(exc), hint, rule.exit_code)
    return None


def _message(exc: BaseException) -> str:
    """The one-line message: ``OSError``s name the file, library errors say it themselves."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    text = str(exc).strip()
    return " ".join(text.split()) if text else type(exc).__name__

"""User-facing CLI errors and the single place that maps library errors to messages.

A command raises :class:`CLIError` (or lets a library error escape); ``main()`` catches once and
prints ``Error: …`` and ``Hint: …`` to stderr with the exit code. ``QRS_DEBUG=1`` re-raises so the
full traceback is shown.
"""

from __future__ import annotations

from dataclasses import dataclass

from qr_sampler.errors import EntropyError, QRSamplerError, SettingsError

EXIT_FAILED = 1
EXIT_USAGE = 2


class CLIError(Exception):
    """A problem to report to the user in one line, with a hint and an exit code."""

    def __init__(self, message: str, hint: str = "", exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.exit_code = exit_code


@dataclass(frozen=True)
class ErrorReport:
    message: str
    hint: str
    exit_code: int


def report_for(exc: BaseException) -> ErrorReport | None:
    """Translate a known exception into what the user sees; None for unknown (a bug)."""
    # Most specific first: SettingsError before the QRSamplerError root.
    if isinstance(exc, CLIError):
        return ErrorReport(exc.message, exc.hint, exc.exit_code)
    if isinstance(exc, SettingsError):
        hint = exc.hint or "run `qrs settings` to list every key and what it accepts"
        return ErrorReport(str(exc), hint, EXIT_USAGE)
    if isinstance(exc, EntropyError):
        return ErrorReport(
            str(exc), "check the entropy server with `qrs probe PROFILE`", EXIT_FAILED
        )
    if isinstance(exc, QRSamplerError):
        return ErrorReport(str(exc), "", EXIT_FAILED)
    return None

"""The probe library's error: a CLIError, so ``qrs``'s single handler reports it unchanged.

The tree::

    CLIError (qrs_cli.errors)     message + hint + exit code, printed as Error:/Hint:
    └── ProbeError                the probe cannot start: bad flag, unreadable profile, bad setting

A server that misbehaves is never an exception: it is a failed stage in the report. Messages
never contain a secret (they never quote the API key, header values or the variable that
``--api-key-env`` names, which users sometimes fill with the key itself).
"""

from __future__ import annotations

from qrs_cli.errors import EXIT_USAGE, CLIError


class ProbeError(CLIError):
    """Raised when the probe target cannot be resolved; exit 2 (usage) unless said otherwise."""

    def __init__(self, message: str, hint: str = "", exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message, hint, exit_code)

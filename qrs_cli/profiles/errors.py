"""The profile library's error: a CLIError, so ``qrs``'s single handler reports it unchanged.

The tree::

    CLIError (qrs_cli.errors)         message + hint + exit code, printed as Error:/Hint:
    └── ProfileError                  a profile cannot be found, named, read or written

Settings problems inside a profile are not raised: validation returns them as findings.
"""

from __future__ import annotations

from qrs_cli.errors import EXIT_USAGE, CLIError


class ProfileError(CLIError):
    """Raised when a profile operation cannot proceed; exit 2 unless said otherwise."""

    def __init__(self, message: str, hint: str = "", exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message, hint, exit_code)

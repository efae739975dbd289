"""The runtime library's error: a CLIError, so ``qrs``'s single handler reports it unchanged.

The tree::

    CLIError (qrs_cli.errors)     message + hint + exit code, printed as Error:/Hint:
    └── LaunchError               a stack cannot be planned, started, stopped or inspected

Exit codes: 2 when the command line is wrong (an unknown profile or service, options that do
not fit the runtime); 1 when a check or a step fails (the profile does not validate, a port is
taken, the entropy server fails its probe, a process dies, readiness times out, Compose
refuses); 130 when the user interrupts a launch.
Messages never contain a secret: values of secret keys are masked before any text is built.
"""

from __future__ import annotations

from qrs_cli.errors import EXIT_FAILED, EXIT_INTERRUPTED, CLIError

__all__ = ["EXIT_INTERRUPTED", "LaunchError"]


class LaunchError(CLIError):
    """Raised when a launch step cannot proceed; exit 1 (a step failed) unless said otherwise."""

    def __init__(self, message: str, hint: str = "", exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message, hint, exit_code)

"""The Kubernetes renderer's error: a CLIError, so ``qrs``'s single handler reports it unchanged.

The tree::

    CLIError (qrs_cli.errors)     message + hint + exit code, printed as Error:/Hint:
    └── RenderError               a profile cannot be rendered, or the output folder refused

Exit codes: 2 for bad input (an output folder that is not ours, files that exist without
``--force``, a bad namespace); 1 when the profile fails validation or a file cannot be written.
"""

from __future__ import annotations

from qrs_cli.errors import EXIT_USAGE, CLIError


class RenderError(CLIError):
    """Raised when the manifests cannot be rendered or written; exit 2 unless said otherwise."""

    def __init__(self, message: str, hint: str = "", exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message, hint, exit_code)

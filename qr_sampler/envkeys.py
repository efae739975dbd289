"""Reading an API key from a named environment variable — the one way keys enter a command.

Keys never travel as flag values (shell history, ``ps``). Users sometimes pass the key itself
where the variable's *name* belongs, so no message here ever repeats what was passed.
Pure Python (no pydantic), so command lines can import it cheaply.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from qr_sampler.errors import QRSamplerError

_VAR_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ApiKeyVariableError(QRSamplerError):
    """Raised when the named variable is not a variable name, or is unset or empty."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


def api_key_from_env(variable: str, environ: Mapping[str, str] | None = None) -> str:
    """The key held by environment variable ``variable`` (never echoed in errors)."""
    if not _VAR_RE.match(variable):
        raise ApiKeyVariableError(
            "--api-key-env takes the NAME of an environment variable, not the key itself",
            "export the key first, e.g. `read -rs QRS_KEY && export QRS_KEY`, then pass "
            "--api-key-env QRS_KEY",
        )
    value = (os.environ if environ is None else environ).get(variable, "")
    if not value:
        raise ApiKeyVariableError(
            "the variable named by --api-key-env is not set or is empty",
            "export it first without echoing the key: `read -rs QRS_KEY && export QRS_KEY`",
        )
    return value

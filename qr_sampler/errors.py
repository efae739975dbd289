"""Errors raised by qr_sampler.

The tree::

    QRSamplerError                      root: catch this to catch everything below
    ├── SettingsError                   configuration is wrong (env, .env file, overrides)
    │   └── RequestArgumentError        a request's ``qr_*`` argument is wrong (also a ValueError,
    │                                   so vLLM's ``validate_params`` turns it into HTTP 400)
    └── EntropyError                    an entropy source could not deliver what was asked
        ├── EntropyUnavailableError     the source failed (I/O, RPC, device) or is switched off
        └── EntropyBudgetExhaustedError a configured limit (rate, daily bytes) forbids drawing now

Messages never contain secret values: settings errors mask secret fields as ``****``.
"""

from __future__ import annotations

from dataclasses import dataclass


class QRSamplerError(Exception):
    """Root of every error this package raises on purpose."""


@dataclass(frozen=True)
class SettingProblem:
    """One thing wrong with one setting: which key, what value (masked if secret), why."""

    key: str
    value: str
    message: str

    def __str__(self) -> str:
        shown = f"={self.value}" if self.value != "" else ""
        return f"{self.key}{shown}: {self.message}"


class SettingsError(QRSamplerError):
    """Raised when settings fail validation; ``problems`` lists every problem found."""

    def __init__(self, problems: list[SettingProblem], hint: str = "") -> None:
        self.problems = list(problems)
        self.hint = hint
        summary = "; ".join(str(p) for p in self.problems) or "invalid settings"
        super().__init__(summary)


class RequestArgumentError(SettingsError, ValueError):
    """Raised when a per-request ``qr_*`` argument has an unknown name or a bad value."""


class EntropyError(QRSamplerError):
    """Raised when an entropy source cannot deliver the requested bytes."""


class EntropyUnavailableError(EntropyError):
    """Raised when a source fails (I/O, RPC error, short reply, device) or is closed."""


class EntropyBudgetExhaustedError(EntropyError):
    """Raised when a configured rate limit or daily byte budget forbids drawing more bytes now."""

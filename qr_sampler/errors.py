"""Errors raised by qr_sampler.

The tree::

    QRSamplerError                      root: catch this to catch everything below
    ├── SettingsError                   configuration is wrong (env, .env file, overrides)
    │   └── RequestArgumentError        a request's ``qr_*`` argument is wrong (also a ValueError,
    │                                   so vLLM's ``validate_params`` turns it into HTTP 400)
    └── EntropyError                    an entropy source could not deliver what was asked
        ├── EntropyUnavailableError     the source failed (I/O, RPC, device, health test, wrong
        │                               echo) or is switched off
        └── EntropyBudgetExhaustedError a configured limit (rate, daily bytes) forbids drawing now

Every EntropyError carries ``kind``, a machine-readable category (one of
:data:`ENTROPY_ERROR_KINDS`) that the sampler copies into ``EntropyBatch.fallback_kind`` and the
metrics count by; the message is for humans. Messages never contain secret values: settings
errors mask secret fields as ``****``.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Why an entropy fetch failed, as ``EntropyError.kind`` and ``EntropyBatch.fallback_kind`` say:
#: the server cannot be reached or failed (``unavailable``), a call ran out of time
#: (``timeout``), the circuit breaker is pausing calls (``circuit_open``), a client or server rate
#: limit (``rate_limit``), the daily byte budget (``budget``), the bytes failed the online health
#: tests (``health_test``), the server did not echo the nonce it was sent (``echo_mismatch``),
#: anything else (``error``).
ENTROPY_ERROR_KINDS = (
    "unavailable", "timeout", "circuit_open", "rate_limit", "budget", "health_test",
    "echo_mismatch", "error",
)  # fmt: skip


class QRSamplerError(Exception):
    """Root of every error this package raises on purpose.

    ``hint`` says what to do about it ('' when there is nothing useful to add); front ends
    (``qrs``) print it as ``Hint: …``. It is a keyword here, so ``QRSamplerError(msg, hint=…)``
    works for the root and for every subclass without a constructor of its own; subclasses with
    their own constructor keep their signatures, and a ``self.hint`` they set (before or after
    calling this) is kept.
    """

    #: The class default: no hint.
    hint: str = ""

    def __init__(self, *args: object, hint: str = "") -> None:
        super().__init__(*args)
        if hint:
            self.hint = hint


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
    """Raised when an entropy source cannot deliver the requested bytes.

    ``kind`` (keyword-only, default: the class's own) is one of :data:`ENTROPY_ERROR_KINDS`; an
    unknown value becomes ``error`` so a consumer's table of kinds always covers it.
    """

    #: The category when the raiser names none.
    default_kind = "error"

    def __init__(self, *args: object, kind: str = "") -> None:
        super().__init__(*args)
        kind = kind or self.default_kind
        self.kind = kind if kind in ENTROPY_ERROR_KINDS else "error"


class EntropyUnavailableError(EntropyError):
    """Raised when a source fails (I/O, RPC error, short reply, device, health test, wrong echo)
    or is closed."""

    default_kind = "unavailable"


class EntropyBudgetExhaustedError(EntropyError):
    """Raised when a configured rate limit or daily byte budget forbids drawing more bytes now."""

    default_kind = "budget"

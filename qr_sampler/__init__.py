"""qr_sampler: pick every LLM token with entropy fetched just-in-time from a (quantum) RNG.

Public API (pinned by ``tests/sampler/test_public_api.py``):

- :class:`Settings` — the settings schema (``Settings()`` reads ``QR_*`` from the environment);
  :func:`load_settings` loads it strictly with precise errors.
- :class:`EntropySource` — the interface of every entropy source;
  :func:`build_entropy_source` returns the configured source wrapped in its fallback.
- :class:`SamplingConfig`, :class:`TokenSampler`, :class:`TokenRecord`, :class:`EntropyBatch` —
  the engine-neutral sampler core and its value types.
- The error tree rooted at :class:`QRSamplerError`.

Importing this package loads neither torch, vllm nor grpc: :class:`TokenSampler` (which needs
torch) is imported on first access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qr_sampler.entropy.base import EntropySource
from qr_sampler.entropy.registry import available_source_names, build_entropy_source
from qr_sampler.errors import (
    EntropyBudgetExhaustedError,
    EntropyError,
    EntropyUnavailableError,
    QRSamplerError,
    RequestArgumentError,
    SettingProblem,
    SettingsError,
)
from qr_sampler.settings import Settings, load_settings, resolve_request_overrides
from qr_sampler.types import EntropyBatch, SamplingConfig, TokenRecord

if TYPE_CHECKING:
    from qr_sampler.sampler import TokenSampler

__version__ = "0.1.0"

__all__ = [
    "EntropyBatch",
    "EntropyBudgetExhaustedError",
    "EntropyError",
    "EntropySource",
    "EntropyUnavailableError",
    "QRSamplerError",
    "RequestArgumentError",
    "SamplingConfig",
    "SettingProblem",
    "Settings",
    "SettingsError",
    "TokenRecord",
    "TokenSampler",
    "__version__",
    "available_source_names",
    "build_entropy_source",
    "load_settings",
    "resolve_request_overrides",
]


def __getattr__(name: str) -> Any:
    if name == "TokenSampler":  # needs torch: import only when asked for
        from qr_sampler.sampler import TokenSampler

        return TokenSampler
    raise AttributeError(f"module 'qr_sampler' has no attribute {name!r}")

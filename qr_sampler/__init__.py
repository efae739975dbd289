"""qr_sampler: pick every LLM token with entropy fetched just-in-time from a (quantum) RNG.

Public API (pinned by ``tests/sampler/test_public_api.py``):

- :class:`Settings` — the settings schema (``Settings()`` reads ``QR_*`` from the environment);
  :func:`load_settings` loads it strictly with precise errors.
- :class:`EntropySource` — the interface of every entropy source;
  :func:`build_entropy_source` returns the configured source wrapped in its fallback.
- :class:`SamplingConfig`, :class:`TokenSampler`, :class:`TokenRecord`, :class:`EntropyBatch` —
  the engine-neutral sampler core and its value types.
- The error tree rooted at :class:`QRSamplerError`.

Importing this package loads neither torch, vllm nor grpc: every public name is imported on
first access, so :class:`TokenSampler` (which needs torch) costs nothing until used.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
    from qr_sampler.sampler import TokenSampler
    from qr_sampler.settings import Settings, load_settings, resolve_request_overrides
    from qr_sampler.types import EntropyBatch, SamplingConfig, TokenRecord

__version__ = "0.1.0"

#: Public name → defining module. Names load on first access (PEP 562), so importing a light
#: submodule such as ``qr_sampler.errors`` does not pay for pydantic, and ``TokenSampler``
#: (which needs torch) loads only when asked for.
_EXPORTS = {
    "EntropyBatch": "qr_sampler.types",
    "EntropyBudgetExhaustedError": "qr_sampler.errors",
    "EntropyError": "qr_sampler.errors",
    "EntropySource": "qr_sampler.entropy.base",
    "EntropyUnavailableError": "qr_sampler.errors",
    "QRSamplerError": "qr_sampler.errors",
    "RequestArgumentError": "qr_sampler.errors",
    "SamplingConfig": "qr_sampler.types",
    "SettingProblem": "qr_sampler.errors",
    "Settings": "qr_sampler.settings",
    "SettingsError": "qr_sampler.errors",
    "TokenRecord": "qr_sampler.types",
    "TokenSampler": "qr_sampler.sampler",
    "available_source_names": "qr_sampler.entropy.registry",
    "build_entropy_source": "qr_sampler.entropy.registry",
    "load_settings": "qr_sampler.settings",
    "resolve_request_overrides": "qr_sampler.settings",
}

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
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'qr_sampler' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # cache: later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])

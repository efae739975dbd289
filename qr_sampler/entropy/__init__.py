"""Entropy sources: the interface, the built-ins, the registry and the fallback wrapper."""

from qr_sampler.entropy.base import EntropySource
from qr_sampler.entropy.fallback import FallbackEntropySource
from qr_sampler.entropy.registry import (
    ENTRY_POINT_GROUP,
    available_source_names,
    build_entropy_source,
    create_source,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "EntropySource",
    "FallbackEntropySource",
    "available_source_names",
    "build_entropy_source",
    "create_source",
]

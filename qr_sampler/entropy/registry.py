"""Finds entropy sources by name: built-ins, then the entry-point group for third parties.

A third-party package registers ``[project.entry-points."qr_sampler.entropy_sources"]
my_source = "my_pkg.module:MySource"``, where ``MySource`` subclasses EntropySource (its
``from_settings`` classmethod builds it). Built-ins are imported lazily so that, e.g., grpc is only
imported when the ``quantum_grpc`` source is chosen.
"""

from __future__ import annotations

import importlib
from functools import cache
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from qr_sampler.errors import EntropyUnavailableError, SettingProblem, SettingsError

if TYPE_CHECKING:
    from qr_sampler.entropy.base import EntropySource
    from qr_sampler.settings import Settings

ENTRY_POINT_GROUP = "qr_sampler.entropy_sources"

_BUILTINS: dict[str, str] = {
    "system": "qr_sampler.entropy.system:SystemEntropySource",
    "quantum_grpc": "qr_sampler.entropy.quantum_grpc:QuantumGrpcEntropySource",
    "mock_uniform": "qr_sampler.entropy.mock:MockUniformEntropySource",
    "timing_noise": "qr_sampler.entropy.timing:TimingNoiseEntropySource",
}


@cache
def _plugin_entry_points() -> dict[str, str]:
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_source_names() -> list[str]:
    """Built-in names first, then plugin names (a plugin cannot shadow a built-in)."""
    plugins = [n for n in sorted(_plugin_entry_points()) if n not in _BUILTINS]
    return [*_BUILTINS, *plugins]


def source_class(name: str) -> type[EntropySource]:
    """Import and return the class registered under ``name``."""
    from qr_sampler.entropy.base import EntropySource

    target = _BUILTINS.get(name) or _plugin_entry_points().get(name)
    if target is None:
        raise SettingsError(
            [SettingProblem("QR_ENTROPY_SOURCE_TYPE", name, "unknown source")],
            hint="available: " + ", ".join(available_source_names()),
        )
    module_name, _, attr = target.partition(":")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise EntropyUnavailableError(
            f"entropy source {name!r} cannot be loaded from {target}: {exc}"
        ) from exc
    if not (isinstance(obj, type) and issubclass(obj, EntropySource)):
        raise EntropyUnavailableError(f"{target} is not an EntropySource subclass")
    return obj


def create_source(name: str, settings: Settings) -> EntropySource:
    """Instantiate the source registered under ``name`` from settings (no I/O happens here)."""
    return source_class(name).from_settings(settings)


def build_entropy_source(settings: Settings | None = None) -> EntropySource:
    """The configured source wrapped in its fallback (``QR_FALLBACK_MODE``) and the online
    health tests (``QR_HEALTH_*``).

    With ``settings=None`` settings are loaded from the environment and ``./.env``.
    """
    from qr_sampler.entropy.fallback import FallbackEntropySource
    from qr_sampler.settings import load_settings

    settings = settings if settings is not None else load_settings()
    primary = create_source(settings.entropy_source_type, settings)
    fallback = (
        None
        if settings.fallback_mode == "error"
        else create_source(settings.fallback_mode, settings)
    )
    tests = None
    if settings.health_tests:
        from qr_sampler.entropy.health import HealthTests  # numpy: only when tests are on

        tests = HealthTests(settings.health_min_entropy, settings.health_alpha_exponent)
    return FallbackEntropySource(primary, fallback, health_tests=tests)

"""``qrs profile list``: one summary row per profile, from the same validation as ``validate``."""

from __future__ import annotations

from qr_sampler.settings import setting_specs
from qrs_cli.profiles.answers import GRPC_SOURCE, SOURCE_KEY
from qrs_cli.profiles.discovery import ProjectLayout, profile_names
from qrs_cli.profiles.sources import load_sources
from qrs_cli.profiles.types import ProfileSummary
from qrs_cli.profiles.validate import validate_profile


def summarize_profiles(layout: ProjectLayout) -> list[ProfileSummary]:
    """Every profile (templates excluded), sorted by name."""
    defaults = {s.env_key: s.default for s in setting_specs()}
    summaries = []
    for name in profile_names(layout):
        sources = load_sources(layout, name)
        values = {**defaults, **sources.merged()}
        report = validate_profile(layout, name)
        grpc = values.get(SOURCE_KEY) == GRPC_SOURCE
        summaries.append(
            ProfileSummary(
                name=name,
                source=values.get(SOURCE_KEY, ""),
                address=values.get("QR_GRPC_SERVER_ADDRESS", "") if grpc else "",
                mode=values.get("QR_GRPC_MODE", "") if grpc else "",
                errors=len(report.errors),
                warnings=len(report.warnings),
            )
        )
    return summaries

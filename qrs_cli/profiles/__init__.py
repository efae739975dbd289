"""Deployment profiles: find, make, render, resolve and validate ``deployments/<name>/``.

The library behind ``qrs profile``; it imports neither typer nor rich, and returns data
(:class:`ProfilePlan`, :class:`ValidationReport` of :class:`Finding`, :class:`ResolvedSetting`)
that the commands render as text or JSON. Modules, one job each:

- ``discovery``: where the project and its profiles are; safe names.
- ``stack``: the stack settings (model, ports, images, runtime), beside the sampler schema.
- ``answers`` / ``interview`` / ``create``: from flags, prompts and ``--from`` to checked answers.
- ``render`` / ``writer``: Jinja templates to files; atomic writes, secrets with mode 0600.
- ``sources``: a profile's layered values and their origins.
- ``validate`` / ``secrets_check`` / ``compose``: findings, from the schema to ``compose config``.
- ``shipped``: the profiles committed in ``deployments/``.
- ``project``: ``qrs init`` — a project folder from the package's copy of ``deployments/``.
- ``secrets_file``: one secret into a profile's ``secrets.env``, nothing else touched.
"""

from __future__ import annotations

from qrs_cli.profiles.create import ProfilePlan, ProfileRequest, plan_profile, write_plan
from qrs_cli.profiles.discovery import ProjectLayout, find_project, profile_names
from qrs_cli.profiles.errors import ProfileError
from qrs_cli.profiles.sources import load_sources, resolve_settings
from qrs_cli.profiles.stack import StackSettings, stack_specs
from qrs_cli.profiles.summary import summarize_profiles
from qrs_cli.profiles.types import (
    Finding,
    ProfileSummary,
    RenderedFile,
    ResolvedSetting,
    ValidationReport,
)
from qrs_cli.profiles.validate import validate_profile

__all__ = [
    "Finding",
    "ProfileError",
    "ProfilePlan",
    "ProfileRequest",
    "ProfileSummary",
    "ProjectLayout",
    "RenderedFile",
    "ResolvedSetting",
    "StackSettings",
    "ValidationReport",
    "find_project",
    "load_sources",
    "plan_profile",
    "profile_names",
    "resolve_settings",
    "stack_specs",
    "summarize_profiles",
    "validate_profile",
    "write_plan",
]

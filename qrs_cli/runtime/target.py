"""From a profile name and the command line to a validated :class:`StackTarget`.

``qrs up`` validates with exactly the code of ``qrs profile validate`` before anything starts:
an error stops the launch (exit 1, with the first problem and where it is), warnings are passed
on. The runtime is ``--native``/``--compose`` > ``QRS_RUNTIME`` (process env > profile) >
compose. Validation sees the chosen runtime, so runtime-specific rules (a loopback entropy
address is the vLLM container itself under Compose) apply to the launch that will happen.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from qr_sampler.errors import SettingsError
from qrs_cli.profiles.discovery import ProjectLayout, find_project
from qrs_cli.profiles.sources import ProfileSources, load_sources
from qrs_cli.profiles.stack import ENTROPY_SERVER_ADDRESS, StackSettings, stack_from_mapping
from qrs_cli.profiles.types import Finding
from qrs_cli.profiles.validate import validate_profile
from qrs_cli.runtime.errors import LaunchError
from qrs_cli.runtime.types import RuntimeName

GRPC_SOURCE = "quantum_grpc"


@dataclass(frozen=True)
class StackTarget:
    """A profile ready to launch. ``values`` are the merged profile values (files + process
    environment) and hold secrets: use them to build environments, never to print."""

    layout: ProjectLayout
    sources: ProfileSources
    stack: StackSettings
    runtime: RuntimeName
    values: dict[str, str]
    warnings: tuple[Finding, ...] = field(default=())

    @property
    def profile(self) -> str:
        return self.sources.name

    @property
    def folder(self) -> Path:
        return self.sources.folder

    @property
    def co_located(self) -> bool:
        """The profile runs the reference entropy server next to vLLM."""
        return self.sources.co_located_server

    @property
    def uses_grpc(self) -> bool:
        return self.values.get("QR_ENTROPY_SOURCE_TYPE", "system") == GRPC_SOURCE

    @property
    def entropy_address(self) -> str:
        return self.values.get("QR_GRPC_SERVER_ADDRESS", "localhost:50051")

    @property
    def uses_co_located_server(self) -> bool:
        """vLLM's entropy comes from the server this launch starts."""
        return self.co_located and self.uses_grpc and self.entropy_address == ENTROPY_SERVER_ADDRESS

    @property
    def remote_entropy(self) -> bool:
        """vLLM's entropy comes from a server this launch does not start (probe it first)."""
        return self.uses_grpc and not self.uses_co_located_server

    def secret_values(self) -> list[str]:
        return self.sources.secret_values()


def resolve_target(
    profile: str,
    *,
    root: str | None = None,
    runtime: RuntimeName | None = None,
    environ: Mapping[str, str] | None = None,
    validate: bool = True,
) -> StackTarget:
    """Load, validate and resolve ``profile``; LaunchError (exit 1) when it has errors."""
    environ = dict(os.environ if environ is None else environ)
    layout = find_project(root)
    sources = load_sources(layout, profile, environ)
    merged = sources.merged()
    chosen: RuntimeName = runtime or ("native" if merged.get("QRS_RUNTIME") == "native"
                                      else "compose")
    warnings: tuple[Finding, ...] = ()
    if validate:
        report = validate_profile(layout, profile, {**environ, "QRS_RUNTIME": chosen})
        if report.errors:
            first = report.errors[0]
            where = f"{first.location}: " if first.location else ""
            more = f" (and {len(report.errors) - 1} more)" if len(report.errors) > 1 else ""
            raise LaunchError(
                f"profile {profile!r} is invalid: {where}{first.message}{more}",
                f"run `qrs profile validate {profile}` for every problem and its fix",
            )
        warnings = tuple(report.warnings)
    try:
        stack = stack_from_mapping(merged)
    except SettingsError as exc:
        raise LaunchError(
            f"profile {profile!r}: {exc}", f"run `qrs profile validate {profile}`"
        ) from exc
    return StackTarget(layout, sources, stack, chosen, merged, warnings)

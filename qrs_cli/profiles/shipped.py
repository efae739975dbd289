"""The profiles shipped in ``deployments/``, as the requests that make them.

They are produced by the same :func:`~qrs_cli.profiles.create.plan_profile` as ``qrs profile new``
and a test checks that the committed files equal a fresh render. After changing a template, the
schema or a request below, regenerate them (secrets files are never touched)::

    python -m qrs_cli.profiles.shipped [ROOT]
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

from qrs_cli.profiles.create import ProfilePlan, ProfileRequest, plan_profile, write_plan
from qrs_cli.profiles.discovery import ProjectLayout, find_project

SHIPPED: tuple[ProfileRequest, ...] = (
    # The starting point for hand-made profiles: schema defaults, entropy from the OS.
    ProfileRequest("_template", allow_template=True),
    # The whole pipeline on one machine: the reference server next to vLLM.
    ProfileRequest("urandom", entropy_server=True),
    # The lab's QRNG. Its API key is never in a tracked file (see its README).
    ProfileRequest(
        "firefly-1",
        answers={
            "source": "quantum_grpc",
            "address": "10.0.0.115:50051",
            "method_path": "/qrng.QuantumRNG/GetRandomBytes",
            "stream_method_path": "",
            "mode": "unary",
            "api_key_header": "api-key",
            "max_bytes_per_request": "13312",
            "rate_limit_per_min": "500",
            "daily_byte_budget": "500000000",
            # Intact although above the per-call cap: the client splits it into calls.
            "sample_count": "20480",
        },
        entropy_server=False,
    ),
)


def plan_shipped(layout: ProjectLayout) -> list[ProfilePlan]:
    """Render every shipped profile (nothing written); ``force`` since they exist."""
    return [plan_profile(layout, replace(request, force=True), environ={}) for request in SHIPPED]


def regenerate(layout: ProjectLayout) -> list[Path]:
    """Write every shipped profile into ``layout``; returns the files written."""
    written: list[Path] = []
    for plan in plan_shipped(layout):
        written += write_plan(layout, plan, force=True).written
    return written


if __name__ == "__main__":
    project = find_project(sys.argv[1] if len(sys.argv) > 1 else None)
    for path in regenerate(project):
        sys.stdout.write(f"{project.relative(path)}\n")

"""Making a profile: request → answers → schema check → rendered files (→ atomic write).

:func:`plan_profile` is the one code path behind ``qrs profile new`` and the shipped profiles
(:mod:`qrs_cli.profiles.shipped`), so the committed ``deployments/`` folders are exactly what the
command produces. Nothing is written until every answer passed the schemas.

Updating an existing profile (``new --force``; ``keep_existing``) starts from that profile's own
values, copier-style: every value the user does not give again is kept, and
:func:`plan_changes` says what the new files would change (a diff per file) before anything is
written, so no limit is ever reset silently.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from pydantic import SecretStr

from qr_sampler.envkeys import ApiKeyVariableError, api_key_from_env
from qrs_cli.profiles.answers import (
    GRPC_SOURCE,
    QUESTION_BY_NAME,
    ProfileAnswers,
    answers_from_profile,
    check_answers,
    parse_assignments,
)
from qrs_cli.profiles.discovery import ENV_FILE, ProjectLayout, check_name
from qrs_cli.profiles.errors import ProfileError
from qrs_cli.profiles.interview import (
    API_KEY_QUESTION,
    ENTROPY_SERVER_QUESTION,
    Asker,
    interview,
)
from qrs_cli.profiles.render import render_profile
from qrs_cli.profiles.secrets_check import is_secret_key
from qrs_cli.profiles.sources import load_sources, require_readable
from qrs_cli.profiles.types import RenderedFile
from qrs_cli.profiles.writer import refuse_existing, write_profile


@dataclass(frozen=True)
class ProfileRequest:
    """What the user asked for: flag answers by question name, and the other options."""

    name: str
    answers: Mapping[str, str] = field(default_factory=dict)
    entropy_server: bool | None = None
    from_profile: str = ""
    assignments: tuple[str, ...] = ()
    api_key_env: str = ""
    force: bool = False
    allow_template: bool = False
    #: Start from the existing profile's values (an update); ``from_profile`` wins when given.
    keep_existing: bool = False


@dataclass(frozen=True)
class ProfilePlan:
    """The files a request produces and where they go (``written`` is empty for a dry run)."""

    name: str
    folder: Path
    answers: ProfileAnswers
    files: tuple[RenderedFile, ...]
    written: tuple[Path, ...] = ()


def plan_profile(
    layout: ProjectLayout,
    request: ProfileRequest,
    *,
    asker: Asker | None = None,
    environ: Mapping[str, str] | None = None,
) -> ProfilePlan:
    """Resolve the answers (flags > prompts > ``--from`` > defaults), check them, render."""
    check_name(request.name, allow_template=request.allow_template)
    refuse_existing(layout, request.name, force=request.force)
    environ = os.environ if environ is None else environ
    answers = _starting_point(layout, request)
    if request.entropy_server is not None:
        answers = answers.with_entropy_server(request.entropy_server)
    for name, value in request.answers.items():
        answers = answers.answer(QUESTION_BY_NAME[name], value)
    for key, value in parse_assignments(list(request.assignments)):
        if is_secret_key(key):
            raise ProfileError(
                f"{key} is a secret, and secrets never go into .env (it is meant for git)",
                "use --api-key-env VAR for the API key; other secrets go into secrets.env",
            )
        answers = answers.set_key(key, value)
    if request.api_key_env:
        answers = replace(answers, api_key=_key_from_env(request.api_key_env, environ))
    if asker is not None:
        answered = frozenset(request.answers)
        if request.entropy_server is not None:
            answered |= {ENTROPY_SERVER_QUESTION}
        if request.api_key_env:
            answered |= {API_KEY_QUESTION}
        answers = interview(answers, asker, answered)
    if answers.api_key is not None and answers.source != GRPC_SOURCE:
        raise ProfileError(
            f"an API key only applies to QR_ENTROPY_SOURCE_TYPE={GRPC_SOURCE}",
            f"add --source {GRPC_SOURCE}, or drop --api-key-env",
        )
    answers = answers.completed()
    check_answers(answers)
    return ProfilePlan(
        request.name, layout.profile_dir(request.name), answers, tuple(render_profile(answers))
    )


def write_plan(layout: ProjectLayout, plan: ProfilePlan, *, force: bool) -> ProfilePlan:
    """Write a plan's files atomically; return the plan with the written paths.

    A new API key for a profile that already has a secrets file is merged into it (its other
    lines, e.g. ``HF_TOKEN``, are kept) rather than replacing the file.
    """
    from qrs_cli.profiles.discovery import SECRETS_FILE
    from qrs_cli.profiles.secrets_file import store_secret

    files = list(plan.files)
    merge_key = (plan.folder / SECRETS_FILE).is_file() and plan.answers.api_key is not None and any(
        f.secret for f in files)
    if merge_key:
        files = [f for f in files if not f.secret]
    written = write_profile(layout, plan.name, files, force=force)
    if merge_key:
        assert plan.answers.api_key is not None
        stored = store_secret(layout, plan.name, "QR_GRPC_API_KEY",
                              plan.answers.api_key.get_secret_value())
        written.append(stored.path)
    return replace(plan, written=tuple(written))


def _starting_point(layout: ProjectLayout, request: ProfileRequest) -> ProfileAnswers:
    base = request.from_profile
    # An existing profile whose .env is gone has nothing to keep: recreate it from defaults
    # (the hint for a missing .env sends users here).
    if not base and request.keep_existing and (
            layout.profile_dir(request.name) / ENV_FILE).is_file():
        base = request.name
    if not base:
        return ProfileAnswers(name=request.name)
    # environ={}: the process environment's QR_* must not leak into the files written.
    sources = load_sources(layout, base, environ={})
    require_readable(sources)
    return answers_from_profile(sources, request.name)


@dataclass(frozen=True)
class FileChange:
    """How one file of a profile would change: ``created``, ``changed`` (with a unified
    ``diff``), ``removed`` or ``replaced`` (a secret file: its content is never shown)."""

    name: str
    kind: str
    diff: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"file": self.name, "change": self.kind, "diff": self.diff}


def plan_changes(layout: ProjectLayout, plan: ProfilePlan) -> list[FileChange]:
    """What writing ``plan`` over the existing profile would change, file by file ([] = none).

    Secret files are compared but never shown. The override file is listed as removed when the
    new answers drop the co-located server (the writer deletes it then).
    """
    import difflib

    from qrs_cli.profiles.discovery import OVERRIDE_FILE

    changes = []
    for f in plan.files:
        path = plan.folder / f.name
        rel = layout.relative(path)
        try:
            old = path.read_text(encoding="utf-8-sig") if path.is_file() else None
        except (OSError, UnicodeDecodeError):
            old = ""
        if old == f.content:
            continue
        if f.secret:
            changes.append(FileChange(rel, "created" if old is None else "replaced"))
            continue
        diff = "".join(difflib.unified_diff(
            (old or "").splitlines(keepends=True), f.content.splitlines(keepends=True),
            fromfile=f"a/{rel}" if old is not None else "/dev/null", tofile=f"b/{rel}", n=1))
        changes.append(FileChange(rel, "created" if old is None else "changed", diff))
    override = plan.folder / OVERRIDE_FILE
    if override.is_file() and OVERRIDE_FILE not in {f.name for f in plan.files}:
        changes.append(FileChange(layout.relative(override), "removed"))
    return changes


def _key_from_env(variable: str, environ: Mapping[str, str]) -> SecretStr:
    """The API key from the named variable: keys never travel on a command line."""
    try:
        return SecretStr(api_key_from_env(variable, environ))
    except ApiKeyVariableError as exc:
        raise ProfileError(exc.message, exc.hint) from None

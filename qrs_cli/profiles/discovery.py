"""Where profiles live: ``deployments/`` of the project, found from the working directory.

A project root is a folder holding ``deployments/compose.yaml`` (the base stack). ``--root`` /
``QRS_ROOT`` name it explicitly (the root or its ``deployments/`` folder both work); otherwise
the working directory and its parents are searched, the way git finds its repository.
Folders in ``deployments/`` starting with ``_`` are templates and ``.`` are hidden: not profiles.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path

from qrs_cli.profiles.errors import ProfileError

DEPLOYMENTS = "deployments"
BASE_COMPOSE = "compose.yaml"
#: Added to the base stack when a profile has an API key (the key as a Compose secret).
API_KEY_COMPOSE = "compose.api-key.yaml"
OVERRIDE_FILE = "compose.override.yaml"
ENV_FILE = ".env"
SECRETS_FILE = "secrets.env"
README_FILE = "README.md"

# Compose project names (``qrs-<profile>``) allow only lowercase letters, digits, '-' and '_'.
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,62}$")


@dataclass(frozen=True)
class ProjectLayout:
    """The paths of one project; nothing here touches the disk."""

    root: Path

    @property
    def deployments(self) -> Path:
        return self.root / DEPLOYMENTS

    @property
    def base_compose(self) -> Path:
        return self.deployments / BASE_COMPOSE

    def profile_dir(self, name: str) -> Path:
        return self.deployments / name

    def relative(self, path: Path) -> str:
        """``path`` relative to the root when inside it (for messages), else absolute."""
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)


def find_project(explicit: str | Path | None = None, start: Path | None = None) -> ProjectLayout:
    """Locate the project: ``explicit`` (``--root``/``QRS_ROOT``) or the nearest ancestor."""
    if explicit:
        path = Path(explicit).expanduser().resolve()
        if (path / DEPLOYMENTS).is_dir():
            return ProjectLayout(path)
        if path.name == DEPLOYMENTS and path.is_dir():
            return ProjectLayout(path.parent)
        raise ProfileError(
            f"no {DEPLOYMENTS}/ folder in {path}",
            f"make a project there with `qrs init {path}`, or point --root (or QRS_ROOT) at "
            "a qr-sampler project or its deployments/ folder",
        )
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / DEPLOYMENTS / BASE_COMPOSE).is_file():
            return ProjectLayout(folder)
    raise ProfileError(
        f"no {DEPLOYMENTS}/{BASE_COMPOSE} in {here} or any parent folder",
        "make a project here with `qrs init` (or `qrs init DIR`), or run qrs inside one "
        "(a qr-sampler checkout, or a folder made by qrs init), or pass --root DIR",
    )


def require_base_stack(layout: ProjectLayout) -> None:
    """ProfileError unless the project has its base stack: a profile without it cannot
    validate or launch, so nothing should be written there yet."""
    if layout.base_compose.is_file():
        return
    raise ProfileError(
        f"{layout.relative(layout.base_compose)} (the base stack) is missing in {layout.root}",
        f"run `qrs init {layout.root}` first: it adds the base stack and the shipped profiles "
        "(it never overwrites a file)",
    )


def name_problem(name: str, *, allow_template: bool = False) -> str:
    """Why ``name`` cannot be a profile folder name, or '' when it can."""
    if not name.strip():
        return "the profile name is empty"
    if "/" in name or "\\" in name or name in {".", ".."} or name.startswith("~"):
        return f"{name!r} is a path; a profile name is a plain folder name such as my-qrng"
    if any(ch.isspace() for ch in name):
        return f"{name!r} contains spaces"
    if name.startswith("."):
        return f"{name!r} starts with '.', which hides the folder"
    if name.startswith("_"):
        if allow_template and _NAME_RE.match(name[1:]):
            return ""
        return f"{name!r} starts with '_', which marks templates, not profiles"
    if name != name.lower():
        return f"{name!r} has capital letters; Compose project names are lowercase"
    if not _NAME_RE.match(name):
        return f"{name!r} may contain only a-z, 0-9, '-' and '_' (at most 63 characters)"
    return ""


def check_name(name: str, *, allow_template: bool = False) -> None:
    """Raise ProfileError if ``name`` is not a safe profile folder name."""
    problem = name_problem(name, allow_template=allow_template)
    if problem:
        raise ProfileError(
            f"invalid profile name: {problem}",
            "use lowercase letters, digits, '-' and '_', e.g. `qrs profile new my-qrng`",
        )


def profile_names(layout: ProjectLayout, *, include_templates: bool = False) -> list[str]:
    """Profile folders in ``deployments/``, sorted; templates (``_x``) only when asked."""
    if not layout.deployments.is_dir():
        return []
    names = []
    for entry in layout.deployments.iterdir():
        if not entry.is_dir() or entry.name.startswith("."):
            continue
        if entry.name.startswith("_") and not include_templates:
            continue
        names.append(entry.name)
    return sorted(names)


def existing_profile(layout: ProjectLayout, name: str) -> Path:
    """The folder of an existing profile (templates allowed), or ProfileError with a suggestion."""
    problem = name_problem(name, allow_template=True)
    folder = layout.profile_dir(name)
    if problem or not folder.is_dir():
        known = profile_names(layout, include_templates=True)
        match = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        maybe = f" (did you mean {match[0]}?)" if match else ""
        raise ProfileError(
            f"no profile named {name!r} in {layout.relative(layout.deployments)}/{maybe}",
            "`qrs profile list` shows the profiles; `qrs profile new NAME` makes one",
        )
    return folder

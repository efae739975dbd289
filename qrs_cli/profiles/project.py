"""``qrs init [DIR]``: a project folder made from the installed package, for pip users.

A project is what :func:`~qrs_cli.profiles.discovery.find_project` looks for: a folder whose
``deployments/compose.yaml`` is the base stack. A clone of the repository is one; ``qrs init``
makes another from the files the package carries, so ``profile new``, ``validate`` and ``up``
work without the repository:

- ``deployments/``: the base stack (``compose.yaml``, and ``compose.api-key.yaml`` that adds
  an API key as a Compose secret), its ``.gitignore`` (secrets files) and ``README.md``, and
  the shipped profiles ``_template``, ``urandom`` and ``firefly-1`` — the package data under
  ``qrs_cli/_deployments`` (a link to ``deployments/`` in a checkout, real copies in a wheel);
- ``Dockerfile.vllm`` and ``Dockerfile.entropy-server``, which the base stack builds: in a
  checkout they copy the sources, here they ``pip install`` this release (rendered from the
  templates with the installed version), with ``wheels/`` for offline builds and a
  ``.dockerignore`` that keeps every ``secrets.env`` out of the build context.

Only an explicit list of files is copied — never a ``secrets.env``, never a developer's own
profile that happens to sit next to the shipped ones in a checkout. Nothing is overwritten: when
any target exists, nothing is written and the conflicts are named.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

from qrs_cli.errors import EXIT_FAILED
from qrs_cli.profiles.discovery import (
    API_KEY_COMPOSE,
    BASE_COMPOSE,
    DEPLOYMENTS,
    ENV_FILE,
    OVERRIDE_FILE,
    README_FILE,
)
from qrs_cli.profiles.errors import ProfileError
from qrs_cli.profiles.writer import atomic_write

PACKAGE = "qrs_cli"
#: The package's copy of the repository's ``deployments/`` folder.
DATA_DIR = "_deployments"
#: Files of ``deployments/`` itself that a project needs.
STACK_FILES = (BASE_COMPOSE, API_KEY_COMPOSE, ".gitignore", README_FILE)
#: Files a shipped profile may have (secrets files are never shipped).
PROFILE_FILES = (ENV_FILE, README_FILE, OVERRIDE_FILE)
#: Rendered templates: template name -> path in the project.
PROJECT_TEMPLATES = {
    "Dockerfile.vllm.j2": "Dockerfile.vllm",
    "Dockerfile.entropy-server.j2": "Dockerfile.entropy-server",
    "dockerignore.j2": ".dockerignore",
    "wheels-README.md.j2": "wheels/README.md",
}
_LISTED_CONFLICTS = 5


@dataclass(frozen=True)
class ProjectFile:
    """One file ``qrs init`` writes: its path inside the project and its text."""

    path: str
    content: str


@dataclass(frozen=True)
class InitResult:
    """What ``qrs init`` made: the project root and the files written (relative to it)."""

    root: Path
    files: tuple[str, ...]
    profiles: tuple[str, ...]

    def to_dict(self) -> dict[str, object]:
        return {"root": str(self.root), "files": list(self.files),
                "profiles": list(self.profiles)}


def shipped_profile_names() -> tuple[str, ...]:
    """The profiles ``qrs init`` copies: the requests of :mod:`qrs_cli.profiles.shipped`."""
    from qrs_cli.profiles.shipped import SHIPPED

    return tuple(request.name for request in SHIPPED)


def project_files() -> list[ProjectFile]:
    """Every file of a new project, read from the package (nothing touches the disk)."""
    data = files(PACKAGE).joinpath(DATA_DIR)
    found = [
        ProjectFile(f"{DEPLOYMENTS}/{name}", _read(data.joinpath(name), name))
        for name in STACK_FILES
    ]
    for profile in shipped_profile_names():
        folder = data.joinpath(profile)
        for name in PROFILE_FILES:
            item = folder.joinpath(name)
            if item.is_file():
                found.append(ProjectFile(f"{DEPLOYMENTS}/{profile}/{name}",
                                         _read(item, f"{profile}/{name}")))
    found += _rendered()
    return found


def _read(item: Traversable, name: str) -> str:
    try:
        return item.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(
            f"the installed package lacks {DATA_DIR}/{name} ({type(exc).__name__})",
            "reinstall qr-sampler (pip install --force-reinstall qr-sampler)",
            EXIT_FAILED,
        ) from exc


def _rendered() -> list[ProjectFile]:
    import jinja2

    from qr_sampler import __version__
    from qrs_cli.profiles.render import TEMPLATE_DIR, TEMPLATE_PACKAGE
    from qrs_cli.profiles.stack import DEFAULT_VLLM_BASE_IMAGE

    folder = files(TEMPLATE_PACKAGE).joinpath(TEMPLATE_DIR)
    context = {"version": __version__, "vllm_base_image": DEFAULT_VLLM_BASE_IMAGE}
    rendered = []
    for template, target in PROJECT_TEMPLATES.items():
        text = _read(folder.joinpath(template), f"../{TEMPLATE_DIR}/{template}")
        env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False,
                                 keep_trailing_newline=True)
        rendered.append(ProjectFile(target, env.from_string(text).render(context)))
    return rendered


def init_project(directory: str | Path) -> InitResult:
    """Write a new project into ``directory`` (created if missing); refuse to overwrite.

    Raises ProfileError: exit 2 when ``directory`` is a file or a target exists, 1 when the
    disk refuses a write.
    """
    root = Path(directory).expanduser().resolve()
    if root.exists() and not root.is_dir():
        raise ProfileError(f"{root} exists and is not a folder",
                           "name a new or existing folder, e.g. `qrs init my-project`")
    planned = project_files()
    conflicts = [f.path for f in planned
                 if (root / f.path).exists() or (root / f.path).is_symlink()]
    if conflicts:
        shown = ", ".join(conflicts[:_LISTED_CONFLICTS])
        extra = len(conflicts) - _LISTED_CONFLICTS
        more = f" and {extra} more" if extra > 0 else ""
        raise ProfileError(
            f"{root} already has {shown}{more}; qrs init never overwrites files",
            "choose a new folder (`qrs init NEW-DIR`), or move those files away first",
        )
    written = []
    try:
        for f in planned:
            path = root / f.path
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, f.content, secret=False)
            written.append(f.path)
    except OSError as exc:
        raise ProfileError(
            f"cannot write {root / f.path}: {exc.strerror or exc}",
            "check that the folder is writable and has free space; files written so far: "
            + (", ".join(written) or "none"),
            EXIT_FAILED,
        ) from exc
    return InitResult(root, tuple(written), shipped_profile_names())


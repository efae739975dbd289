"""Rendering a profile's files from the Jinja templates.

The templates are the top-level ``templates/`` folder of the repository; the package reaches them
as ``qrs_cli/_templates`` (a symlink in the checkout, real files in a built wheel), read through
``importlib.resources`` so the same code works from a checkout, an editable install and a wheel.
``StrictUndefined`` turns a missing variable into an error instead of an empty string.

Every comment of a sampler key comes from the settings schema (description, allowed values,
default); stack keys from :mod:`qrs_cli.profiles.stack`. Nothing here writes to disk.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib.resources import files
from typing import TYPE_CHECKING, Any

from qr_sampler.errors import SettingProblem, SettingsError
from qr_sampler.settings import setting_specs
from qrs_cli.profiles.answers import (
    API_KEY_KEY,
    GRPC_SOURCE,
    HEADER_KEY,
    ProfileAnswers,
    default_value,
)
from qrs_cli.profiles.discovery import (
    DEPLOYMENTS,
    ENV_FILE,
    OVERRIDE_FILE,
    README_FILE,
    SECRETS_FILE,
)
from qrs_cli.profiles.stack import StackSettings, stack_env_values, stack_specs
from qrs_cli.profiles.types import RenderedFile

if TYPE_CHECKING:
    import jinja2

TEMPLATE_PACKAGE = "qrs_cli"
TEMPLATE_DIR = "_templates"
ENV_TEMPLATE = "env.j2"
OVERRIDE_TEMPLATE = "compose.override.yaml.j2"
README_TEMPLATE = "README.md.j2"

# Values that need no quotes in both our reader and Compose's (no spaces, '#', quotes or '$').
_BARE_VALUE = re.compile(r"^[\w./:@,+\-\[\]=]*$")


@dataclass(frozen=True)
class _EnvLine:
    key: str
    comment: str
    text: str
    active: bool


def template_names() -> list[str]:
    """The templates shipped with the package (a wheel test checks all are present)."""
    folder = files(TEMPLATE_PACKAGE).joinpath(TEMPLATE_DIR)
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".j2"))


def env_quote(key: str, value: str) -> str:
    """``value`` as ``.env`` text both readers take literally: bare, or in single quotes.

    Single quotes because Compose expands ``$`` inside unquoted and double-quoted values.
    """
    if _BARE_VALUE.match(value):
        return value
    if "'" in value or "\n" in value or "\r" in value:
        raise SettingsError(
            [SettingProblem(key, "", "contains a quote or a line break; .env cannot hold it")],
            hint="choose a value without quotes or line breaks",
        )
    return f"'{value}'"


def render_profile(answers: ProfileAnswers) -> list[RenderedFile]:
    """Render every file of the profile (``secrets.env`` only when an API key was given)."""
    env = _environment()
    context = _context(answers)
    rendered = [RenderedFile(ENV_FILE, env.get_template(ENV_TEMPLATE).render(context))]
    if answers.entropy_server:
        text = env.get_template(OVERRIDE_TEMPLATE).render(context)
        rendered.append(RenderedFile(OVERRIDE_FILE, text))
    rendered.append(RenderedFile(README_FILE, env.get_template(README_TEMPLATE).render(context)))
    if answers.api_key is not None and answers.api_key.get_secret_value():
        rendered.append(RenderedFile(SECRETS_FILE, secrets_text(answers), secret=True))
    return rendered


def secrets_text(answers: ProfileAnswers) -> str:
    """The secrets file: the API key, quoted as needed (mode 0600 is the writer's job)."""
    assert answers.api_key is not None
    key = answers.api_key.get_secret_value()
    return (
        f"# Secrets of profile {answers.name}: git-ignored, mode 0600. Never commit this file.\n"
        f"{API_KEY_KEY}={env_quote(API_KEY_KEY, key)}\n"
    )


def _environment() -> jinja2.Environment:
    import jinja2

    folder = files(TEMPLATE_PACKAGE).joinpath(TEMPLATE_DIR)

    def load(name: str) -> str:
        return folder.joinpath(name).read_text(encoding="utf-8")

    return jinja2.Environment(
        loader=jinja2.FunctionLoader(load),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # .env, YAML and Markdown, never HTML
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _context(answers: ProfileAnswers) -> dict[str, Any]:
    stack_values = {"QRS_PROFILE": answers.name}
    stack_values.update(answers.stack)
    stack = StackSettings.model_validate(stack_values)
    stack_text = stack_env_values(stack, entropy_server=answers.entropy_server)
    stack_lines = [
        _EnvLine(st.env_key, st.description, f"{st.env_key}={env_quote(st.env_key, v)}", True)
        for st in stack_specs()
        if (v := stack_text.get(st.env_key)) is not None
    ]
    return {
        "name": answers.name,
        "deployments": DEPLOYMENTS,
        "stack": stack_lines,
        "stack_defaults": {st.env_key: st.default for st in stack_specs()},
        "sampler_groups": _sampler_groups(answers),
        "extra": [f"{k}={env_quote(k, v)}" for k, v in sorted(answers.extra.items())],
        "entropy_server": answers.entropy_server,
        "grpc": answers.source == GRPC_SOURCE,
        "source": answers.source,
        "settings": {**answers.sampler},
        "needs_api_key": HEADER_KEY in answers.sampler,
        "limits": _limit_lines(answers),
        "has_api_key": answers.api_key is not None and bool(answers.api_key.get_secret_value()),
        "files": {
            "env": ENV_FILE,
            "override": OVERRIDE_FILE,
            "secrets": SECRETS_FILE,
            "readme": README_FILE,
        },
    }


def _limit_lines(answers: ProfileAnswers) -> list[str]:
    """What the gRPC limits mean per token, for the profile README (empty if unparseable)."""

    def number(key: str) -> int:
        return int(answers.sampler.get(key, default_value(key)))

    try:
        count = number("QR_SAMPLE_COUNT")
        cap = number("QR_GRPC_MAX_BYTES_PER_REQUEST")
        rate = number("QR_GRPC_RATE_LIMIT_PER_MIN")
        budget = number("QR_GRPC_DAILY_BYTE_BUDGET")
    except ValueError:
        return []
    if count <= 0:
        return []
    calls = -(-count // cap) if cap > 0 else 1
    lines = [f"Each token draws {count:,} bytes (`QR_SAMPLE_COUNT`)."]
    if cap > 0:
        lines.append(
            f"The server gives at most {cap:,} bytes per call, so the client splits each token's "
            f"bytes into {calls} call{'s' if calls > 1 else ''}."
        )
    if rate > 0:
        lines.append(f"At most {rate:,} calls a minute: about {rate // calls:,} tokens a minute.")
    if budget > 0:
        lines.append(
            f"At most {budget:,} bytes a day (UTC): about {budget // count:,} tokens a day."
        )
    return lines


def _sampler_groups(answers: ProfileAnswers) -> list[tuple[str, list[_EnvLine]]]:
    """Sampler keys in schema order, split where the key family changes."""
    groups: list[tuple[str, list[_EnvLine]]] = []
    seen_grpc = False
    for spec in setting_specs():
        if spec.name.startswith("grpc_"):
            title, seen_grpc = "gRPC entropy server (QR_ENTROPY_SOURCE_TYPE=quantum_grpc)", True
        elif spec.name.startswith("cb_"):
            title = "Circuit breaker of the gRPC client"
        else:
            title = "Amplification, sampling, diagnostics" if seen_grpc else "Entropy source"
        if groups and groups[-1][0] != title and any(t == title for t, _ in groups):
            title = f"{title}, continued"  # a later schema section of the same family
        if not groups or groups[-1][0] != title:
            groups.append((title, []))
        default = spec.default if spec.default != "" else "empty"
        allowed = "" if spec.allowed == "text" else f"{spec.allowed}; "
        comment = f"{spec.description} [{allowed}default: {default}]"
        if spec.secret:
            comment = f"{spec.description} Kept in {SECRETS_FILE} or the environment, never here."
        active = spec.env_key in answers.sampler and spec.env_key != API_KEY_KEY
        value = answers.sampler[spec.env_key] if active else spec.default
        text = f"{spec.env_key}={env_quote(spec.env_key, value) if not spec.secret else ''}"
        groups[-1][1].append(_EnvLine(spec.env_key, comment, text, active))
    return groups

"""Value types shared by the profile modules and the ``qrs profile`` commands.

Plain frozen dataclasses so the same data drives the human output, ``--json`` and the tests.
None of these import pydantic, jinja2 or yaml: the command module can name them for free.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

Severity = Literal["error", "warning"]
#: Where a resolved value came from, lowest precedence first.
Origin = Literal["default", "profile .env", "secrets file", "process env"]
ORIGINS: tuple[Origin, ...] = ("default", "profile .env", "secrets file", "process env")


@dataclass(frozen=True)
class Finding:
    """One problem found in a profile.

    ``file`` is relative to the project root (or ``environment`` for the process environment);
    ``line`` is 1-based, 0 when the problem has no line. ``message`` never holds a secret value.
    """

    severity: Severity
    check: str
    message: str
    hint: str = ""
    key: str = ""
    file: str = ""
    line: int = 0

    @property
    def location(self) -> str:
        """``file:line``, ``file`` or '' — the prefix editors and terminals can jump to."""
        if not self.file:
            return ""
        return f"{self.file}:{self.line}" if self.line else self.file

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ValidationReport:
    """Every finding for one profile, and which tool checked its Compose files."""

    profile: str
    findings: tuple[Finding, ...]
    compose_checker: str = ""

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    def passed(self, *, strict: bool = False) -> bool:
        """No errors (and, with ``strict``, no warnings either)."""
        return not self.errors and not (strict and self.warnings)

    def to_dict(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "valid": self.passed(),
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "compose_checker": self.compose_checker,
            "findings": [f.to_dict() for f in self.findings],
        }


@dataclass(frozen=True)
class ResolvedSetting:
    """One key of a profile after precedence: its value (masked if secret) and its origin."""

    key: str
    value: str
    origin: Origin
    kind: Literal["sampler", "stack"]
    secret: bool = False
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RenderedFile:
    """A file of a profile as it will be written. ``secret`` files are written with mode 0600
    and their contents are never printed."""

    name: str
    content: str
    secret: bool = False


@dataclass(frozen=True)
class ProfileSummary:
    """One row of ``qrs profile list``."""

    name: str
    source: str
    address: str
    mode: str
    errors: int
    warnings: int

    @property
    def valid(self) -> bool:
        return self.errors == 0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["valid"] = self.valid
        return data

"""Value types of ``qrs doctor``: one :class:`Check` per finding, grouped into categories.

Plain frozen dataclasses so the human report, ``--json`` and the tests use the same data. A
check's status is ``ok`` (✓), ``warn`` (! — something is missing or odd, but another way works)
or ``error`` (✗ — this breaks the plugin or every way to run it); only errors make the doctor
exit 1. Every non-ok check carries a hint saying how to fix it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

Status = Literal["ok", "warn", "error"]
MARKS: dict[Status, str] = {"ok": "✓", "warn": "!", "error": "✗"}
_RANK: dict[Status, int] = {"ok": 0, "warn": 1, "error": 2}

#: Categories in report order: key → title. ``runtimes`` is the bottom line, derived from the
#: others once they are done (which ways to run vLLM with the plugin work here, and the one
#: next step); see :mod:`qrs_cli.doctor.bottom_line`.
CATEGORIES: dict[str, str] = {
    "python": "Python & qr-sampler",
    "vllm": "vLLM",
    "docker": "Docker",
    "gpu": "GPU",
    "ports": "Ports",
    "profiles": "Profiles",
    "huggingface": "Hugging Face",
    "disk": "Disk space",
    "runtimes": "Runtimes",
}


@dataclass(frozen=True)
class Check:
    """One finding: what was checked, the verdict, a fix hint when not ok, and details (-v).

    ``alternative`` names the runtime (``native`` or ``compose``) that the end of ``hint``
    suggests instead (``alt_clause``, the exact text); the bottom line drops that clause when
    the runtime cannot start here either, so no two hints send the user back and forth.
    """

    category: str
    name: str
    status: Status
    message: str
    hint: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    alternative: str = ""
    alt_clause: str = ""

    def without_alternative(self) -> Check:
        """This check with the clause that suggests the other runtime removed from its hint."""
        if not self.alt_clause or self.alt_clause not in self.hint:
            return self
        hint = self.hint.replace(self.alt_clause, "").strip(" ;,")
        return replace(self, hint=hint, alternative="", alt_clause="")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "message": self.message,
                "hint": self.hint, "details": self.details}


def ok(category: str, name: str, message: str, **details: Any) -> Check:
    return Check(category, name, "ok", message, "", details)


def warn(category: str, name: str, message: str, hint: str, **details: Any) -> Check:
    return Check(category, name, "warn", message, hint, details)


def with_alternative(check: Check, runtime: str, clause: str) -> Check:
    """``check`` whose hint ends with ``clause``, a suggestion to use ``runtime`` instead."""
    return replace(check, hint=check.hint + clause, alternative=runtime, alt_clause=clause)


def error(category: str, name: str, message: str, hint: str, **details: Any) -> Check:
    return Check(category, name, "error", message, hint, details)


def worst(statuses: list[Status]) -> Status:
    return max(statuses, key=lambda s: _RANK[s], default="ok")


@dataclass(frozen=True)
class CategoryReport:
    """The checks of one category and their combined verdict (the worst of them)."""

    key: str
    title: str
    checks: tuple[Check, ...]

    @property
    def status(self) -> Status:
        return worst([c.status for c in self.checks])

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.key, "title": self.title, "status": self.status,
                "checks": [c.to_dict() for c in self.checks]}


@dataclass(frozen=True)
class DoctorReport:
    """Every category, in order, and how long the doctor took."""

    categories: tuple[CategoryReport, ...]
    duration_s: float

    @property
    def checks(self) -> list[Check]:
        return [c for cat in self.categories for c in cat.checks]

    @property
    def errors(self) -> int:
        return sum(c.status == "error" for c in self.checks)

    @property
    def warnings(self) -> int:
        return sum(c.status == "warn" for c in self.checks)

    @property
    def ok(self) -> bool:
        return self.errors == 0

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "errors": self.errors, "warnings": self.warnings,
                "duration_s": round(self.duration_s, 3),
                "categories": [c.to_dict() for c in self.categories]}

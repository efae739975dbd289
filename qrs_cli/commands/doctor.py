"""``qrs doctor``: is this machine ready to run the plugin, and what is missing?

Thin by design: :func:`~qrs_cli.doctor.run_doctor` gathers the checks and this module renders
them — one line per category with ✓ / ! / ✗, the problems with their fix under it (every check
with its details under ``-v``), then a summary line; or the whole report with ``--json``. Exit
1 only when a check found an error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from qrs_cli import output
from qrs_cli.errors import EXIT_FAILED

if TYPE_CHECKING:
    from qrs_cli.doctor import CategoryReport, Check, DoctorReport

_MARKS = {"ok": "✓", "warn": "!", "error": "✗"}
_COLORS = {"ok": "\033[32m", "warn": "\033[33m", "error": "\033[31m"}


def doctor(
    verbose: Annotated[bool, typer.Option("--verbose", "-v",
                                          help="Show every check and its details.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    root: Annotated[str | None, typer.Option(
        "--root", envvar="QRS_ROOT", metavar="DIR",
        help="Project folder holding deployments/ (default: found from the working "
             "directory).")] = None,
) -> None:
    """Check Python and this package, vLLM, Docker, GPU, ports, profiles, Hugging Face and disk.

    Read-only, offline and quick (under 2 s; every tool it asks has a timeout). Ends with the
    bottom line: which runtimes (compose with a GPU, native) can start here, and the one next
    step. Exit 1 when a check finds an error (x), and nothing being able to start is one;
    warnings (!) leave the exit code 0.
    """
    from qrs_cli.doctor import DoctorContext, run_doctor

    report = run_doctor(DoctorContext(root=root))
    if as_json:
        output.json_data(report.to_dict())
    else:
        _render(report, verbose)
    if not report.ok:
        raise typer.Exit(EXIT_FAILED)


def _mark(status: str) -> str:
    import os
    import sys

    mark = _MARKS[status]
    if os.environ.get("NO_COLOR") or not sys.stdout.isatty():
        return mark
    return f"{_COLORS[status]}{mark}\033[0m"


def _render(report: DoctorReport, verbose: bool) -> None:
    """Categories, then the bottom line (every runtime, shown in full), then the summary with
    the one next step — the last line, where eyes and ``tail -1`` look."""
    step = ""
    for category in report.categories:
        if category.key == "runtimes":
            step = _render_bottom_line(category)
        else:
            _render_category(category, verbose)
    output.data("")
    problems = sum(1 for c in report.categories if c.status != "ok" and c.key != "runtimes")
    if not problems:
        summary = f"✓ No issues found ({report.duration_s:.2f} s)."
    else:
        summary = (f"{'✗' if report.errors else '!'} Doctor found issues in {problems} "
                   f"categor{'y' if problems == 1 else 'ies'}: {report.errors} error(s), "
                   f"{report.warnings} warning(s) ({report.duration_s:.2f} s)."
                   + ("" if verbose else " Run `qrs doctor -v` for details."))
    output.data(summary + (f" Next: {step}" if step else ""))


def _render_category(category: CategoryReport, verbose: bool) -> None:
    shown = [c for c in category.checks if verbose or c.status != "ok"]
    headline = _headline(category.checks)
    output.data(f"[{_mark(category.status)}] {category.title}: {headline}")
    for check in shown:
        output.data(f"    {_mark(check.status)} {check.message}")
        if check.hint:
            output.data(f"      → {check.hint}")
        if verbose:
            for key, value in check.details.items():
                output.data(f"        {key}: {_fmt(value)}")


def _render_bottom_line(bottom: CategoryReport) -> str:
    """Every runtime (whether it can start, and what stops it); returns the next step."""
    runtimes = [c for c in bottom.checks if c.name != "next step"]
    step = next((c for c in bottom.checks if c.name == "next step"), None)
    can = [c.message.removesuffix(" can start here") for c in runtimes if c.status == "ok"]
    headline = (f"can start here: {'; '.join(can)}" if can else
                "nothing here can start vLLM with the plugin yet")
    output.data(f"[{_mark(bottom.status)}] {bottom.title}: {headline}")
    for check in runtimes:
        output.data(f"    {_mark(check.status)} {check.message}")
        if check.hint:
            output.data(f"      → {check.hint}")
    if step is None:
        return ""
    return str(step.details.get("command", "")) or step.hint


def _headline(checks: tuple[Check, ...]) -> str:
    """The category's one-line summary: its worst problem, else its first finding."""
    for status in ("error", "warn"):
        found = [c for c in checks if c.status == status]
        if found:
            more = f" (+{len(found) - 1} more)" if len(found) > 1 else ""
            return found[0].message + more
    return checks[0].message if checks else "nothing to check"


def _fmt(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
    if isinstance(value, list | tuple):
        return ", ".join(map(str, value)) or "-"
    return str(value)


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)

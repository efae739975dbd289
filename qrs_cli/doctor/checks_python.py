"""Python & qr-sampler: the interpreter, the package, its vLLM entry point, its environment.

Everything here is answered in-process from package metadata (no vLLM import, which takes
seconds). ``VLLM_PLUGINS`` is an allow-list of plugin names; vLLM 0.32–0.33 apply it to their
general plugins but load every ``vllm.logits_processors`` entry point regardless — a list
without ``qr_sampler`` is still flagged, since a later vLLM may apply it to this group too.
"""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, entry_points, version

from qrs_cli.doctor.context import DoctorContext
from qrs_cli.doctor.types import Check, error, ok, warn

CATEGORY = "python"
MIN_PYTHON = (3, 11)
_REINSTALL = "reinstall the project: pip install -e . (a checkout) or pip install qr-sampler"


def check_python(ctx: DoctorContext) -> list[Check]:
    checks = [_interpreter(), _package()]
    checks.append(_entry_point())
    checks.append(_plugins_filter(ctx))
    checks.append(_environment(ctx))
    return checks


def _interpreter() -> Check:
    found = ".".join(map(str, sys.version_info[:3]))
    if sys.version_info[:2] < MIN_PYTHON:
        return error(CATEGORY, "interpreter", f"Python {found} is too old (needs ≥ 3.11)",
                     "use Python 3.11 or newer (scripts/setup.sh takes PYTHON=python3.11)",
                     executable=sys.executable)
    return ok(CATEGORY, "interpreter", f"Python {found}", executable=sys.executable)


def _package() -> Check:
    try:
        import qr_sampler
    except ImportError as exc:
        return error(CATEGORY, "package", f"qr_sampler cannot be imported: {exc}", _REINSTALL)
    try:
        installed = version("qr-sampler")
    except PackageNotFoundError:
        installed = "not installed (imported from the working directory)"
    return ok(CATEGORY, "package", f"qr-sampler {qr_sampler.__version__} importable",
              installed=installed, location=str(getattr(qr_sampler, "__file__", "")))


def _entry_point() -> Check:
    from qr_sampler.engine import ENTRY_POINT, ENTRY_POINT_GROUP

    found = {e.name: e.value for e in entry_points(group=ENTRY_POINT_GROUP)}
    if found.get("qr_sampler") == ENTRY_POINT:
        return ok(CATEGORY, "entry point", f"plugin registered ({ENTRY_POINT_GROUP}: "
                                           f"qr_sampler = {ENTRY_POINT})", group=found)
    if "qr_sampler" in found:
        return error(CATEGORY, "entry point",
                     f"the qr_sampler entry point names {found['qr_sampler']}, not {ENTRY_POINT}",
                     _REINSTALL, group=found)
    return error(CATEGORY, "entry point",
                 f"no qr_sampler entry point in {ENTRY_POINT_GROUP}: vLLM would not load the "
                 "plugin", _REINSTALL, group=found)


def _plugins_filter(ctx: DoctorContext) -> Check:
    raw = ctx.environ.get("VLLM_PLUGINS")
    if raw is None:
        return ok(CATEGORY, "VLLM_PLUGINS", "VLLM_PLUGINS is not set: every plugin loads")
    names = [n.strip() for n in raw.split(",") if n.strip()]
    if "qr_sampler" in names:
        return ok(CATEGORY, "VLLM_PLUGINS", "VLLM_PLUGINS includes qr_sampler", value=raw)
    return warn(CATEGORY, "VLLM_PLUGINS",
                f"VLLM_PLUGINS={raw!r} does not list qr_sampler (vLLM 0.32–0.33 still load "
                "logits processors; later versions may not)",
                "add it: VLLM_PLUGINS=" + ",".join([*names, "qr_sampler"]), value=raw)


def _environment(ctx: DoctorContext) -> Check:
    from qr_sampler.errors import SettingsError
    from qr_sampler.settings import load_settings

    keys = sorted(k for k in ctx.environ if k.upper().startswith("QR_"))
    try:
        load_settings(env_file=None, environ=ctx.environ)
    except SettingsError as exc:
        return error(CATEGORY, "QR_ environment",
                     f"the QR_* variables of this shell are invalid: {exc}",
                     "fix or unset them (`qrs settings` lists what each accepts); vLLM would "
                     "refuse to start with them", keys=keys)
    what = f"{len(keys)} QR_* variable(s) set, all valid" if keys else "no QR_* variables set"
    return ok(CATEGORY, "QR_ environment", what, keys=keys)

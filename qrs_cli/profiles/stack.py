"""The stack settings: what Compose and ``qrs`` need that is not a sampler setting.

The sampler's ``QR_*`` keys live only in :mod:`qr_sampler.settings`. The keys here (model, ports,
images, runtime, parallel sizes, further vLLM flags) are read by Docker Compose when it
interpolates ``deployments/compose.yaml`` and by ``qrs``; they sit in the same profile ``.env``
file, and their descriptions become that file's comments exactly as the sampler schema's do.
``deployments/compose.yaml`` repeats each default after ``:-`` so the base stack also runs
without a profile; a test keeps the two in step. Each key is checked alone here; the rules
across the parallel keys, and the vLLM flags they become, live in
:mod:`qrs_cli.profiles.parallel`.

Names avoid the ``VLLM_`` prefix (vLLM warns about unknown ``VLLM_*`` variables) except
``VLLM_PORT``, which the issue fixes and ``Dockerfile.vllm`` unsets inside the container (vLLM
would read it as its internal port).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from qr_sampler.errors import SettingProblem, SettingsError

#: Scope of a key: ``base`` keys are in every profile, ``entropy-server`` keys only in profiles
#: with a co-located reference server (they configure its service in the override file).
Scope = Literal["base", "entropy-server"]

DEFAULT_MODEL = "Qwen/Qwen2.5-1.5B-Instruct"
DEFAULT_VLLM_BASE_IMAGE = "vllm/vllm-openai:v0.33.0"
#: Where the co-located reference server is reached from inside the Compose network.
ENTROPY_SERVER_ADDRESS = "entropy-server:50051"

_IMAGE_RE = re.compile(r"^[a-z0-9][a-z0-9._/\-]*(:[\w][\w.\-]{0,127})?(@sha256:[0-9a-f]{64})?$")
_MODEL_RE = re.compile(r"^[\w.\-/]+$")
_PROFILE_RE = re.compile(r"^[a-z0-9_][a-z0-9_\-]{0,62}$")


def _stack(key: str, default: Any, description: str, scope: Scope = "base", **kw: Any) -> Any:
    return Field(
        default, alias=key, description=description, json_schema_extra={"scope": scope}, **kw
    )


class StackSettings(BaseModel):
    """Stack keys with their defaults. Field aliases are the ``.env`` keys."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    profile: str = _stack(
        "QRS_PROFILE",
        "",
        "This profile's folder name: the base Compose file reads ./<QRS_PROFILE>/.env into vLLM.",
    )
    runtime: Literal["compose", "native"] = _stack(
        "QRS_RUNTIME",
        "compose",
        "How `qrs up` starts vLLM: compose (Docker) or native (vLLM installed on this host).",
    )
    hf_model: str = _stack(
        "HF_MODEL", DEFAULT_MODEL, "Hugging Face model id (or a path in the container) to serve."
    )
    vllm_port: int = _stack(
        "VLLM_PORT", 8000, "Host port of vLLM's OpenAI-compatible API.", ge=1, le=65535
    )
    bind_address: str = _stack(
        "QRS_BIND_ADDRESS",
        "127.0.0.1",
        "Host address the API port is published on; 0.0.0.0 exposes it to your network.",
    )
    gpu_count: str = _stack("QRS_GPU_COUNT", "all", "GPUs reserved for vLLM: all, or a number.")
    # --- parallel vLLM (issue 10): one model replica = TP × PP GPUs, DP replicas ---
    tensor_parallel_size: int = _stack(
        "QRS_TENSOR_PARALLEL_SIZE",
        1,
        "GPUs one model replica is split across (vLLM --tensor-parallel-size); entropy is "
        "drawn once per replica, not once per GPU.",
        ge=1,
        le=1024,
    )
    pipeline_parallel_size: int = _stack(
        "QRS_PIPELINE_PARALLEL_SIZE",
        1,
        "Pipeline stages of one replica (--pipeline-parallel-size); a replica uses TP × PP GPUs.",
        ge=1,
        le=1024,
    )
    data_parallel_size: int = _stack(
        "QRS_DATA_PARALLEL_SIZE",
        1,
        "Independent model replicas (--data-parallel-size; pod replicas on Kubernetes); each "
        "draws its own entropy.",
        ge=1,
        le=1024,
    )
    max_model_len: str = _stack(
        "QRS_MAX_MODEL_LEN",
        "",
        "Context length in tokens (--max-model-len); empty = the model's own (512 on CPU).",
    )
    gpu_memory_utilization: str = _stack(
        "QRS_GPU_MEMORY_UTILIZATION",
        "",
        "Share of each GPU's memory vLLM may use, above 0 and at most 1 "
        "(--gpu-memory-utilization); empty = vLLM's default.",
    )
    vllm_args: str = _stack(
        "QRS_VLLM_ARGS",
        "",
        "Further vLLM flags, split like a shell line, e.g. --enforce-eager --max-num-seqs 64 "
        "(the flags of the keys above are set by those keys).",
    )
    gpus_per_node: str = _stack(
        "QRS_GPUS_PER_NODE",
        "",
        "GPUs of one cluster node, for `qrs render k8s`: a replica needing more (TP × PP) spans "
        "nodes with Ray; empty = one node holds a replica.",
    )
    hf_cache_dir: str = _stack(
        "HF_CACHE_DIR",
        "",
        "Host folder of the Hugging Face cache for vLLM; empty = $HOME/.cache/huggingface.",
    )
    vllm_base_image: str = _stack(
        "QRS_VLLM_BASE_IMAGE",
        DEFAULT_VLLM_BASE_IMAGE,
        "vLLM OpenAI image Dockerfile.vllm builds on.",
    )
    vllm_image: str = _stack(
        "QRS_VLLM_IMAGE", "qr-sampler-vllm:latest", "Tag of the image built from Dockerfile.vllm."
    )
    entropy_server_image: str = _stack(
        "QRS_ENTROPY_SERVER_IMAGE",
        "qr-sampler-entropy-server:latest",
        "Tag of the image built from Dockerfile.entropy-server.",
        scope="entropy-server",
    )
    entropy_server_port: int = _stack(
        "QRS_ENTROPY_SERVER_PORT",
        50051,
        "Loopback host port of the co-located entropy server (for probing it from the host).",
        scope="entropy-server",
        ge=1,
        le=65535,
    )

    @field_validator("profile")
    @classmethod
    def _profile(cls, value: str) -> str:
        if value and not _PROFILE_RE.match(value):
            raise ValueError("must be the profile's folder name (lowercase, digits, '-', '_')")
        return value

    @field_validator("hf_model")
    @classmethod
    def _model(cls, value: str) -> str:
        if not _MODEL_RE.match(value):
            raise ValueError("must look like org/name (letters, digits, '.', '-', '_', '/')")
        return value

    @field_validator("bind_address")
    @classmethod
    def _bind(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError("must be an IP address such as 127.0.0.1 or 0.0.0.0") from None
        return value

    @field_validator("gpu_count")
    @classmethod
    def _gpus(cls, value: str) -> str:
        if value != "all" and not (value.isdigit() and int(value) > 0):
            raise ValueError("must be all or a whole number ≥ 1")
        return value

    @field_validator("max_model_len", "gpus_per_node")
    @classmethod
    def _optional_count(cls, value: str) -> str:
        value = value.strip()
        if value and not (value.isdigit() and int(value) > 0):
            raise ValueError("must be empty or a whole number ≥ 1")
        return value

    @field_validator("gpu_memory_utilization")
    @classmethod
    def _memory_share(cls, value: str) -> str:
        value = value.strip()
        if not value:
            return value
        try:
            share = float(value)
        except ValueError:
            share = -1.0
        if not 0.0 < share <= 1.0:  # also rejects nan and inf
            raise ValueError("must be empty or a number above 0 and at most 1, e.g. 0.85")
        return value

    @field_validator("vllm_args")
    @classmethod
    def _shell_words(cls, value: str) -> str:
        import shlex

        try:
            shlex.split(value)
        except ValueError as exc:  # "No closing quotation", "No escaped character"
            raise ValueError(
                f"cannot be split like a shell line ({str(exc).lower()}): close every quote, "
                "e.g. --served-model-name 'my model'"
            ) from None
        return value

    @field_validator("vllm_base_image", "vllm_image", "entropy_server_image")
    @classmethod
    def _image(cls, value: str) -> str:
        if not _IMAGE_RE.match(value):
            raise ValueError("must be an image reference such as name:tag (lowercase)")
        return value


@dataclass(frozen=True)
class StackSpec:
    """What the schema says about one stack key (the counterpart of ``SettingSpec``)."""

    name: str
    env_key: str
    default: str
    description: str
    scope: Scope


def stack_specs() -> list[StackSpec]:
    """Every stack key, in declaration order."""
    specs = []
    for name, f in StackSettings.model_fields.items():
        extra = f.json_schema_extra if isinstance(f.json_schema_extra, dict) else {}
        specs.append(
            StackSpec(
                name=name,
                env_key=str(f.alias),
                default=str(f.default),
                description=f.description or "",
                scope="entropy-server" if extra.get("scope") == "entropy-server" else "base",
            )
        )
    return specs


def stack_keys() -> frozenset[str]:
    """The ``.env`` keys of the stack schema."""
    return frozenset(s.env_key for s in stack_specs())


def stack_from_mapping(values: Mapping[str, str]) -> StackSettings:
    """Validate the stack keys found in ``values`` (other keys ignored); SettingsError on errors."""
    keys = stack_keys()
    data = {k: v for k, v in values.items() if k in keys}
    try:
        return StackSettings.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = str(err["loc"][0]) if err["loc"] else "stack"
            message = str(err["msg"]).removeprefix("Value error, ")
            problems.append(SettingProblem(key, _clip(str(data.get(key, ""))), message))
        raise SettingsError(
            problems,
            hint="each stack key is described in a profile's .env, e.g. deployments/_template/.env",
        ) from None


def stack_env_values(stack: StackSettings, *, entropy_server: bool) -> dict[str, str]:
    """The stack keys a profile's ``.env`` sets, as text, in declaration order."""
    values = {}
    for spec in stack_specs():
        if spec.scope == "entropy-server" and not entropy_server:
            continue
        values[spec.env_key] = str(getattr(stack, spec.name))
    return values


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"

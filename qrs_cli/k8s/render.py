"""From a profile to its Kubernetes manifests (:class:`K8sRender`); nothing here writes to disk.

The profile is validated exactly as ``qrs profile validate`` does, and an invalid one is refused.
Values follow the usual precedence (process environment > profile files > schema defaults), as
for ``qrs up``. How the profile maps onto the cluster:

- a model replica needs TP × PP GPUs. When it fits one node (``QRS_GPUS_PER_NODE`` empty, or at
  least TP × PP) each replica is one pod of a Deployment; otherwise each replica is a group of
  TP × PP / ``QRS_GPUS_PER_NODE`` pods of a LeaderWorkerSet, joined by Ray (vLLM's documented
  multi-node layout, ``--distributed-executor-backend ray``);
- DP replicas are pod (or group) replicas behind one Service, not ``--data-parallel-size``: each
  replica draws its own entropy, and Kubernetes spreads and restarts them independently;
- the co-located entropy server (Compose: ``entropy-server:50051``) becomes its own Deployment
  and Service, and the vLLM settings point at that Service's name;
- secret keys (the API key, ``HF_TOKEN``) are references to a Secret the user creates; the
  notes say how, with commands that read the key from the user's own file or terminal.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace

from qrs_cli.errors import EXIT_FAILED
from qrs_cli.k8s import manifests as m
from qrs_cli.k8s.errors import RenderError
from qrs_cli.k8s.notes import notes_text
from qrs_cli.k8s.types import K8sRender, Layout, Manifest
from qrs_cli.profiles.answers import API_KEY_KEY, GRPC_SOURCE, HEADER_KEY
from qrs_cli.profiles.discovery import ProjectLayout
from qrs_cli.profiles.parallel import (
    EXECUTOR_FLAG,
    extra_args,
    flag_name,
    replica_gpus,
    sets_flag,
    vllm_flags,
)
from qrs_cli.profiles.secrets_check import is_secret_key
from qrs_cli.profiles.sources import load_sources
from qrs_cli.profiles.stack import ENTROPY_SERVER_ADDRESS, StackSettings, stack_from_mapping
from qrs_cli.profiles.validate import validate_profile

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_LOOPBACK = ("localhost:", "127.", "[::1]:")
#: Endings of sampler keys holding a path inside the container (files the pod must be given);
#: gRPC method paths excepted.
_PATH_KEYS = ("_PATH", "_DIR", "_FILE", "_CERT", "_CLIENT_KEY")


def render_k8s(
    layout: ProjectLayout,
    profile: str,
    *,
    namespace: str = "",
    out: str = "DIR",
    environ: Mapping[str, str] | None = None,
) -> K8sRender:
    """Validate ``profile`` and build its manifests (see the module docstring); ``out`` is the
    output folder as the user named it, for the commands in the notes."""
    if namespace and not _DNS_LABEL.match(namespace):
        raise RenderError(
            f"--namespace {namespace!r} is not a Kubernetes namespace name",
            "lowercase letters, digits and '-', at most 63, e.g. qrs-urandom",
        )
    report = validate_profile(layout, profile, environ)
    if report.errors:
        first = report.errors[0]
        where = f"{first.location}: " if first.location else ""
        more = f" (and {len(report.errors) - 1} more)" if len(report.errors) > 1 else ""
        raise RenderError(
            f"profile {profile!r} is invalid: {where}{first.message}{more}",
            f"run `qrs profile validate {profile}` for every problem and its fix",
            EXIT_FAILED,
        )
    sources = load_sources(layout, profile, environ)
    values = sources.merged()
    stack = stack_from_mapping(values)
    base = dns_base(profile)
    co_located = sources.co_located_server
    # A QR_* key kept in secrets.env is treated as a secret whatever its name.
    private = {k for k in sources.secrets.values() if k.startswith("QR_")}
    settings = _configmap_settings(values, co_located, base, private)
    secret_keys = _secret_keys(values, private)
    per_node = int(stack.gpus_per_node) if stack.gpus_per_node else 0
    replica = replica_gpus(stack)
    shape: Layout = "multi-node" if per_node and replica > per_node else "single-node"
    gpus_per_pod = per_node if shape == "multi-node" else replica
    pods = replica // gpus_per_pod
    replicas = stack.data_parallel_size
    flags = vllm_flags(stack, data_parallel=False)
    if shape == "multi-node":
        flags = _with_ray(flags, stack)
    inputs = m.Inputs(
        profile=profile,
        base=base,
        namespace=namespace,
        vllm_image=stack.vllm_image,
        entropy_image=stack.entropy_server_image,
        settings=settings,
        secret_keys=secret_keys,
        serve_args=(
            stack.hf_model,
            "--host",
            "0.0.0.0",
            "--port",
            str(m.VLLM_CONTAINER_PORT),
            *flags,
        ),
    )
    objects: list[Manifest] = [m.settings_configmap(inputs)]
    if shape == "single-node":
        # One pod may share a ReadWriteOnce volume; pods on several nodes need ReadWriteMany.
        access = "ReadWriteOnce" if replicas == 1 else "ReadWriteMany"
        claim = m.cache_claim(inputs, access)
        objects += [
            claim,
            m.vllm_deployment(inputs, gpus=gpus_per_pod, replicas=replicas, cache_claim=claim.name),
            m.vllm_service(inputs, leader_only=False),
        ]
    else:
        objects += [
            m.vllm_leader_worker_set(
                inputs, gpus_per_pod=gpus_per_pod, pods=pods, replicas=replicas
            ),
            m.vllm_service(inputs, leader_only=True),
        ]
    if co_located:
        objects += [m.entropy_deployment(inputs), m.entropy_service(inputs)]
    result = K8sRender(
        profile=profile,
        namespace=namespace,
        layout=shape,
        replicas=replicas,
        pods_per_replica=pods,
        gpus_per_pod=gpus_per_pod,
        vllm_flags=flags,
        secret_name=inputs.secret_name,
        secret_keys=tuple(k for k, _optional in secret_keys),
        manifests=tuple(objects),
        notes="",
        warnings=tuple(_warnings(stack, values, settings, co_located, replicas)),
    )
    profile_dir = layout.relative(sources.folder)
    return replace(result, notes=notes_text(result, inputs, profile_dir, out))


def dns_base(profile: str) -> str:
    """The profile's name as the prefix of object names: a DNS label starting with a letter,
    short enough for ``-entropy-server`` to fit in 63 characters."""
    name = profile.lower().replace("_", "-").strip("-")
    if not name[:1].isalpha():
        name = f"qrs-{name}"
    return name[:40].rstrip("-")


def _with_ray(flags: tuple[str, ...], stack: StackSettings) -> tuple[str, ...]:
    """A replica over several nodes runs on Ray; another executor in QRS_VLLM_ARGS is an error."""
    args = extra_args(stack)
    for index, token in enumerate(args):
        if flag_name(token) != EXECUTOR_FLAG:
            continue
        value = (
            token.split("=", 1)[1]
            if "=" in token
            else (args[index + 1] if index + 1 < len(args) else "")
        )
        if value != "ray":
            raise RenderError(
                f"QRS_VLLM_ARGS sets {EXECUTOR_FLAG} {value}, but a replica over several nodes "
                "needs Ray",
                f"remove {EXECUTOR_FLAG} from QRS_VLLM_ARGS (the render sets ray)",
            )
    return flags if sets_flag(flags, EXECUTOR_FLAG) else (*flags, EXECUTOR_FLAG, "ray")


def _configmap_settings(
    values: Mapping[str, str], co_located: bool, base: str, private: set[str]
) -> dict[str, str]:
    settings = {
        k: v
        for k, v in values.items()
        if k.startswith("QR_") and not is_secret_key(k) and k not in private
    }
    if co_located and settings.get("QR_GRPC_SERVER_ADDRESS") == ENTROPY_SERVER_ADDRESS:
        settings["QR_GRPC_SERVER_ADDRESS"] = f"{base}-{m.ENTROPY_SERVER}:{m.ENTROPY_PORT}"
    return settings


def _secret_keys(values: Mapping[str, str], private: set[str]) -> tuple[tuple[str, bool], ...]:
    """(key, optional): secret keys the profile sets or needs, then ``HF_TOKEN`` (optional:
    only gated models need it)."""
    keys = {k for k, v in values.items() if k.startswith("QR_") and is_secret_key(k) and v}
    keys |= {k for k in private if values.get(k)}
    if values.get("QR_ENTROPY_SOURCE_TYPE") == GRPC_SOURCE and values.get(HEADER_KEY):
        keys.add(API_KEY_KEY)
    return (*((k, False) for k in sorted(keys)), ("HF_TOKEN", True))


def _warnings(
    stack: StackSettings,
    values: Mapping[str, str],
    settings: Mapping[str, str],
    co_located: bool,
    replicas: int,
) -> list[str]:
    found = []
    local = [
        f"{key}={image}"
        for key, image, used in (
            ("QRS_VLLM_IMAGE", stack.vllm_image, True),
            ("QRS_ENTROPY_SERVER_IMAGE", stack.entropy_server_image, co_located),
        )
        if used and "/" not in image.split("@")[0]
    ]
    if local:
        found.append(
            f"{', '.join(local)}: a local image name; push the image to a registry the cluster "
            "pulls from and set that name in the profile (see README.md in the output folder)"
        )
    address = settings.get("QR_GRPC_SERVER_ADDRESS", "")
    grpc = values.get("QR_ENTROPY_SOURCE_TYPE") == GRPC_SOURCE
    if grpc and address.startswith(_LOOPBACK):
        found.append(
            f"QR_GRPC_SERVER_ADDRESS={address} is the vLLM pod itself in Kubernetes: use an "
            "address the pod can reach"
        )
    limited = [k for k in ("QR_GRPC_RATE_LIMIT_PER_MIN", "QR_GRPC_DAILY_BYTE_BUDGET")
               if values.get(k, "0") not in ("", "0")]  # fmt: skip
    if grpc and replicas > 1 and limited:
        found.append(
            f"{' and '.join(limited)} are enforced per replica: {replicas} replicas may "
            f"together use {replicas}× the server's allowance; divide them by {replicas} for a "
            "metered server"
        )
    paths = sorted(
        k for k, v in settings.items() if v and k.endswith(_PATH_KEYS) and "METHOD" not in k
    )
    if paths:
        found.append(
            f"{', '.join(paths)}: paths inside the container; mount those files or folders "
            "into the vLLM pods yourself (a Secret or a volume)"
        )
    return found

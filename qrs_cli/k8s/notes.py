"""The README written next to the manifests: what is there, and the steps no manifest can take.

Three things a render cannot do for the user: push the images to a registry the cluster pulls
from, create the Secret (its value must never be in the output), and install the
LeaderWorkerSet controller for a multi-node layout. The commands given read the key from the
user's own ``secrets.env`` or from the terminal, never from an argument on the command line.
"""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING

from qrs_cli.k8s.manifests import ENTROPY_SERVER, VLLM, VLLM_CONTAINER_PORT
from qrs_cli.profiles.answers import API_KEY_KEY

if TYPE_CHECKING:
    from qrs_cli.k8s.manifests import Inputs
    from qrs_cli.k8s.types import K8sRender

LWS_INSTALL_URL = "https://lws.sigs.k8s.io/docs/installation/"


def notes_text(render: K8sRender, inputs: Inputs, profile_dir: str, out: str) -> str:
    """The README of the output folder, in Markdown."""
    kubectl = "kubectl" + (f" -n {render.namespace}" if render.namespace else "")
    lines = [
        f"# Kubernetes manifests of profile `{render.profile}`",
        "",
        f"Made by `qrs render k8s {render.profile}` from `{profile_dir}/`. Change the profile and "
        "render again with `--force` rather than editing these files.",
        "",
        "| File | Kind | Name | What |",
        "|---|---|---|---|",
        *(f"| `{x.filename}` | {x.kind} | `{x.name}` | {x.title} |" for x in render.manifests),
        "",
        "## Layout",
        "",
        *_layout(render),
        "",
        "## 1. Images",
        "",
        "The cluster pulls images from a registry. Build and push them, then set their names in "
        f"`{profile_dir}/.env` and render again:",
        "",
        "```sh",
        "docker build -f Dockerfile.vllm -t REGISTRY/qr-sampler-vllm:TAG .",
        "docker push REGISTRY/qr-sampler-vllm:TAG              # QRS_VLLM_IMAGE",
        *(
            [
                "docker build -f Dockerfile.entropy-server -t "
                "REGISTRY/qr-sampler-entropy-server:TAG .",
                "docker push REGISTRY/qr-sampler-entropy-server:TAG   # QRS_ENTROPY_SERVER_IMAGE",
            ]
            if any(x.name.endswith(ENTROPY_SERVER) for x in render.manifests)
            else []
        ),
        "```",
        "",
        f"## 2. The Secret `{render.secret_name}`",
        "",
        *_secret(render, kubectl, profile_dir),
        "",
        "## 3. Apply and try",
        "",
        "```sh",
        *([f"kubectl create namespace {render.namespace}   # once"] if render.namespace else []),
        f"{kubectl} apply -f {shlex.quote(out)}",
        *_wait(render, kubectl, inputs),
        f"{kubectl} port-forward svc/{inputs.name(VLLM)} {VLLM_CONTAINER_PORT}:"
        f"{VLLM_CONTAINER_PORT} &",
        f"curl -s http://127.0.0.1:{VLLM_CONTAINER_PORT}/v1/models",
        "```",
        "",
        "`kubectl apply --dry-run=server -f` checks the files against your cluster first.",
        "",
        "## How entropy is drawn here",
        "",
        "Each model replica draws entropy once per step: its first tensor-parallel rank fetches "
        "the bytes and shares the result with the replica's other ranks (also across nodes), so "
        "every rank forces the same token. Replicas draw independently. The client's rate limit "
        "and daily budget are kept per replica.",
        "",
    ]
    return "\n".join(lines)


def _layout(render: K8sRender) -> list[str]:
    flags = shlex.join(render.vllm_flags)
    if render.layout == "single-node":
        return [
            f"{render.replicas} vLLM replica(s), one pod each with {render.gpus_per_pod} GPU(s) "
            f"(`nvidia.com/gpu`), behind one Service. vLLM flags from the profile: `{flags}`.",
            "Data-parallel replicas are pod replicas (`QRS_DATA_PARALLEL_SIZE`); with more than "
            "one, the model cache needs a ReadWriteMany storage class.",
        ]
    return [
        f"{render.replicas} vLLM replica(s), each a LeaderWorkerSet group of "
        f"{render.pods_per_replica} pods with {render.gpus_per_pod} GPU(s) each: the leader "
        "starts a Ray head, waits for the group and runs `vllm serve` with the Ray executor; "
        f"the workers join its Ray cluster. vLLM flags from the profile: `{flags}`.",
        "",
        f"This needs the LeaderWorkerSet controller (v0.8 or later, which gives each pod its "
        f"own cache volume): {LWS_INSTALL_URL}",
    ]


def _secret(render: K8sRender, kubectl: str, profile_dir: str) -> list[str]:
    create = f"{kubectl} create secret generic {render.secret_name}"
    required = [k for k in render.secret_keys if k != "HF_TOKEN"]
    if not required:
        return [
            "This profile needs no API key. Only a gated model needs the Secret, with "
            "`HF_TOKEN` (typed, never on the command line):",
            "",
            "```sh",
            "read -rsp 'Hugging Face token: ' HF_TOKEN; echo",
            f"printf '%s' \"$HF_TOKEN\" | {create} --from-file=HF_TOKEN=/dev/stdin",
            "unset HF_TOKEN",
            "```",
        ]
    keys = ", ".join(f"`{k}`" for k in required)
    lines = [
        f"The vLLM pods read {keys} (and `HF_TOKEN`, optional) from this Secret; its values are "
        "never in these files. Create it before applying, from the profile's git-ignored "
        "secrets file:",
        "",
        "```sh",
        f"{create} --from-env-file={profile_dir}/secrets.env",
        "```",
        "",
        "(`--from-env-file` takes each `KEY=value` line literally: no quotes around values.)",
    ]
    if required == [API_KEY_KEY]:
        lines[-1] += (
            " Or type the key, so it reaches neither the shell history nor the process list:"
        )
        lines += [
            "",
            "```sh",
            f"read -rsp 'API key: ' {API_KEY_KEY}; echo",
            f"printf '%s' \"${API_KEY_KEY}\" | {create} --from-file={API_KEY_KEY}=/dev/stdin",
            f"unset {API_KEY_KEY}",
            "```",
        ]
    return lines


def _wait(render: K8sRender, kubectl: str, inputs: Inputs) -> list[str]:
    if render.layout == "single-node":
        return [f"{kubectl} rollout status deployment/{inputs.name(VLLM)} --timeout=30m"]
    return [
        f"{kubectl} wait --for=condition=Available leaderworkerset/{inputs.name(VLLM)} "
        "--timeout=60m"
    ]

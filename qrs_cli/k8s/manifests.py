"""The Kubernetes objects of one profile, as plain data (mappings and lists).

What each object is for:

- ``ConfigMap`` ``<p>-settings``: the profile's non-secret ``QR_*`` values, read by every vLLM
  pod (``envFrom``), workers included: under Ray every rank builds its own logits processor and
  must see the same settings;
- ``Secret`` ``<p>-secrets``: never rendered; the containers reference its keys through
  ``secretKeyRef`` (the API key required when the profile needs one, ``HF_TOKEN`` optional);
- the vLLM ``Deployment`` (a replica fits one node) or ``LeaderWorkerSet`` (a replica spans
  nodes), each pod requesting its GPUs as ``nvidia.com/gpu`` and probed on ``/health``;
- the Hugging Face cache on a ``PersistentVolumeClaim`` (one per pod under a LeaderWorkerSet);
- the reference entropy server's ``Deployment`` and ``Service`` with Kubernetes' own gRPC
  probes (it serves ``grpc.health.v1``), for profiles that co-locate it.

Invariants: names are DNS labels; every value is a string, an integer or a boolean (the YAML
writer accepts nothing else); no secret value ever enters these objects.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any

from qrs_cli.k8s.types import Manifest

VLLM = "vllm"
ENTROPY_SERVER = "entropy-server"
VLLM_CONTAINER_PORT = 8000
ENTROPY_PORT = 50051
HF_CACHE_MOUNT = "/root/.cache/huggingface"
CACHE_SIZE = "100Gi"
SHM_SIZE = "16Gi"
GPU_RESOURCE = "nvidia.com/gpu"
LWS_API = "leaderworkerset.x-k8s.io/v1"
#: vLLM's helper that starts a Ray head (and waits for the group) or joins one; shipped in the
#: vllm/vllm-openai image that Dockerfile.vllm builds on.
RAY_SCRIPT = "/vllm-workspace/examples/online_serving/multi-node-serving.sh"
#: Dockerfile.vllm's entrypoint, spelled out where a shell line replaces it.
VLLM_ENTRYPOINT = ("env", "-u", "VLLM_PORT", "vllm", "serve")


@dataclass(frozen=True)
class Inputs:
    """What the manifests are built from (no secret values: ``secret_keys`` are names)."""

    profile: str
    base: str
    namespace: str
    vllm_image: str
    entropy_image: str
    settings: dict[str, str]
    #: (key, optional) pairs read from the Secret.
    secret_keys: tuple[tuple[str, bool], ...]
    #: Arguments after ``vllm serve``: the model, host, port and the profile's flags.
    serve_args: tuple[str, ...]

    def name(self, suffix: str) -> str:
        return f"{self.base}-{suffix}"

    @property
    def secret_name(self) -> str:
        return self.name("secrets")


def settings_configmap(inp: Inputs) -> Manifest:
    obj = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(inp, inp.name("settings"), VLLM),
        "data": dict(sorted(inp.settings.items())),
    }
    return Manifest("10-settings-configmap.yaml", obj, "The profile's sampler settings (QR_*).")


def cache_claim(inp: Inputs, access_mode: str) -> Manifest:
    obj = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _metadata(inp, inp.name("hf-cache"), VLLM),
        "spec": _claim_spec(access_mode),
    }
    return Manifest(
        "20-hf-cache-pvc.yaml",
        obj,
        f"The Hugging Face cache of vLLM ({access_mode}; size: edit to fit the model).",
    )


def vllm_deployment(inp: Inputs, *, gpus: int, replicas: int, cache_claim: str) -> Manifest:
    """A Deployment whose every pod serves one whole replica on ``gpus`` GPUs."""
    container = _vllm_container(inp, gpus, role="server", args=list(inp.serve_args))
    obj = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(inp, inp.name(VLLM), VLLM),
        "spec": {
            "replicas": replicas,
            # The GPUs (and a ReadWriteOnce cache) cannot be held by an old and a new pod at once.
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": _selector(inp, VLLM)},
            "template": {
                "metadata": {"labels": _labels(inp, VLLM)},
                "spec": _vllm_pod_spec(
                    container,
                    [{"name": "hf-cache", "persistentVolumeClaim": {"claimName": cache_claim}}],
                ),
            },
        },
    }
    title = f"vLLM: {replicas} replica(s), {gpus} GPU(s) each."
    return Manifest("30-vllm-deployment.yaml", obj, title)


def vllm_leader_worker_set(inp: Inputs, *, gpus_per_pod: int, pods: int, replicas: int) -> Manifest:
    """vLLM's documented multi-node layout: per replica a leader pod that starts a Ray head,
    waits for ``pods`` members and runs ``vllm serve`` with the Ray executor, and worker pods
    that join the leader's Ray cluster. Each pod gets its own cache volume."""
    serve = shlex.join([*VLLM_ENTRYPOINT, *inp.serve_args]).replace("$(", "$$(")
    start = f"bash {RAY_SCRIPT} leader --ray_cluster_size=$(LWS_GROUP_SIZE) && exec {serve}"
    leader = _vllm_container(inp, gpus_per_pod, role="leader", command=["sh", "-c", start])
    join = f"bash {RAY_SCRIPT} worker --ray_address=$(LWS_LEADER_ADDRESS)"
    worker = _vllm_container(inp, gpus_per_pod, role="worker", command=["sh", "-c", join])
    obj = {
        "apiVersion": LWS_API,
        "kind": "LeaderWorkerSet",
        "metadata": _metadata(inp, inp.name(VLLM), VLLM),
        "spec": {
            "replicas": replicas,
            "leaderWorkerTemplate": {
                "size": pods,
                # A lost pod breaks its Ray group: recreate the whole group.
                "restartPolicy": "RecreateGroupOnPodRestart",
                "leaderTemplate": {
                    "metadata": {"labels": {**_labels(inp, VLLM), "role": "leader"}},
                    "spec": _vllm_pod_spec(leader, []),
                },
                "workerTemplate": {
                    "metadata": {"labels": {**_labels(inp, VLLM), "role": "worker"}},
                    "spec": _vllm_pod_spec(worker, []),
                },
                "volumeClaimTemplates": [
                    {"metadata": {"name": "hf-cache"}, "spec": _claim_spec("ReadWriteOnce")}
                ],
            },
        },
    }
    return Manifest(
        "30-vllm-leaderworkerset.yaml",
        obj,
        f"vLLM over {pods} nodes per replica (Ray), {replicas} replica(s); needs the "
        "LeaderWorkerSet controller.",
        core=False,
    )


def leader_pod_templates(lws: dict[str, Any]) -> list[dict[str, Any]]:
    """The LeaderWorkerSet's pod templates wrapped as core Pods, so the core schemas can check
    what the custom resource's own schema is not available for."""
    template = lws["spec"]["leaderWorkerTemplate"]
    pods = []
    for role in ("leaderTemplate", "workerTemplate"):
        pods.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": f"{lws['metadata']['name']}-{role.lower()}",
                    **template[role]["metadata"],
                },
                "spec": template[role]["spec"],
            }
        )
    return pods


def vllm_service(inp: Inputs, *, leader_only: bool) -> Manifest:
    selector = {**_selector(inp, VLLM), **({"role": "leader"} if leader_only else {})}
    obj = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(inp, inp.name(VLLM), VLLM),
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [
                {
                    "name": "http",
                    "port": VLLM_CONTAINER_PORT,
                    "targetPort": "http",
                    "protocol": "TCP",
                }
            ],
        },
    }
    return Manifest("31-vllm-service.yaml", obj, "vLLM's OpenAI-compatible API inside the cluster.")


def entropy_deployment(inp: Inputs) -> Manifest:
    probe = {"grpc": {"port": ENTROPY_PORT}, "timeoutSeconds": 3}
    container = {
        "name": ENTROPY_SERVER,
        "image": inp.entropy_image,
        "args": ["--address", f"0.0.0.0:{ENTROPY_PORT}"],
        "ports": [{"name": "grpc", "containerPort": ENTROPY_PORT, "protocol": "TCP"}],
        # grpc.health.v1 answers SERVING once the server listens.
        "startupProbe": {**probe, "periodSeconds": 2, "failureThreshold": 30},
        "readinessProbe": {**probe, "periodSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {**probe, "periodSeconds": 10, "failureThreshold": 3},
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
        "securityContext": {"runAsNonRoot": True, "allowPrivilegeEscalation": False},
    }
    obj = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(inp, inp.name(ENTROPY_SERVER), ENTROPY_SERVER),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": _selector(inp, ENTROPY_SERVER)},
            "template": {
                "metadata": {"labels": _labels(inp, ENTROPY_SERVER)},
                "spec": {"enableServiceLinks": False, "containers": [container]},
            },
        },
    }
    return Manifest(
        "40-entropy-server-deployment.yaml", obj, "The reference entropy server (os.urandom)."
    )


def entropy_service(inp: Inputs) -> Manifest:
    obj = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(inp, inp.name(ENTROPY_SERVER), ENTROPY_SERVER),
        "spec": {
            "type": "ClusterIP",
            "selector": _selector(inp, ENTROPY_SERVER),
            "ports": [
                {
                    "name": "grpc",
                    "port": ENTROPY_PORT,
                    "targetPort": "grpc",
                    "protocol": "TCP",
                    "appProtocol": "grpc",
                }
            ],
        },
    }
    return Manifest(
        "41-entropy-server-service.yaml", obj, "The entropy server's gRPC address for vLLM."
    )


def _vllm_container(
    inp: Inputs,
    gpus: int,
    *,
    role: str,
    args: list[str] | None = None,
    command: list[str] | None = None,
) -> dict[str, Any]:
    """The vLLM container: ``args`` after the image's ``vllm serve`` entrypoint, or a
    ``command`` replacing it; probes and the API port except on Ray workers."""
    env: list[dict[str, Any]] = [
        {
            "name": key,
            "valueFrom": {
                "secretKeyRef": {"name": inp.secret_name, "key": key, "optional": optional}
            },
        }
        for key, optional in inp.secret_keys
    ]
    container: dict[str, Any] = {
        "name": VLLM if role == "server" else f"{VLLM}-{role}",
        "image": inp.vllm_image,
        **({"command": command} if command else {}),
        **({"args": args} if args else {}),
        "envFrom": [{"configMapRef": {"name": inp.name("settings")}}],
        "env": env,
        "resources": {"requests": {GPU_RESOURCE: str(gpus)}, "limits": {GPU_RESOURCE: str(gpus)}},
        "volumeMounts": [
            {"name": "hf-cache", "mountPath": HF_CACHE_MOUNT},
            {"name": "shm", "mountPath": "/dev/shm"},
        ],
    }
    if role != "worker":
        container["ports"] = [
            {"name": "http", "containerPort": VLLM_CONTAINER_PORT, "protocol": "TCP"}
        ]
        container.update(_health_probes())
    return container


def _health_probes() -> dict[str, Any]:
    """``/health`` answers 200 once the engine is up and stops when it dies."""

    def probe(period: int, failures: int, timeout: int) -> dict[str, Any]:
        return {
            "httpGet": {"path": "/health", "port": "http"},
            "periodSeconds": period,
            "timeoutSeconds": timeout,
            "failureThreshold": failures,
        }

    return {
        # Downloading and loading a large model can take many minutes: up to 30 here.
        "startupProbe": probe(10, 180, 5),
        "readinessProbe": probe(10, 3, 5),
        # A busy engine may answer slowly; two minutes of silence restart it.
        "livenessProbe": probe(20, 6, 10),
    }


def _vllm_pod_spec(container: dict[str, Any], volumes: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        # Service links would put e.g. VLLM_PORT=tcp://… into the environment, and vLLM reads
        # VLLM_PORT as its own internal port.
        "enableServiceLinks": False,
        "containers": [container],
        "volumes": [
            *volumes,
            # NCCL and PyTorch share tensors between processes through /dev/shm.
            {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": SHM_SIZE}},
        ],
    }


def _claim_spec(access_mode: str) -> dict[str, Any]:
    return {"accessModes": [access_mode], "resources": {"requests": {"storage": CACHE_SIZE}}}


def _labels(inp: Inputs, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": component,
        "app.kubernetes.io/instance": inp.base,
        "app.kubernetes.io/part-of": "qr-sampler",
        "app.kubernetes.io/managed-by": "qrs",
    }


def _selector(inp: Inputs, component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": component, "app.kubernetes.io/instance": inp.base}


def _metadata(inp: Inputs, name: str, component: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if inp.namespace:
        meta["namespace"] = inp.namespace
    meta["labels"] = _labels(inp, component)
    return meta

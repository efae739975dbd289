"""Value types of ``qrs render k8s``: the manifests of one profile and the render as a whole."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

#: ``single-node``: a Deployment whose pods hold a whole replica (TP × PP GPUs);
#: ``multi-node``: a LeaderWorkerSet whose groups of pods hold one replica over Ray.
Layout = Literal["single-node", "multi-node"]


@dataclass(frozen=True)
class Manifest:
    """One Kubernetes object and the file it is written to.

    ``core`` objects belong to the built-in API and are checked by ``kubernetes-validate``;
    the LeaderWorkerSet is a custom resource, which only its controller's schema describes.
    """

    filename: str
    obj: dict[str, Any]
    title: str
    core: bool = True

    @property
    def kind(self) -> str:
        return str(self.obj["kind"])

    @property
    def name(self) -> str:
        return str(self.obj["metadata"]["name"])


@dataclass(frozen=True)
class K8sRender:
    """Everything ``qrs render k8s`` writes for one profile, decided before anything is written.

    Holds no secret: the API key travels as a ``secretKeyRef`` to ``secret_name``, and the
    notes tell how to create that Secret from the user's own copy of the key.
    """

    profile: str
    namespace: str
    layout: Layout
    replicas: int
    pods_per_replica: int
    gpus_per_pod: int
    vllm_flags: tuple[str, ...]
    secret_name: str
    secret_keys: tuple[str, ...]
    manifests: tuple[Manifest, ...]
    notes: str
    warnings: tuple[str, ...] = field(default=())

    def files(self) -> dict[str, str]:
        """File name → content, manifests first (written in this order)."""
        from qrs_cli.k8s.yaml_text import to_yaml

        found = {
            m.filename: f"# {m.title}\n# Made by `qrs render k8s {self.profile}`.\n"
            + to_yaml(m.obj)
            for m in self.manifests
        }
        found[NOTES_FILE] = self.notes
        return found

    def to_dict(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "namespace": self.namespace,
            "layout": self.layout,
            "replicas": self.replicas,
            "pods_per_replica": self.pods_per_replica,
            "gpus_per_pod": self.gpus_per_pod,
            "vllm_flags": list(self.vllm_flags),
            "secret": {"name": self.secret_name, "keys": list(self.secret_keys)},
            "manifests": [
                {"file": m.filename, "kind": m.kind, "name": m.name, "core": m.core}
                for m in self.manifests
            ],
            "warnings": list(self.warnings),
        }


NOTES_FILE = "README.md"

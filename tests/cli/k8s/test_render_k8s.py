"""``qrs render k8s``: manifests that pass Kubernetes' schemas, GPUs and flags from the profile,
probes on vLLM and the entropy server, and the API key only ever as a Secret reference."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from qrs_cli.k8s import render_k8s
from qrs_cli.k8s.manifests import leader_pod_templates
from qrs_cli.profiles import find_project
from tests.cli.conftest import Outcome, assert_one_line_error
from tests.cli.k8s.conftest import TEST_KEY, copy_profile, kubernetes_validate


def render(qrs: Callable[..., Outcome], profile: str, out: Path, *args: str) -> dict[str, Any]:
    outcome = qrs("render", "k8s", profile, "--out", str(out), "--json", *args)
    assert outcome.code == 0, outcome.text
    return dict(json.loads(outcome.out))


def load(path: Path) -> dict[str, Any]:
    return dict(yaml.safe_load(path.read_text(encoding="utf-8")))


def yaml_files(out: Path) -> list[Path]:
    return sorted(out.glob("*.yaml"))


def by_kind(out: Path) -> dict[tuple[str, str], dict[str, Any]]:
    found = {}
    for path in yaml_files(out):
        obj = load(path)
        found[(obj["kind"], obj["metadata"]["name"])] = obj
    return found


def container(workload: dict[str, Any]) -> dict[str, Any]:
    (only,) = workload["spec"]["template"]["spec"]["containers"]
    return dict(only)


def test_urandom_passes_strict_validation_with_probes_everywhere(
    project: Path, qrs: Callable[..., Outcome], tmp_path: Path
) -> None:
    out = tmp_path / "k8s"
    data = render(qrs, "urandom", out)
    assert data["layout"] == "single-node" and data["gpus_per_pod"] == 1
    proc = kubernetes_validate(*yaml_files(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("passed") == 6
    objects = by_kind(out)
    vllm = container(objects[("Deployment", "urandom-vllm")])
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert vllm[probe]["httpGet"] == {"path": "/health", "port": "http"}, probe
    server_deploy = objects[("Deployment", "urandom-entropy-server")]
    server = container(server_deploy)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert server[probe]["grpc"] == {"port": 50051}, probe  # Kubernetes' native gRPC probe
    assert server["args"] == ["--address", "0.0.0.0:50051"]
    service = objects[("Service", "urandom-entropy-server")]
    assert service["spec"]["selector"].items() <= server_deploy["spec"]["template"]["metadata"][
        "labels"].items()  # fmt: skip
    settings = objects[("ConfigMap", "urandom-settings")]["data"]
    # Compose's service name becomes the Kubernetes Service's.
    assert settings["QR_GRPC_SERVER_ADDRESS"] == "urandom-entropy-server:50051"
    assert settings["QR_ENTROPY_SOURCE_TYPE"] == "quantum_grpc"
    assert vllm["envFrom"] == [{"configMapRef": {"name": "urandom-settings"}}]
    claim = objects[("PersistentVolumeClaim", "urandom-hf-cache")]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    pod = objects[("Deployment", "urandom-vllm")]["spec"]["template"]["spec"]
    assert {"name": "hf-cache", "persistentVolumeClaim": {"claimName": "urandom-hf-cache"}} in pod[
        "volumes"]  # fmt: skip
    assert {"name": "hf-cache", "mountPath": "/root/.cache/huggingface"} in vllm["volumeMounts"]
    assert pod["enableServiceLinks"] is False  # no VLLM_PORT=tcp://… from a Service named vllm
    # No API key in this profile: only the optional HF_TOKEN reference.
    assert vllm["env"] == [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {
        "name": "urandom-secrets", "key": "HF_TOKEN", "optional": True}}}]  # fmt: skip


def test_firefly_tp2_requests_two_gpus_and_keeps_the_key_out(
    project: Path, qrs: Callable[..., Outcome], keyed_tp2: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch
) -> None:  # fmt: skip
    monkeypatch.setenv("HF_TOKEN", "hf_Test_Token_Value_5521")
    out = tmp_path / "k8s"
    outcome = qrs("render", "k8s", "ff-tp2", "--out", str(out))
    assert outcome.code == 0, outcome.text
    proc = kubernetes_validate(*yaml_files(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    vllm = container(by_kind(out)[("Deployment", "ff-tp2-vllm")])
    assert vllm["resources"]["requests"]["nvidia.com/gpu"] == "2"
    assert vllm["resources"]["limits"]["nvidia.com/gpu"] == "2"
    args = vllm["args"]
    assert args[args.index("--tensor-parallel-size") + 1] == "2"
    assert "--data-parallel-size" not in args  # DP is pod replicas on Kubernetes
    assert {"name": "QR_GRPC_API_KEY", "valueFrom": {"secretKeyRef": {
        "name": "ff-tp2-secrets", "key": "QR_GRPC_API_KEY", "optional": False}}} in vllm["env"]
    # The key's value is nowhere: not in any file written, not in what the command printed.
    for path in out.iterdir():
        text = path.read_text(encoding="utf-8")
        assert TEST_KEY not in text and "hf_Test_Token_Value_5521" not in text, path
    assert TEST_KEY not in outcome.text
    settings = load(out / "10-settings-configmap.yaml")["data"]
    assert "QR_GRPC_API_KEY" not in settings and settings["QR_GRPC_API_KEY_HEADER"] == "api-key"
    notes = (out / "README.md").read_text()
    assert "create secret generic ff-tp2-secrets" in notes
    assert "--from-env-file=deployments/ff-tp2/secrets.env" in notes


def test_the_validator_really_rejects_a_bad_manifest(
    project: Path, qrs: Callable[..., Outcome], tmp_path: Path
) -> None:
    """The strict schemas catch a misspelt field, so a pass above means something."""
    out = tmp_path / "k8s"
    render(qrs, "urandom", out)
    path = out / "30-vllm-deployment.yaml"
    path.write_text(path.read_text().replace("readinessProbe:", "readynessProbe:"))
    proc = kubernetes_validate(path)
    assert proc.returncode != 0 and "readynessProbe" in proc.stdout + proc.stderr


def test_multi_node_renders_a_leader_worker_set(
    project: Path, qrs: Callable[..., Outcome], tmp_path: Path
) -> None:
    copy_profile(project, "firefly-1", "big", QRS_TENSOR_PARALLEL_SIZE="8",
                 QRS_PIPELINE_PARALLEL_SIZE="2", QRS_DATA_PARALLEL_SIZE="2",
                 QRS_GPUS_PER_NODE="8", QRS_VLLM_ARGS="--enforce-eager")  # fmt: skip
    out = tmp_path / "k8s"
    data = render(qrs, "big", out, "--namespace", "llm")
    assert (data["layout"], data["pods_per_replica"], data["gpus_per_pod"]) == ("multi-node", 2, 8)
    assert not (out / "30-vllm-deployment.yaml").exists()
    lws = load(out / "30-vllm-leaderworkerset.yaml")
    assert lws["apiVersion"] == "leaderworkerset.x-k8s.io/v1" and lws["kind"] == "LeaderWorkerSet"
    template = lws["spec"]["leaderWorkerTemplate"]
    assert lws["spec"]["replicas"] == 2 and template["size"] == 2
    leader = template["leaderTemplate"]["spec"]["containers"][0]
    worker = template["workerTemplate"]["spec"]["containers"][0]
    start = leader["command"][2]
    assert "multi-node-serving.sh leader --ray_cluster_size=$(LWS_GROUP_SIZE)" in start
    for flag in ("--tensor-parallel-size 8", "--pipeline-parallel-size 2",
                 "--distributed-executor-backend ray", "--enforce-eager"):  # fmt: skip
        assert flag in start, flag
    assert "--data-parallel-size" not in start
    assert "worker --ray_address=$(LWS_LEADER_ADDRESS)" in worker["command"][2]
    for member in (leader, worker):
        assert member["resources"]["limits"]["nvidia.com/gpu"] == "8"
        assert member["envFrom"] == [{"configMapRef": {"name": "big-settings"}}]  # every rank
        assert any(e["name"] == "QR_GRPC_API_KEY" for e in member["env"])
    assert leader["readinessProbe"]["httpGet"]["path"] == "/health"
    claim = template["volumeClaimTemplates"][0]["metadata"]["name"]
    assert {"name": claim, "mountPath": "/root/.cache/huggingface"} in worker["volumeMounts"]
    service = load(out / "31-vllm-service.yaml")
    assert service["spec"]["selector"]["role"] == "leader"
    assert template["leaderTemplate"]["metadata"]["labels"].items() >= service["spec"][
        "selector"].items()  # fmt: skip
    # Every object carries the namespace; the core ones pass strict validation.
    assert {load(p)["metadata"]["namespace"] for p in yaml_files(out)} == {"llm"}
    core = [p for p in yaml_files(out) if "leaderworkerset" not in p.name]
    proc = kubernetes_validate(*core)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # No schema for the custom resource ships with Kubernetes; its pod templates are core
    # PodSpecs, so they are validated wrapped as Pods.
    for index, pod in enumerate(leader_pod_templates(lws)):
        path = tmp_path / f"pod-{index}.yaml"
        path.write_text(yaml.safe_dump(pod))
        proc = kubernetes_validate(path)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "lws.sigs.k8s.io/docs/installation" in (out / "README.md").read_text()
    assert "kubectl -n llm apply -f" in (out / "README.md").read_text()


def test_data_parallel_becomes_pod_replicas_with_a_shared_cache(
    project: Path, tmp_path: Path
) -> None:
    copy_profile(project, "firefly-1", "dp2", QRS_DATA_PARALLEL_SIZE="2")
    result = render_k8s(find_project(project), "dp2", environ={})
    objects = {x.filename: x.obj for x in result.manifests}
    assert objects["30-vllm-deployment.yaml"]["spec"]["replicas"] == 2
    assert objects["20-hf-cache-pvc.yaml"]["spec"]["accessModes"] == ["ReadWriteMany"]
    assert "--data-parallel-size" not in result.vllm_flags
    # firefly-1 is metered: the per-replica limits would add up.
    assert any("divide them by 2" in w for w in result.warnings)


def test_another_executor_cannot_span_nodes(
    project: Path, qrs: Callable[..., Outcome], tmp_path: Path
) -> None:
    copy_profile(project, "urandom", "mp", QRS_TENSOR_PARALLEL_SIZE="16",
                 QRS_GPUS_PER_NODE="8",
                 QRS_VLLM_ARGS="--distributed-executor-backend mp")  # fmt: skip
    outcome = qrs("render", "k8s", "mp", "--out", str(tmp_path / "k8s"))
    assert_one_line_error(outcome, 2, "needs Ray")
    assert not (tmp_path / "k8s").exists()


def test_invalid_profile_is_refused(
    project: Path, qrs: Callable[..., Outcome], tmp_path: Path
) -> None:
    copy_profile(project, "urandom", "bad", QRS_VLLM_ARGS="'--tensor-parallel-size 2'")
    outcome = qrs("render", "k8s", "bad", "--out", str(tmp_path / "k8s"))
    assert_one_line_error(outcome, 1, "profile 'bad' is invalid")
    assert "QRS_VLLM_ARGS" in outcome.err and not (tmp_path / "k8s").exists()


def test_bad_namespace_and_unknown_profile(
    project: Path, qrs: Callable[..., Outcome], tmp_path: Path
) -> None:
    outcome = qrs("render", "k8s", "urandom", "--out", str(tmp_path / "a"), "-n", "Bad_NS")
    assert_one_line_error(outcome, 2, "not a Kubernetes namespace name")
    outcome = qrs("render", "k8s", "nope", "--out", str(tmp_path / "a"))
    assert outcome.code == 2 and "Traceback" not in outcome.text


def test_yaml_files_parse_back_to_the_objects(project: Path, tmp_path: Path) -> None:
    copy_profile(project, "urandom", "odd", QRS_VLLM_ARGS="'--served-model-name \"yes: no\"'")
    result = render_k8s(find_project(project), "odd", environ={})
    for name, text in result.files().items():
        if name.endswith(".yaml"):
            obj = next(x.obj for x in result.manifests if x.filename == name)
            assert yaml.safe_load(text) == obj, name
    deployment = next(x.obj for x in result.manifests if x.kind == "Deployment")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["args"][-1] == "yes: no"


def test_help_stays_light() -> None:
    """`qrs render k8s --help` loads neither the renderer nor yaml, jinja2 or jsonschema."""
    probe = (
        "import sys\nfrom qrs_cli.main import main\n"
        "main(['render', '--help']); main(['render', 'k8s', '--help'])\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules if m.split('.')[0] in "
        "('jinja2', 'yaml', 'jsonschema')} | "
        "{m for m in sys.modules if m.startswith('qrs_cli.k8s')})\n"
        "print('HEAVY', heavy)\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert "HEAVY []" in proc.stdout, proc.stdout + proc.stderr
    assert "--out" in proc.stdout and "--force" in proc.stdout


def test_container_paths_warn_but_method_paths_do_not(project: Path) -> None:
    copy_profile(project, "urandom", "paths", QR_DIAGNOSTICS_PATH="/data/tokens.jsonl")
    warnings = render_k8s(find_project(project), "paths", environ={}).warnings
    assert any(w.startswith("QR_DIAGNOSTICS_PATH: paths inside the container") for w in warnings)
    firefly = render_k8s(find_project(project), "firefly-1", environ={}).warnings
    assert not any("paths inside the container" in w for w in firefly)  # QR_GRPC_METHOD_PATH


def test_any_key_kept_in_secrets_env_stays_out_of_the_configmap(project: Path) -> None:
    folder = copy_profile(project, "urandom", "hidden")
    (folder / "secrets.env").write_text("QR_GRPC_SERVER_ADDRESS=private.lab:443\n")
    (folder / "secrets.env").chmod(0o600)
    result = render_k8s(find_project(project), "hidden", environ={})
    assert "private.lab" not in "".join(result.files().values())
    assert "QR_GRPC_SERVER_ADDRESS" in result.secret_keys

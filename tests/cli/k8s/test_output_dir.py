"""The output folder: created whole, never overwritten without --force, never someone else's."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from qrs_cli.k8s import MARKER, render_k8s, write_render
from qrs_cli.k8s.errors import RenderError
from qrs_cli.profiles import find_project
from tests.cli.conftest import Outcome, assert_one_line_error
from tests.cli.k8s.conftest import copy_profile


def snapshot(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(folder.iterdir())}


def test_new_folder_gets_every_file_and_the_marker(
    project: Path, qrs: Callable[..., Outcome], tmp_path: Path
) -> None:
    out = tmp_path / "deep" / "k8s"
    outcome = qrs("render", "k8s", "urandom", "--out", str(out))
    assert outcome.code == 0, outcome.text
    marker = json.loads((out / MARKER).read_text())
    assert marker["profile"] == "urandom"
    assert sorted(marker["files"]) == sorted(p.name for p in out.iterdir() if p.name != MARKER)
    assert "README.md" in marker["files"]
    assert oct(out.stat().st_mode & 0o777) == "0o755"
    assert [p.name for p in out.parent.iterdir()] == ["k8s"]  # no staging folder left


def test_existing_render_needs_force(
    project: Path, qrs: Callable[..., Outcome], tmp_path: Path
) -> None:
    out = tmp_path / "k8s"
    assert qrs("render", "k8s", "urandom", "--out", str(out)).code == 0
    before = snapshot(out)
    outcome = qrs("render", "k8s", "urandom", "--out", str(out))
    assert_one_line_error(outcome, 2, "holds an earlier render")
    assert "--force" in outcome.err and snapshot(out) == before
    assert qrs("render", "k8s", "urandom", "--out", str(out), "--force").code == 0
    assert snapshot(out) == before  # same profile, same files


def test_force_replaces_a_layout_and_keeps_foreign_files(
    project: Path, qrs: Callable[..., Outcome], tmp_path: Path
) -> None:
    out = tmp_path / "k8s"
    assert qrs("render", "k8s", "urandom", "--out", str(out)).code == 0
    (out / "kustomization.yaml").write_text("resources: []\n")  # the user's own file
    folder = project / "deployments" / "urandom"
    text = (folder / ".env").read_text()
    text = text.replace("QRS_TENSOR_PARALLEL_SIZE=1", "QRS_TENSOR_PARALLEL_SIZE=16")
    (folder / ".env").write_text(text.replace("QRS_GPUS_PER_NODE=", "QRS_GPUS_PER_NODE=8"))
    assert qrs("render", "k8s", "urandom", "--out", str(out), "--force").code == 0
    names = {p.name for p in out.iterdir()}
    # kubectl apply -f DIR must not find the old Deployment and claim next to the new layout.
    assert "30-vllm-deployment.yaml" not in names and "20-hf-cache-pvc.yaml" not in names
    assert "30-vllm-leaderworkerset.yaml" in names and "kustomization.yaml" in names


def test_foreign_folder_is_refused_even_with_force(
    project: Path, qrs: Callable[..., Outcome], tmp_path: Path
) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me\n")
    for extra in ([], ["--force"]):
        outcome = qrs("render", "k8s", "urandom", "--out", str(out), *extra)
        assert_one_line_error(outcome, 2, "was not made by `qrs render`")
    assert snapshot(out) == {"notes.txt": "keep me\n"}


def test_empty_folder_is_filled_and_a_file_is_refused(
    project: Path, qrs: Callable[..., Outcome], tmp_path: Path
) -> None:
    out = tmp_path / "empty"
    out.mkdir()
    assert qrs("render", "k8s", "urandom", "--out", str(out)).code == 0
    assert (out / "30-vllm-deployment.yaml").is_file()
    target = tmp_path / "file"
    target.write_text("x")
    assert_one_line_error(qrs("render", "k8s", "urandom", "--out", str(target)), 2,
                          "is not a folder")  # fmt: skip


def test_a_failed_write_leaves_nothing_behind(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = render_k8s(find_project(project), "urandom", environ={})
    calls = []

    def failing(path: Path, content: str, *, secret: bool) -> None:
        calls.append(path)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        path.write_text(content)

    monkeypatch.setattr("qrs_cli.k8s.output_dir.atomic_write", failing)
    parent = tmp_path / "out"
    parent.mkdir()
    with pytest.raises(RenderError, match="No space left on device"):
        write_render(result, parent / "k8s", force=False)
    assert os.listdir(parent) == []  # neither the folder nor its staging copy


def test_marker_cannot_point_outside_the_folder(
    project: Path, qrs: Callable[..., Outcome], tmp_path: Path
) -> None:
    out = tmp_path / "k8s"
    assert qrs("render", "k8s", "urandom", "--out", str(out)).code == 0
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    marker = json.loads((out / MARKER).read_text())
    marker["files"] += ["../victim.txt"]
    (out / MARKER).write_text(json.dumps(marker))
    copy_profile(project, "urandom", "other")
    assert qrs("render", "k8s", "other", "--out", str(out), "--force").code == 0
    assert victim.read_text() == "precious\n"

"""Kubernetes manifests from a profile: the library behind ``qrs render k8s``.

It imports neither typer nor rich and returns data (a :class:`K8sRender`) that the command
writes and reports. Modules, one job each:

- ``render``: profile → validated :class:`K8sRender` (layout, flags, warnings, notes);
- ``manifests``: the objects themselves, as plain data;
- ``notes``: the README written next to them (images, the Secret, apply);
- ``yaml_text``: a small YAML writer (no PyYAML needed to render);
- ``output_dir``: atomic writes, ``--force``, and refusing a folder that is not ours;
- ``types`` / ``errors``: the value types and :class:`RenderError`.
"""

from __future__ import annotations

from qrs_cli.k8s.errors import RenderError
from qrs_cli.k8s.output_dir import MARKER, write_render
from qrs_cli.k8s.render import render_k8s
from qrs_cli.k8s.types import K8sRender, Manifest

__all__ = ["MARKER", "K8sRender", "Manifest", "RenderError", "render_k8s", "write_render"]

"""``qrs render k8s``: a profile as Kubernetes manifests.

Thin by design: the options become one call to :func:`qrs_cli.k8s.render_k8s`, the result is
written by :func:`qrs_cli.k8s.write_render` and reported (``--json`` gives the same data). The
library (pydantic, the profile code) is imported inside the command so ``qrs --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from qrs_cli import output

render_app = typer.Typer(
    name="render",
    help="Render a profile for another platform (Kubernetes).",
    no_args_is_help=True,
)


@render_app.command("k8s")
def k8s(
    profile: Annotated[
        str, typer.Argument(metavar="PROFILE", help="Profile under deployments/, e.g. urandom.")
    ],
    out: Annotated[
        Path,
        typer.Option("--out", metavar="DIR", help="Folder for the manifests (new or empty).",
                     show_default=False),
    ],
    force: Annotated[
        bool, typer.Option("--force", help="Replace an earlier render in DIR.")
    ] = False,
    namespace: Annotated[
        str,
        typer.Option("--namespace", "-n", metavar="NS",
                     help="Namespace written into the manifests (default: none, so kubectl's "
                          "current namespace).", show_default=False),
    ] = "",
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    root: Annotated[
        str | None,
        typer.Option("--root", envvar="QRS_ROOT", metavar="DIR",
                     help="Project folder holding deployments/ (default: found from the working "
                          "directory)."),
    ] = None,
) -> None:
    """Write PROFILE's Kubernetes manifests into DIR: vLLM (Deployment, or a LeaderWorkerSet
    when a replica needs more GPUs than QRS_GPUS_PER_NODE), its Service, the settings
    ConfigMap, the model cache claim, and the reference entropy server when the profile runs
    one. The API key stays out: the manifests reference a Secret that README.md in DIR says
    how to create.
    """
    from qrs_cli.k8s import render_k8s, write_render
    from qrs_cli.profiles.discovery import find_project

    layout = find_project(root)
    render = render_k8s(layout, profile, namespace=namespace, out=str(out))
    written = write_render(render, out, force=force)
    if as_json:
        output.json_data({**render.to_dict(), "out": str(out),
                          "files": [str(p) for p in written]})
        return
    what = ("one node per replica" if render.layout == "single-node"
            else f"{render.pods_per_replica} nodes per replica (LeaderWorkerSet, Ray)")
    output.data(f"✓ {profile}: {len(render.manifests)} manifests in {out} ({what}; "
                f"{render.replicas} replica(s), {render.gpus_per_pod} GPU(s) per pod)")
    for path in written:
        output.data(f"  {path}")
    for warning in render.warnings:
        output.info(f"warning: {warning}")
    output.info(f"next: create the Secret {render.secret_name} and apply, as {out}/README.md "
                "says")


def register(app: typer.Typer) -> None:
    app.add_typer(render_app, name="render")

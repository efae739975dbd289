"""``qrs demo``: the embedded default — sample words with entropy from the reference server."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Literal

import typer

from qrs_cli import output


def demo(
    tokens: Annotated[
        int, typer.Option("--tokens", "-n", min=1, max=500, metavar="INTEGER",
                          help="How many words to sample.")
    ] = 24,
    source: Annotated[
        str,
        typer.Option(
            "--source", metavar="[grpc|system]",
            help="grpc: the reference entropy server on a unix socket; system: os.urandom.",
        ),
    ] = "grpc",
    first_word: Annotated[str, typer.Option("--first-word", metavar="WORD",
                                            help="Word to start from.")] = "the",
    temperature: Annotated[
        float, typer.Option(min=0.0, max=10.0, metavar="FLOAT",
                            help="Sampling temperature; 0 = greedy.")
    ] = 1.0,
    diagnostics: Annotated[
        str,
        typer.Option("--diagnostics", metavar="FILE",
                     help="Also write one JSONL record per token to this file."),
    ] = "",
    engine: Annotated[
        str,
        typer.Option("--engine", metavar="[auto|torch|numpy]",
                     help="Who runs the selection math: the sampler core (torch) or the same "
                          "math in numpy; auto: torch when it imports."),
    ] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Sample words from a tiny built-in model, each chosen by qr-sampler from fresh entropy.

    Needs neither vLLM nor torch (without torch the same math runs in numpy).
    """
    from qrs_cli.demo import run_demo
    from qrs_cli.errors import CLIError

    if source not in ("grpc", "system"):
        raise CLIError(
            f"--source {source!r} is not one of: grpc, system",
            hint="use --source grpc (default) or --source system",
        )
    if engine not in ("auto", "torch", "numpy"):
        raise CLIError(f"--engine {engine!r} is not one of: auto, torch, numpy",
                       "use --engine auto (default), torch or numpy")
    chosen: Literal["grpc", "system"] = "grpc" if source == "grpc" else "system"
    engine_choice: Literal["auto", "torch", "numpy"] = (
        "torch" if engine == "torch" else "numpy" if engine == "numpy" else "auto")
    if chosen == "grpc":
        output.info("demo: starting the reference entropy server on a unix socket")
    report = run_demo(
        num_tokens=tokens,
        source=chosen,
        first_word=first_word,
        temperature=temperature,
        diagnostics_path=diagnostics,
        engine=engine_choice,
    )
    if as_json:
        output.json_data({**asdict(report), "records": [r.to_dict() for r in report.records]})
        return
    output.data(report.text)
    output.data("")
    rows = [
        [
            str(i + 1),
            word,
            str(r.rank),
            f"{r.probability:.3f}",
            f"{r.u:.4f}",
            f"{r.z:+.3f}",
            r.source,
            r.device_id or "-",
            "yes" if r.fallback else "no",
        ]
        for i, (word, r) in enumerate(zip(report.words, report.records, strict=True))
    ]
    output.data(
        output.table(["#", "WORD", "RANK", "P", "U", "Z", "SOURCE", "DEVICE", "FALLBACK"], rows)
    )
    where = f" at {report.server_address}" if report.server_address else ""
    output.info(
        f"demo: {len(report.records)} words, entropy from {report.source}{where}, "
        f"{report.server_calls} server calls (one per token); selection math: {report.engine}"
    )


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)

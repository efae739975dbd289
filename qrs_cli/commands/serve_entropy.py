"""``qrs serve-entropy``: run the reference entropy server (os.urandom) in the foreground.

The options mirror ``python -m qr_sampler.server`` and share its help texts. The API key is read
from the environment variable named by ``--api-key-env``, never from a flag (flags end up in
shell history and ``ps`` output). grpc is imported only when the command runs.
"""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer

from qr_sampler.server.config import (
    DEFAULT_ADDRESS,
    ServerConfig,
    api_key_from_env,
    option_help,
)
from qrs_cli import output
from qrs_cli.errors import CLIError


def serve_entropy(
    address: Annotated[str, typer.Option(metavar="ADDRESS",
                                         help=option_help("address"))] = DEFAULT_ADDRESS,
    api_key_env: Annotated[str, typer.Option(
        metavar="VAR", help="Name of the environment variable holding the API key clients must "
                            "send; omit for no key.")] = "",
    api_key_header: Annotated[str, typer.Option(
        metavar="NAME", help=option_help("api_key_header"))] = "api-key",
    max_bytes_per_request: Annotated[int, typer.Option(
        min=0, metavar="INTEGER", help=option_help("max_bytes_per_request"))] = 0,
    rate_limit_per_min: Annotated[int, typer.Option(
        min=0, metavar="INTEGER", help=option_help("rate_limit_per_min"))] = 0,
    tls_cert: Annotated[str, typer.Option(metavar="FILE", help=option_help("tls_cert"))] = "",
    tls_key: Annotated[str, typer.Option(metavar="FILE", help=option_help("tls_key"))] = "",
    tls_client_ca: Annotated[str, typer.Option(
        metavar="FILE", help=option_help("tls_client_ca"))] = "",
    device_id: Annotated[str, typer.Option(
        metavar="TEXT", help=option_help("device_id"))] = "urandom",
    grace_period: Annotated[float, typer.Option(
        min=0, metavar="SECONDS", help=option_help("grace_period_s"))] = 5.0,
    workers: Annotated[int, typer.Option(
        min=1, metavar="INTEGER", help=option_help("max_workers"))] = 16,
    log_level: Annotated[str, typer.Option(
        metavar="[debug|info|warning|error]",
        help="Logging level of the server's log on stderr.")
    ] = "info",
) -> None:
    """Serve random bytes (os.urandom) over the entropy protocol until SIGTERM or Ctrl-C."""
    level = log_level.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise CLIError(f"--log-level {log_level!r} is not a level",
                       "use debug, info, warning or error")
    # EntropyServerError (a bad option, a taken port) escapes as it is: it carries its hint,
    # and qrs_cli.errors' table gives it its exit code.
    config = ServerConfig(
        address=address,
        **({"api_key": api_key_from_env(api_key_env)} if api_key_env else {}),
        api_key_header=api_key_header,
        max_bytes_per_request=max_bytes_per_request,
        rate_limit_per_min=rate_limit_per_min,
        tls_cert=tls_cert, tls_key=tls_key, tls_client_ca=tls_client_ca,
        device_id=device_id, grace_period_s=grace_period, max_workers=workers,
    )
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from qr_sampler.server.app import serve  # grpc: only when the command runs

    summary = serve(config)
    output.info(f"served {summary['requests_served']} requests "
                f"({summary['bytes_served']} bytes); rejected: {summary['rejected'] or 'none'}")


def register(app: typer.Typer) -> None:
    app.command("serve-entropy")(serve_entropy)

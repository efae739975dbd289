"""``python -m qr_sampler.server``: run the reference entropy server from the command line.

The same options as ``qrs serve-entropy``, for images that ship the library without the CLI.
The API key is only ever read from an environment variable named by ``--api-key-env``.
"""

from __future__ import annotations

import argparse
import logging
import sys

from qr_sampler.server.config import (
    DEFAULT_ADDRESS,
    EntropyServerError,
    ServerConfig,
    api_key_from_env,
    option_help,
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m qr_sampler.server",
                                description="Serve random bytes (os.urandom) over the "
                                            "qr-sampler gRPC entropy protocol.")
    p.add_argument("--address", default=DEFAULT_ADDRESS, help=option_help("address"))
    p.add_argument("--api-key-env", metavar="VAR", default="",
                   help="Name of the environment variable holding the API key clients must "
                        "send; unset = no key required.")
    p.add_argument("--api-key-header", default="api-key", help=option_help("api_key_header"))
    p.add_argument("--max-bytes-per-request", type=int, default=0,
                   help=option_help("max_bytes_per_request"))
    p.add_argument("--rate-limit-per-min", type=int, default=0,
                   help=option_help("rate_limit_per_min"))
    p.add_argument("--tls-cert", default="", help=option_help("tls_cert"))
    p.add_argument("--tls-key", default="", help=option_help("tls_key"))
    p.add_argument("--tls-client-ca", default="", help=option_help("tls_client_ca"))
    p.add_argument("--device-id", default="urandom", help=option_help("device_id"))
    p.add_argument("--grace-period", type=float, default=5.0, dest="grace_period_s",
                   help=option_help("grace_period_s"))
    p.add_argument("--workers", type=int, default=16, dest="max_workers",
                   help=option_help("max_workers"))
    p.add_argument("--log-level", default="INFO",
                   choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="Logging level (stderr).")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from qr_sampler.server.app import serve  # grpc is imported only when actually serving

    try:
        config = ServerConfig(
            address=args.address,
            **({"api_key": api_key_from_env(args.api_key_env)} if args.api_key_env else {}),
            api_key_header=args.api_key_header,
            max_bytes_per_request=args.max_bytes_per_request,
            rate_limit_per_min=args.rate_limit_per_min,
            tls_cert=args.tls_cert, tls_key=args.tls_key, tls_client_ca=args.tls_client_ca,
            device_id=args.device_id, grace_period_s=args.grace_period_s,
            max_workers=args.max_workers,
        )
        serve(config)
    except EntropyServerError as exc:
        sys.stderr.write(f"Error: {exc}\n" + (f"Hint: {exc.hint}\n" if exc.hint else ""))
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Serve an exported MANTiS bundle over the KServe v2 HTTP/REST protocol.

    uv run python runtime_server/serve.py --artifacts DIR [--host 127.0.0.1] [--port 8000]
        [--backend onnxruntime|tensorrt|torch] [--max-batch-size N] [--max-queue-delay-ms M]
        [--max-request-bytes B] [--token-file F] [--grpc-port P]
        [--header-timeout S] [--body-timeout S] [--idle-timeout S]
        [--client-error-burst N] [--client-error-refill R]

Prints ``serving MODEL (BACKEND on DEVICE) at http://HOST:PORT`` once ready (``--port 0`` picks a free
port), then ``serving MODEL over gRPC at grpc://HOST:P`` with ``--grpc-port`` (KServe v2 gRPC on the same
model, batcher, token, limits and metrics). The compact stream (codec/STREAM.md) is a route of the HTTP
port. SIGINT/SIGTERM stop it gracefully.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import sys
from pathlib import Path

from codec.bundle import BundleError
from codec.wire import TOKEN_ENV, read_token
from runtime_server.backends import BACKENDS, BackendUnavailableError
from runtime_server.client_budget import ClientErrorLimits
from runtime_server.connection import ConnectionLimits
from runtime_server.dataplane import ServerConfig, open_data_plane
from runtime_server.grpc_frontend import GrpcFrontend
from runtime_server.http_frontend import create_app, serve


class _HelpWithDefaults(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` shows each option's default (none for the options that are off unless given)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        return action.help if action.default is None else super()._get_help_string(action)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="KServe v2 server for the server half of a MANTiS bundle", formatter_class=_HelpWithDefaults)
    p.add_argument("--artifacts", type=Path, required=True, help="bundle directory written by export/split.py")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (loopback: reachable from this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (0: any free port)")
    p.add_argument("--backend", choices=BACKENDS, default="onnxruntime", help="inference backend of the server half")
    p.add_argument("--max-batch-size", type=int, default=32, help="most images per backend batch")
    p.add_argument("--max-queue-delay-ms", type=float, default=2.0, help="longest wait for a batch to fill")
    p.add_argument("--max-request-bytes", type=int, default=4 << 20, help="request body limit (413 above)")
    p.add_argument("--max-request-images", type=int, default=256, help="bitstreams per request limit (413 above)")
    p.add_argument("--decode-threads", type=int, default=2, help="threads for entropy decoding")
    p.add_argument("--compute-threads", type=int, default=0, help="CPU threads per batch (0: the backend's default)")
    p.add_argument("--token-file", type=Path, help=f"require 'Authorization: Bearer <token>' (else ${TOKEN_ENV} if set)")
    p.add_argument("--grpc-port", type=int, help="also serve KServe v2 gRPC on this port (0: any free port; off unless given)")
    p.add_argument("--shutdown-timeout", type=float, default=30.0, help="seconds to finish in-flight requests on exit")
    defaults = ConnectionLimits()
    p.add_argument(
        "--header-timeout",
        type=float,
        default=defaults.header_timeout,
        help="seconds from a request's first byte to the end of its headers (408 and close after)",
    )
    p.add_argument(
        "--body-timeout",
        type=float,
        default=defaults.body_timeout,
        help="seconds from the end of a request's headers to the end of its body (408 and close after)",
    )
    p.add_argument(
        "--idle-timeout",
        type=float,
        default=defaults.idle_timeout,
        help="seconds a connection may wait without starting a request before it is closed",
    )
    budget = ClientErrorLimits()
    p.add_argument(
        "--client-error-burst",
        type=float,
        default=budget.burst,
        help="refused requests (client mistakes) one client address may collect before its requests are held "
        "and answered 429 (0: no limit, e.g. behind a proxy, where every client has the proxy's address)",
    )
    p.add_argument(
        "--client-error-refill",
        type=float,
        default=budget.refill_per_s,
        help="refused requests per second one client address may collect for ever",
    )
    return p.parse_args(argv)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = ServerConfig(
            artifacts=args.artifacts,
            backend=args.backend,
            max_batch_size=args.max_batch_size,
            max_queue_delay_ms=args.max_queue_delay_ms,
            max_request_bytes=args.max_request_bytes,
            max_request_images=args.max_request_images,
            token=read_token(args.token_file),
            decode_threads=args.decode_threads,
            compute_threads=args.compute_threads,
            limits=ConnectionLimits(args.header_timeout, args.body_timeout, args.idle_timeout),
            client_errors=ClientErrorLimits(args.client_error_burst, args.client_error_refill),
        )
        plane = open_data_plane(config)
    except (BundleError, BackendUnavailableError, ValueError) as exc:
        print(f"serve.py: {exc}", file=sys.stderr)
        return 2
    if not _is_loopback(args.host) and config.token is None:
        print(f"serve.py: warning: listening on {args.host} without a bearer token", file=sys.stderr)
    model = plane.model
    grpc_frontend = GrpcFrontend(plane, args.host, args.grpc_port, args.shutdown_timeout) if args.grpc_port is not None else None
    app = create_app(plane)

    def announce(url: str) -> None:
        print(f"serving {model.name} ({model.backend.name} on {model.backend.device}) at {url}", flush=True)
        if grpc_frontend is not None:
            print(f"serving {model.name} over gRPC at {grpc_frontend.url}", flush=True)

    try:
        asyncio.run(serve(app, args.host, args.port, args.shutdown_timeout, announce))
    except BackendUnavailableError as exc:
        print(f"serve.py: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the HTTP port's error names the address, the gRPC port's says it is gRPC's
        print(f"serve.py: cannot listen: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

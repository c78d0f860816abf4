"""``finjust serve RUN_OR_MODEL_DIR``: an OpenAI-compatible HTTP API over a trained or exported model."""

from __future__ import annotations

import argparse
import errno
import os
import socket
import sys

from finjust.cli.arguments import port_number, positive_int
from finjust.errors import ServeError

API_KEY_ENV = "FINJUST_API_KEY"


def add_parser(commands: argparse._SubParsersAction, name: str, summary: str) -> None:
    parser = commands.add_parser(
        name,
        help=summary,
        description="Answer /v1/chat/completions, /v1/completions and /v1/models with the run's tuned model "
        "(or an exported model folder). Greedy non-streaming requests that wait together are batched.",
        epilog="examples:\n  finjust serve runs/my-first\n"
        "  FINJUST_API_KEY=secret finjust serve exported/my-first --port 8080 --max-batch 16\n"
        "  curl http://127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' \\\n"
        "    -d '{\"model\": \"my-first\", \"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}]}'",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("source", metavar="RUN_OR_MODEL_DIR",
                        help="a run folder written by finjust train, or a model folder (config.json)")  # fmt: skip
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: this machine only)")  # fmt: skip
    parser.add_argument("--port", type=port_number, default=8000, help="port (default 8000)")
    parser.add_argument("--api-key", default=os.environ.get(API_KEY_ENV),
                        help=f"require 'Authorization: Bearer KEY' (default: ${API_KEY_ENV}; unset: no key)")
    parser.add_argument("--model-name", help="the model name clients send (default: the folder's name)")
    parser.add_argument("--max-batch", type=positive_int, default=8,
                        help="most greedy non-streaming requests per generate call (default 8)")  # fmt: skip
    parser.add_argument("--max-queue", type=positive_int, default=64,
                        help="most requests waiting; more get 503 (default 64)")  # fmt: skip
    parser.add_argument("--max-tokens-limit", type=positive_int, default=512,
                        help="most tokens one request may generate (default 512)")  # fmt: skip
    parser.add_argument("--max-prompt-tokens", type=positive_int,
                        help="longest prompt in tokens (default: the model's context length)")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from uvicorn.config import LOGGING_CONFIG

    from finjust.serve import ServeOptions, create_app  # the web stack loads only for this command
    from finjust.serve.options import is_loopback
    from finjust.serve.server import run_server

    options = ServeOptions(api_key=args.api_key or None, model_name=args.model_name, max_batch=args.max_batch,
                           max_queue=args.max_queue, max_tokens_limit=args.max_tokens_limit,
                           max_prompt_tokens=args.max_prompt_tokens,
                           local_only=not args.api_key and is_loopback(args.host))  # fmt: skip
    port = _free_port(args.host, args.port)  # before the model loads, not after
    if not options.api_key and not is_loopback(args.host):
        print(f"warning: serving on {args.host} without an API key: anyone who can reach it can use it; "
              f"set --api-key or ${API_KEY_ENV}", file=sys.stderr)  # fmt: skip
    print(f"loading {args.source} ...", file=sys.stderr)
    app = create_app(args.source, options)
    served = app.state.served
    print(f"serving {served.name!r} at {_url(args.host, port)} (context {served.context} tokens, "
          f"batches of up to {options.max_batch}); Ctrl-C stops", file=sys.stderr)  # fmt: skip
    run_server(app, args.host, port, log_config=LOGGING_CONFIG)  # uvicorn's request log, as it prints it
    return 0


def _free_port(host: str, port: int) -> int:
    """The port to serve on: ``port``, refused where another process holds it now (before minutes
    of model loading), or for ``--port 0`` one the system picks free now (the address to print).

    Raises:
        ServeError: the address cannot be bound: the port is taken, or the host is none of this machine's.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as error:
            fix = ("choose another --port or stop what holds it" if error.errno == errno.EADDRINUSE
                   else "give --host as an address of this machine: 127.0.0.1 (this machine only) or 0.0.0.0 (all)")
            raise ServeError(f"cannot listen on {host}:{port}: {error.strerror or error}; {fix}") from None
        return probe.getsockname()[1]


def _url(host: str, port: int) -> str:
    """The API's base URL; an IPv6 address in brackets, as URLs write it."""
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/v1"

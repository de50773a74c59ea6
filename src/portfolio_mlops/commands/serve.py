"""`portfolio-mlops serve`: the model server (portfolio_mlops/serving.py), following an alias."""

from __future__ import annotations

import argparse
from typing import Any

from portfolio_mlops.names import CHAMPION_MODEL_URI


def add_parser(subcommands: Any) -> None:
    serve = subcommands.add_parser(
        "serve", help="serve models:/<name>@<alias> over HTTP, following the alias without restarts",
        description="Serve the registry's models:/<name>@<alias> with MLflow's scoring protocol (/invocations). HTTP\n"
                    "starts at once; a poller resolves the alias every --poll-seconds and loads the version it\n"
                    "points to, swapping it in without a restart (a version that fails to load leaves the\n"
                    "previous one serving). /health: alive; /ping: 200 once a model is loaded, else 503 with\n"
                    "the reason; /version: the served version. Flags override the environment variables named.",
        epilog="examples:\n"
               f"  portfolio-mlops serve                          # {CHAMPION_MODEL_URI} on 127.0.0.1:8080\n"
               "  MLFLOW_TRACKING_URI=http://127.0.0.1:15000 portfolio-mlops serve --port 8081 --poll-seconds 5\n"
               "  curl -s localhost:8081/version",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    serve.add_argument("--model-uri", metavar="URI",
                       help=f"models:/<registered model>@<alias> (env MODEL_URI; default {CHAMPION_MODEL_URI})")
    serve.add_argument("--tracking-uri", metavar="URI", help="MLflow tracking server (env MLFLOW_TRACKING_URI)")
    serve.add_argument("--host", metavar="ADDRESS", help="address to bind (env HOST; default 127.0.0.1)")
    serve.add_argument("--port", type=int, metavar="PORT", help="port to bind (env PORT; default 8080)")
    serve.add_argument("--poll-seconds", type=float, metavar="S",
                       help="seconds between two resolutions of the alias (env POLL_SECONDS; default 10)")
    serve.add_argument("--download-dir", metavar="DIR",
                       help="writable folder for downloaded versions (default: $TMPDIR/portfolio-mlops-serving)")
    serve.set_defaults(func=serve_command)


def serve_command(args: argparse.Namespace) -> int:
    from portfolio_mlops.serving import run_command

    return run_command(args)
